"""scripts/bench_gpu.sh cannot rot: its dry run (tiny sizes, on the CPU here) goes through every
measurement the GPU run makes, writes every figure, and collects the CUDA tests (so a broken
import in tests/test_cuda.py fails here, not on the GPU machine)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_dry_run_measures_everything_on_any_machine(tmp_path):
    out = tmp_path / "bench_gpu.json"
    done = subprocess.run(
        [
            str(ROOT / "scripts" / "bench_gpu.sh"),
            "--dry-run",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,  # a guard against a hang; a few seconds on an idle machine
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for section in ("1. matmul peak", "2. surface engine", "3. MPO step", "4. values vs the CPU"):
        assert section in done.stdout
    figures = json.loads(out.read_text())
    assert figures["dry_run"] and figures["matmul_tflops"]["fp32"] > 0
    rows = figures["surface"]
    assert [(r["strategy"], r["precision"]) for r in rows][:4] == [
        ("vmap", "fp32"),
        ("vmap", "tf32"),
        ("vmap", "bf16"),
        ("sequential", "fp32"),
    ]
    # on a CPU tf32 is fp32 (its error 0) and bf16 autocast runs (its error not)
    for r in rows:
        err = r["max_rel_err_vs_fp32"]
        assert err == 0 if r["precision"] != "bf16" else 0 < err < 0.1, r
    assert all(r["points_per_s"] > 0 and r["paper_surface_hours"] > 0 for r in figures["surface"])
    assert "2b. the transformer workload" in done.stdout
    lm = figures["surface_lm"]
    assert [(r["strategy"], r["precision"]) for r in lm][:2] == [("vmap", "fp32"), ("vmap", "tf32")]
    for r in lm:  # the lm loss through every strategy and precision
        err = r["max_rel_err_vs_fp32"]
        assert r["points_per_s"] > 0 and (err == 0 if r["precision"] != "bf16" else 0 < err < 0.1)
    assert [r["model"] for r in figures["mpo"]] == ["mpo_cnn6", "mpo_cnn_bn"]
    assert all(r["speedup"] > 0 for r in figures["mpo"])
    assert figures["max_rel_diff_vs_cpu"] == 0.0  # the CPU against itself: the same bits
    # the CUDA tests collected, not run
    assert "tests/test_cuda.py::test_every_strategy_on_the_device_matches" in done.stdout
    assert "tests collected" in done.stdout and "passed" not in done.stdout
    assert "figures exit 0, CUDA tests exit 0" in done.stdout
