"""scripts/connectivity_study.py's core on a tiny design: one pair per architecture, 2 epochs,
narrow nets, a few curve and tunnel steps; the per-pair JSON, its barriers, the resume."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from landscape_hpc.config.common import ModelConfig

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "connectivity_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("connectivity_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def tiny(study):
    return study.Design(
        archs={"mlp": ModelConfig(name="mlp", kwargs={"hidden": [8, 8]})},
        n_pairs=1,
        epochs=2,
        grid_t=5,
        curve_steps=3,
        tunnel_steps=2,
        tunnel_segments=2,
    )


def test_one_pair_written_with_finite_barriers_and_skipped_on_rerun(study, tmp_path):
    design = tiny(study)
    rows = study.run(tmp_path, design)
    path = tmp_path / "pairs" / "mlp_0.json"
    assert path.exists() and len(rows) == 1
    row = json.loads(path.read_text())
    assert row["arch"] == "mlp" and row["pair"] == 0 and row["seeds"] == [0, 1]
    for p in study.PATHS:
        for split in study.SPLITS:
            value = row[f"{p}_{split}"]
            assert math.isfinite(value) and value >= 0, (p, split, value)
    for split in study.SPLITS:
        assert len(row[f"loss_line_{split}"]) == design.grid_t
        # the curve's own straight line is the line lh.interpolate measured
        assert row[f"curve_line_{split}"] == pytest.approx(row[f"line_{split}"], abs=1e-5)
    # the two nets differ (different seeds), so the line has a shape between the ends
    assert row["loss_line_train"][0] != row["loss_line_train"][-1]

    # a rerun reads the pair back instead of measuring it again
    path.write_text(json.dumps({**row, "line_train": 123.0}))
    again = study.run(tmp_path, design)
    assert again[0]["line_train"] == 123.0
    text = study.report(tmp_path, design)
    assert "pairs done: 1 of 1" in text and "| line − aligned | train |" in text
    study.figure(tmp_path, tmp_path / "barriers.png", design)
    assert (tmp_path / "barriers.png").read_bytes()[:4] == b"\x89PNG"
