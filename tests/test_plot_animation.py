"""--kind animation: one GIF frame per checkpoint, frames that differ, refusals in one line."""

import importlib
import shutil

import numpy as np
import pytest
from PIL import Image, ImageChops

# the surface files of test_plot.py: its grid, its layout, its 4-checkpoint trajectory
from test_plot import X, Y, _ours, _with_trajectory

from landscape_hpc import plot_animation

plot = importlib.import_module("landscape_hpc.plot")  # the command (lh.plot: the function)


def test_the_gif_has_one_frame_per_checkpoint_and_the_path_moves(tmp_path):
    path = _with_trajectory(_ours(tmp_path / "p.h5", lambda x, y: 1 + x**2 + y**2))
    assert plot.main([str(path), "--kind", "animation", "--metric", "train_loss"]) == 0
    gif = tmp_path / "p_train_loss_path.gif"
    with Image.open(gif) as im:
        assert im.n_frames == 4  # _with_trajectory stores 4 checkpoints
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(im.convert("RGB").copy())
    for a, b in zip(frames, frames[1:]):
        assert ImageChops.difference(a, b).getbbox() is not None  # every frame differs


def test_the_title_loss_is_the_surface_under_the_point():
    z = 1 + np.add.outer(Y**2, X**2)  # (ny, nx)
    # bilinear equals the grid value at a node
    assert np.allclose(plot_animation.bilinear(X, Y, z, X[2], Y[1]), z[1, 2])
    lin = np.add.outer(3 * Y, 2 * X)  # bilinear reproduces an affine function exactly
    px, py = np.array([0.13, -0.71, 0.0]), np.array([0.2, -0.44, 0.01])
    assert np.allclose(plot_animation.bilinear(X, Y, lin, px, py), 2 * px + 3 * py)


def test_a_surface_without_a_trajectory_is_refused_in_one_line(tmp_path, capsys):
    path = _ours(tmp_path / "p.h5", lambda x, y: 1 + x**2 + y**2)
    assert plot.main([str(path), "--kind", "animation"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trajectory" in err and "directions.kind=pca" in err
    assert not list(tmp_path.glob("*.gif"))


def test_mp4_without_ffmpeg_names_it(tmp_path, capsys, monkeypatch):
    path = _with_trajectory(_ours(tmp_path / "p.h5", lambda x, y: 1 + x**2 + y**2))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert plot.main([str(path), "--kind", "animation", "--format", "mp4"]) == 2
    assert "ffmpeg" in capsys.readouterr().err


def test_gif_format_is_for_animations_only(tmp_path, capsys):
    path = _ours(tmp_path / "p.h5", lambda x, y: 1 + x**2 + y**2)
    assert plot.main([str(path), "--kind", "contour", "--format", "gif"]) == 2
    assert "--kind animation" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["contour", "animation"])
def test_a_one_d_file_is_refused_for_an_animation(tmp_path, capsys, kind):
    path = _ours(tmp_path / "p.h5", lambda x, y: 1 + x**2, one_d=True)
    assert plot.main([str(path), "--kind", kind]) == 2
    assert "2D surface" in capsys.readouterr().err
