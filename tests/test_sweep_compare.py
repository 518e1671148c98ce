"""BN − no BN in a sweep (sweep/compare.py): per fill and pooled, equal to Welch on the fits'
scores; TOST where a margin is given; the report prints it and writes compare.csv."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from landscape_hpc.stats import equivalence_test, welch_difference
from landscape_hpc.sweep.compare import compare, format_comparison, write_comparison

ROOT = Path(__file__).resolve().parents[1]


def _row(bn, fill, gap, status="done"):
    return {"bn": bn, "fill_prob": fill, "status": status, "test_trained_acc_gap": gap}


ROWS = [
    *(_row(True, 0.5, g) for g in (40.0, 44.0, 47.0)),
    *(_row(False, 0.5, g) for g in (30.0, 36.0, 41.0, 33.0)),
    *(_row(True, 0.7, g) for g in (20.0, 25.0)),
    *(_row(False, 0.7, g) for g in (22.0, 21.0, 27.0)),
    _row(True, 0.9, 10.0),  # one net only at 0.9: no row, not pooled
    _row(False, 0.5, 99.0, status="failed"),  # not done: left out
    _row(False, 0.7, math.nan),  # no score: left out
]


def test_each_fill_and_the_pool_are_welch_over_fits_with_tost():
    rows = compare(ROWS, "gap", margin=5.0)
    assert [r["fill"] for r in rows] == ["0.5", "0.7", "pooled"]
    groups = {
        "0.5": ([40.0, 44.0, 47.0], [30.0, 36.0, 41.0, 33.0]),
        "0.7": ([20.0, 25.0], [22.0, 21.0, 27.0]),
    }
    groups["pooled"] = (groups["0.5"][0] + groups["0.7"][0], groups["0.5"][1] + groups["0.7"][1])
    for r in rows:
        bn, no_bn = groups[r["fill"]]
        d = welch_difference(bn, no_bn)
        assert (r["n_bn"], r["n_no_bn"]) == (len(bn), len(no_bn))
        assert (r["diff"], r["lo"], r["hi"], r["p"], r["mdd"]) == (d.diff, d.lo, d.hi, d.p, d.mdd)
        assert r["tost_p"] == equivalence_test(bn, no_bn, 5.0).p
    assert math.isnan(compare(ROWS, "gap")[0]["tost_p"])  # no margin, no TOST
    assert compare(ROWS[:3], "gap") == []  # no fill with both nets
    assert "no fill has done fits of both nets" in format_comparison([])


def test_compare_csv_reads_back(tmp_path):
    rows = compare(ROWS, "gap", margin=5.0)
    with open(write_comparison(rows, tmp_path / "compare.csv"), newline="") as f:
        back = list(csv.DictReader(f))
    assert [r["fill"] for r in back] == ["0.5", "0.7", "pooled"]
    assert float(back[2]["diff"]) == pytest.approx(rows[2]["diff"], rel=1e-5)


def test_the_report_prints_the_comparison_and_refuses_a_bad_margin(tmp_path):
    sweep = ROOT / "docs" / "bn_sweep" / "sweep.h5"  # the committed sweep (3 seeds per net)
    cmd = [sys.executable, "-m", "landscape_hpc.sweep", "report", str(sweep), "--out"]
    out = subprocess.run([*cmd, str(tmp_path), "--margin", "5"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "BN − no BN of gap" in out.stdout and "fill pooled" in out.stdout
    assert "TOST |d| < 5" in out.stdout and (tmp_path / "compare.csv").exists()
    bad = subprocess.run(
        [*cmd, str(tmp_path / "b"), "--margin", "-1"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --margin")
    assert "Traceback" not in bad.stderr and not (tmp_path / "b").exists()
