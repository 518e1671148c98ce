"""Plots and ParaView export: the drawn data equal the file's, orientation, legacy files."""

import importlib

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pytest

from landscape_hpc.files.vtp import read_vtp

plot = importlib.import_module("landscape_hpc.plot")  # the command (lh.plot: the function)

X = np.linspace(-1, 1, 7)
Y = np.linspace(-0.5, 0.5, 4)


def _ours(path, z_of, one_d=False, done_mask=None):
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = X
        if one_d:
            z = z_of(X, 0.0)
        else:
            f["ycoordinates"] = Y
            xx, yy = np.meshgrid(X, Y)
            z = z_of(xx, yy)
        done = np.ones(z.shape, np.uint8) if done_mask is None else done_mask.astype(np.uint8)
        z = np.where(done == 1, z, np.nan)
        f["train_loss"], f["test_loss"] = z, z + 0.5
        f["train_acc"], f["test_acc"] = 100 - z, 90 - z
        f["done"] = done
    return path


def test_heatmap_draws_exactly_the_file_values(tmp_path):
    s = plot.read_surface(_ours(tmp_path / "s.h5", lambda x, y: 2 + x + 3 * y))
    fig, ax = plt.subplots()
    im = plot.heatmap(ax, s.x, s.y, s.metrics["train_loss"])
    np.testing.assert_array_equal(np.asarray(im.get_array()).reshape(4, 7), s.metrics["train_loss"])
    plt.close(fig)


def test_a_tilt_along_x_draws_vertical_contours_on_a_non_square_grid(tmp_path):
    s = plot.read_surface(_ours(tmp_path / "s.h5", lambda x, y: 3 + x + 0 * y))
    fig, ax = plt.subplots()
    cs = plot.contour(ax, s.x, s.y, s.metrics["train_loss"], vmin=2.5, vmax=3.5, vlevel=0.5)
    for level, path in zip(cs.levels, cs.get_paths()):
        if len(path.vertices):
            np.testing.assert_allclose(path.vertices[:, 0], level - 3, atol=1e-9)  # x = z - 3
            assert np.ptp(path.vertices[:, 1]) == pytest.approx(1.0)  # spans the whole y range
    plt.close(fig)


def test_vtk_round_trip(tmp_path):
    path = _ours(tmp_path / "s.h5", lambda x, y: 1 + x**2 + y**2)
    out = plot.plot_files([path], plot.parser().parse_args([str(path), "--kind", "vtp", "--log"]))
    vtp = next(p for p in out if p.name == "s_train_loss_log.vtu")
    points, data, quads = read_vtp(vtp)
    xx, yy = np.meshgrid(X, Y)
    z = 1 + xx**2 + yy**2
    np.testing.assert_allclose(points[:, 0], xx.ravel())
    np.testing.assert_allclose(points[:, 1], yy.ravel())
    np.testing.assert_allclose(points[:, 2], np.log10(z).ravel())
    np.testing.assert_allclose(data["train_loss"], z.ravel())
    assert quads.shape == (6 * 3, 4)


def test_zmax_clips_the_vtk_heights_and_the_3d_surface_but_not_the_data(tmp_path):
    path = _ours(tmp_path / "s.h5", lambda x, y: 1 + 4 * x**2 + y**2)  # 1 ... 5.25
    args = [str(path), "--kind", "vtp", "--zmax", "3", "--out", str(tmp_path / "vtk")]
    out = plot.plot_files([path], plot.parser().parse_args(args))
    points, data, _ = read_vtp(next(p for p in out if p.name == "s_train_loss.vtu"))
    xx, yy = np.meshgrid(X, Y)
    z = 1 + 4 * xx**2 + yy**2
    assert (z > 3).any()  # some heights to clip
    np.testing.assert_allclose(points[:, 2], np.minimum(z, 3).ravel())
    np.testing.assert_allclose(data["train_loss"], z.ravel())  # the values stay the file's
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d")
    plot.surface3d(ax, X, Y, z, zmax=3)
    (poly,) = ax.collections
    quads = poly.get_array()  # each quad's mean height, which colours it
    assert quads.max() <= 3.0 and quads.min() >= 1.0  # unclipped, the corner quads pass 4
    plt.close(fig)


