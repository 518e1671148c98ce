"""scripts/bench_gpu.sh cannot rot: its dry run (tiny sizes, on the CPU here) goes through every
measurement the GPU run makes and writes every figure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_benchmark_dry_run_measures_everything_on_any_machine(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            str(ROOT / "scripts" / "bench_gpu.sh"),
            "--dry-run",
            "--device",
            "cpu",
            "--json",
            str(out),
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
    assert [r["strategy"] for r in figures["surface"]][:2] == ["vmap", "sequential"]
    assert all(r["points_per_s"] > 0 and r["paper_surface_hours"] > 0 for r in figures["surface"])
    assert [r["model"] for r in figures["mpo"]] == ["mpo_cnn6", "mpo_cnn_bn"]
    assert all(r["speedup"] > 0 for r in figures["mpo"])
    assert figures["max_rel_diff_vs_cpu"] == 0.0  # the CPU against itself: the same bits
