"""scripts/bench_surface.py's comparison with the peer library, loss-landscapes 3.0.6 (the bench
extra), cannot rot: on a tiny workload it runs both libraries on the same model and data and
reports what the docs record; likewise the API against the command and streamed against resident
data. No timing is asserted (speed goes in docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_surface.py"
NO_PEER = (
    "loss-landscapes is not installed (the bench extra, which scripts/setup.sh installs: "
    "pip install -e '.[bench]')"
)


def _bench():
    """The script as a module (registered first: its dataclasses look their module up)."""
    if "bench_surface" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_surface", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_surface"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_surface"]


def test_without_the_peer_the_comparison_is_skipped_with_the_install_line(monkeypatch):
    bench = _bench()
    monkeypatch.setitem(sys.modules, "loss_landscapes", None)  # import raises ImportError
    reason = bench.peer_missing()
    assert reason is not None and "pip install 'loss-landscapes==3.0.6'" in reason
    peer = bench.bench_peer(bench.PEER_QUICK, 1, bench.QuietGate(0.0))
    assert peer["skipped"] == reason and peer["workloads"] == []
    assert bench.peer_goals(peer) == []


def test_a_bn_net_runs_under_the_peer_with_its_zero_parameters_filled():
    bench = _bench()
    workload = bench.Workload("small_bn_cnn", (1, 8, 8), 16, (3, 3), (), "peer", 0.0)
    zero = [n for n, p in bench.make_model(workload).named_parameters() if not p.any()]
    assert zero  # BN's shifts start at 0: loss-landscapes' filter normalisation divides by 0
    model = bench.peer_model(workload)
    assert all(p.any() for p in model.parameters())
    same = dict(bench.make_model(workload).named_parameters())
    assert all(p.equal(same[n]) for n, p in model.named_parameters() if n not in zero)


def test_the_peer_comparison_runs_both_libraries_on_the_same_model_and_data():
    pytest.importorskip("loss_landscapes", reason=NO_PEER)
    bench = _bench()
    workload = bench.Workload("small_bn_cnn", (1, 8, 8), 64, (3, 3), (), "peer", 0.0)
    r = bench.peer_workload(workload, 1, bench.QuietGate(0.0))
    assert r["workload"] == "small_bn_cnn/digits" and r["samples"] == 64
    assert r["points"] == 9 and r["theirs_shape"] == [3, 3]  # steps x steps on both sides
    # the same model on the same samples: one loss at the origin, whatever the directions
    assert r["origin_rel_difference"] <= 1e-5
    assert math.isfinite(r["ours_points_per_s"]) and r["ours_points_per_s"] > 0
    assert math.isfinite(r["theirs_points_per_s"]) and r["theirs_points_per_s"] > 0
    ratio = r["ours_points_per_s"] / r["theirs_points_per_s"]
    assert r["ours_over_theirs"] == pytest.approx(ratio)
    assert r["pass"] == (ratio >= bench.PEER_GOAL)
    # both planes move the weights (their losses are not comparable point for point)
    assert all(high > low for low, high in r["loss_range"].values())


def test_only_peer_prints_the_goal_line_and_saves_it_to_json(tmp_path):
    pytest.importorskip("loss_landscapes", reason=NO_PEER)
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "peer", "--quick", "--workloads", "mlp"]
        + ["--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,  # a guard against a hang; seconds on an idle machine
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "peer: ours/theirs = " in done.stdout and "(goal >= 2.5): " in done.stdout
    figures = json.loads(out.read_text())
    assert figures["workloads"] == [] and figures["matmul_peak_gflops"] > 0
    assert [r["workload"] for r in figures["peer"]["workloads"]] == ["mlp/digits"]
    (row,) = figures["peer"]["workloads"]
    # the ratio's bound: the run's matmul peak over the peer's FLOP rate on the same FLOPs
    assert row["ratio_bound"] == pytest.approx(figures["matmul_peak_gflops"] / row["theirs_gflops"])
    assert row["theirs_gflops"] == pytest.approx(
        row["theirs_points_per_s"] * row["samples"] * row["flops_per_sample"] / 1e9
    )
    assert [g["goal"] for g in figures["goals"]] == [
        "mlp/digits: ours >= 2.5x loss-landscapes' random_plane"
    ]


def test_only_api_and_stream_compare_the_same_work_and_save_it_to_json(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "api", "stream", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,  # a guard against a hang; seconds on an idle machine
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "api: api/command compute time = " in done.stdout
    assert "stream: streamed/resident = " in done.stdout
    figures = json.loads(out.read_text())
    assert figures["workloads"] == [] and figures["peer"] is None
    api = figures["api"]
    assert api["same_values"] is True  # the same job on both sides, or the timing means nothing
    rows = api["methods"]
    assert set(rows) == {"command", "api", "api, in memory"}
    assert api["api_over_command"] == pytest.approx(
        rows["api"]["compute_s"] / rows["command"]["compute_s"]
    )
    for row in rows.values():  # the compute time is part of the whole call
        assert 0 < row["compute_s"] <= row["call_s"]
    (stream,) = figures["stream"]
    assert stream["workload"] == "mlp/digits" and stream["points"] == 9
    assert stream["max_rel_loss_difference"] <= 1e-6  # the same samples, streamed or resident
    ratio = stream["points_per_s"]["streamed"] / stream["points_per_s"]["resident"]
    assert stream["streamed_over_resident"] == pytest.approx(ratio)
    assert [g["goal"] for g in figures["goals"]] == [
        "mlp/digits: the API's compute time within 5% of the command's",
        "mlp/digits: streamed >= 0.8x resident points/s",
    ]


def test_the_vmap_ablation_runs_and_every_variant_gives_the_same_losses():
    """scripts/bench_vmap_cpu.py --quick: each rewrite switched on in turn, the same losses to
    float32 rounding, a table row per variant (and the peer's where it is installed)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_vmap_cpu.py"), "--quick"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    diffs = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "max rel." in line]
    assert len(diffs) == 4 and max(diffs) < 1e-5
    rows = [line for line in out.splitlines() if line.startswith("| ") and "points/s" not in line]
    names = [row.split(" | ")[0].lstrip("| ") for row in rows]
    peer = importlib.util.find_spec("loss_landscapes") is not None
    want = ["before", "pass cap", "+ shared first", "+ batch x2"] + (["theirs"] if peer else [])
    assert names == want