def test_format_names_every_figure_file(tmp_path):
    path = _ours(tmp_path / "s.h5", lambda x, y: 1 + x**2 + y**2)
    args = [str(path), "--kind", "contour", "--format", "pdf", "--out", str(tmp_path / "f")]
    out = plot.plot_files([path], plot.parser().parse_args(args))
    assert out and all(p.suffix == ".pdf" for p in out)
    assert all(p.read_bytes().startswith(b"%PDF") for p in out)


def test_partial_surface_plots_the_done_part_and_says_so(tmp_path, capsys):
    mask = np.zeros((4, 7), bool)
    mask[:2] = True
    path = _ours(tmp_path / "s.h5", lambda x, y: 2 + x, done_mask=mask)
    assert plot.main([str(path), "--kind", "contour", "--out", str(tmp_path / "f")]) == 0
    assert "14 of 28 points done" in capsys.readouterr().out
    assert (tmp_path / "f" / "s_loss_2dcontour.png").stat().st_size > 0


def test_loss_landscape_layout_reads_with_sentinel_as_missing(tmp_path):
    path = tmp_path / "ll.h5"
    xx, yy = np.meshgrid(X, Y)
    z = 1 + xx + 10 * yy
    flat = z.ravel().copy()
    flat[5] = -1  # not computed
    with h5py.File(path, "w") as f:  # loss-landscape: (nx, ny) arrays filled in (y, x) order
        f["xcoordinates"], f["ycoordinates"] = X, Y
        f["train_loss"] = flat.reshape(len(X), len(Y))
        f["train_acc"] = np.full((len(X), len(Y)), 50.0)
    s = plot.read_surface(path)
    assert s.legacy and np.isnan(s.metrics["train_loss"].ravel()[5])
    np.testing.assert_allclose(
        np.delete(s.metrics["train_loss"].ravel(), 5), np.delete(z.ravel(), 5)
    )
    out = plot.plot_files([path], plot.parser().parse_args([str(path), "--kind", "all"]))
    assert {p.suffix for p in out} == {".png", ".vtu"}


def test_one_dimensional_files_overlaid(tmp_path, monkeypatch):
    a = _ours(tmp_path / "a.h5", lambda x, y: 1 + x**2, one_d=True)
    b = _ours(tmp_path / "b.h5", lambda x, y: 2 + x**2, one_d=True)
    args = plot.parser().parse_args([str(a), str(b), "--log", "--out", str(tmp_path / "o")])
    drawn = []
    monkeypatch.setattr(plot.plt, "close", drawn.append)  # keep the figure to look inside it
    (png,) = plot.plot_files([a, b], args)
    assert png.name == "overlay_1d_loss_acc.png" and png.stat().st_size > 0
    (fig,) = drawn
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_yscale() == "log"
    curves = {line.get_label(): line.get_ydata() for ax in fig.axes for line in ax.get_lines()}
    assert set(curves) == {
        f"{f} {s} {m}" for f in "ab" for s in ("train", "test") for m in ("loss", "acc")
    }
    np.testing.assert_array_equal(curves["a train loss"], 1 + X**2)
    np.testing.assert_array_equal(curves["b train loss"], 2 + X**2)
    np.testing.assert_array_equal(curves["b test acc"], 90 - (2 + X**2))
    monkeypatch.undo()
    plt.close(fig)


@pytest.mark.parametrize(
    ("make", "args", "words"),
    [
        (lambda p: p.write_text("hello"), [], "not an HDF5 file"),
        (lambda p: h5py.File(p, "w").close(), [], "not a surface file"),
        (None, [], "does not exist"),
        (lambda p: _ours(p, lambda x, y: x), ["--metric", "val_loss"], "holds no val_loss"),
        (lambda p: _ours(p, lambda x, y: x, done_mask=np.zeros((4, 7))), [], "nothing computed"),
    ],
)
def test_bad_input_is_a_message(tmp_path, capsys, make, args, words):
    path = tmp_path / "bad.h5"
    if make:
        make(path)
    assert plot.main([str(path), *args]) == 2
    assert words in capsys.readouterr().err


