"""The README's first quick-start command, at a tiny size."""

import os
import subprocess
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]


def test_demo_trains_computes_a_surface_and_says_where(tmp_path):
    env = {**os.environ, "DEMO_OUT": str(tmp_path), "DEMO_TRAIN_ARGS": "epochs=2 save_every=0"}
    r = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "demo.sh"),
            "grid.x=[-1,1,3]",
            "grid.y=[-1,1,3]",
            "dataset.max_samples=80",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    surface = tmp_path / "surface" / "surface.h5"
    assert f"surface file: {surface}" in r.stdout
    assert (tmp_path / "train" / "model.pt").exists()
    with h5py.File(surface, "r") as f:
        assert f["done"][()].all()
        assert f.attrs["checkpoint_sha256"]
        centre = f["train_acc"][1, 1]
        corner = f["train_acc"][0, 0]
    assert centre > 50 and centre > corner  # the trained net sits in a basin
    assert sorted(p.name for p in (tmp_path / "surface").glob("*.png")) == [
        "surface_acc_2dcontour.png",
        "surface_loss_2dcontour.png",
    ]