def _with_trajectory(path):
    with h5py.File(path, "a") as f:
        f["trajectory/x"] = np.array([0.9, 0.5, 0.2, 0.0])
        f["trajectory/y"] = np.array([0.4, -0.1, 0.05, 0.0])
        f["trajectory/epoch"] = np.arange(4)
        f["trajectory/lr"] = np.array([0.1, 0.1, 0.01, 0.01])
        f.attrs["explained_variance_ratio"] = np.array([0.64, 0.12])
    return path


def test_the_command_overlays_the_stored_trajectory_on_every_flat_2d_kind(tmp_path, monkeypatch):
    path = _with_trajectory(_ours(tmp_path / "p.h5", lambda x, y: 1 + x**2 + y**2))
    drawn, real = [], plot.trajectory

    def spy(ax, x, y, lrs=None, color="black"):
        lines = real(ax, x, y, lrs, color)
        drawn.append((lines, color))
        return lines

    monkeypatch.setattr(plot, "trajectory", spy)
    args = [str(path), "--kind", "all", "--metric", "train_loss", "test_loss"]
    out = plot.plot_files([path], plot.parser().parse_args(args))
    assert len([p for p in out if p.suffix == ".png"]) == 4  # contour, filled, heatmap, 3d
    assert len(drawn) == 2 * 3  # 2 splits × contour, filled, heatmap (not 3d)
    for (path_line, drops), color in drawn:
        np.testing.assert_array_equal(path_line.get_xdata(), [0.9, 0.5, 0.2, 0.0])
        np.testing.assert_array_equal(path_line.get_ydata(), [0.4, -0.1, 0.05, 0.0])
        np.testing.assert_array_equal(drops.get_xdata(), [0.2])  # lr 0.1 -> 0.01 at index 2
        assert path_line.get_color() == color
    assert {color for _, color in drawn} == {"black", "white"}
    s = plot.read_surface(path)
    fig, ax = plt.subplots()
    plot.pc_labels(ax, s.explained_variance_ratio)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("PC1: 64.0%", "PC2: 12.0%")
    plt.close(fig)


def test_lr_drops_ignore_unknown_rates_and_plain_files_have_no_trajectory(tmp_path):
    lrs = [np.nan, 0.1, 0.1, 0.01, np.nan, 0.001, 0.01]
    assert plot.lr_drop_indices([0.1, 0.1, 0.01, 0.001]).tolist() == [2, 3]
    assert plot.lr_drop_indices(lrs).tolist() == [3]
    fig, ax = plt.subplots()
    path_line, drops = plot.trajectory(ax, [1, 2], [3, 4])
    assert drops is None and path_line.get_marker() == "o"
    plt.close(fig)
    s = plot.read_surface(_ours(tmp_path / "s.h5", lambda x, y: x + y))
    assert s.trajectory is None and s.explained_variance_ratio is None


def test_a_metric_without_any_finite_value_is_skipped_with_a_note(tmp_path, capsys):
    """A loss-output model (the wedge) has no accuracy: its all-NaN acc datasets are skipped, the
    loss is still drawn; asking for them by name is a clear error."""
    from landscape_hpc.errors import UserError
    from landscape_hpc.plot import parser, plot_files

    path = tmp_path / "wedge.h5"
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    with h5py.File(path, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = x, y
        f["train_loss"] = np.add.outer(y**2, x**2)
        f["train_acc"] = np.full((4, 5), np.nan)
        f["done"] = np.ones((4, 5), dtype=np.uint8)
    written = plot_files([path], parser().parse_args([str(path), "--kind", "contour"]))
    assert [p.name for p in written] == ["wedge_loss_2dcontour.png"]
    assert "train_acc has no finite value" in capsys.readouterr().out
    with pytest.raises(UserError, match="train_acc has no finite value"):
        plot_files([path], parser().parse_args([str(path), "--metric", "train_acc"]))
