"""The interactive HTML figure (plot_html.py, `--kind html`, `lh.plot`): every point's values in
the file equal the HDF5 data, missing points are null, the log toggle holds log10 of the data,
the axes say what they are, nothing is fetched from the network; bad input is one line."""

from __future__ import annotations

import importlib
import re
import sys

import h5py
import numpy as np
import pytest

pytest.importorskip(
    "plotly", reason='plotly is the [html] extra: pip install "landscape_hpc[html]"'
)

import landscape_hpc as lh  # noqa: E402
from landscape_hpc import plot_html  # noqa: E402

plot = importlib.import_module("landscape_hpc.plot")  # the command (lh.plot: the function)

X = np.linspace(-1, 1, 9)
Y = np.linspace(-0.5, 0.5, 5)


def make_surface(path, one_d=False, pca=True, missing=True):
    """A small surface file like the command's: a bowl, a block of points not done, and (pca)
    a stored trajectory with its explained variance."""
    xx, yy = np.meshgrid(X, Y)
    z = 0.2 + 2 * xx**2 + yy**2 + 0.1 * xx
    done = np.ones(z.shape, np.uint8)
    if missing:
        done[1:3, 5:7] = 0
    if one_d:
        z, done = z[2], done[2]
    z = np.where(done == 1, z, np.nan)
    with h5py.File(path, "w") as f:
        f["xcoordinates"] = X
        if not one_d:
            f["ycoordinates"] = Y
        f["train_loss"], f["test_loss"] = z, z + 0.5
        f["train_acc"], f["test_acc"] = 100 - 10 * z, 90 - 10 * z
        f["done"] = done
        if pca and not one_d:
            f["trajectory/x"] = np.array([0.9, 0.6, 0.3, 0.0])
            f["trajectory/y"] = np.array([0.4, 0.1, 0.2, 0.0])
            f["trajectory/epoch"] = np.arange(4)
            f["trajectory/lr"] = np.array([0.1, 0.1, 0.01, 0.01])
            f.attrs["explained_variance_ratio"] = np.array([0.64, 0.12])
    return path


def _array(values):
    """A figure's nested lists with null as NaN."""
    return np.array([[np.nan if v is None else v for v in row] for row in values], float)


def _html(tmp_path, *args, **kw):
    path = make_surface(tmp_path / "s.h5", **kw)
    assert plot.main([str(path), "--kind", "html", "--out", str(tmp_path / "o"), *args]) == 0
    out = tmp_path / "o" / "s_surface.html"
    return path, out, plot_html.figure_json(out.read_text())


def test_every_point_of_every_metric_is_in_the_html_and_missing_ones_are_null(tmp_path):
    path, _, fig = _html(tmp_path)
    with h5py.File(path) as f:
        file = {n: f[n][()] for n in ("train_loss", "test_loss", "train_acc", "test_acc")}
        done = f["done"][()]
    surfaces = [t for t in fig["data"] if t["type"] == "surface"]
    contours = [t for t in fig["data"] if t["type"] == "contour"]
    assert sorted(t["name"] for t in surfaces) == sorted(file)
    assert sorted(t["name"] for t in contours) == sorted(file)
    for trace in surfaces + contours:
        np.testing.assert_array_equal(trace["x"], X)
        np.testing.assert_array_equal(trace["y"], Y)
        z = _array(trace["z"])
        np.testing.assert_array_equal(z, file[trace["name"]])  # NaN == NaN here
        assert [trace["z"][j][i] is None for j in range(5) for i in range(9)] == (
            done.reshape(-1) == 0
        ).tolist()
        # hover: the split's loss and accuracy at each point
        split = trace["name"].rpartition("_")[0]
        custom = np.array(
            [[[np.nan if v is None else v for v in c] for c in row] for row in trace["customdata"]]
        )
        np.testing.assert_array_equal(custom[..., 0], file[f"{split}_loss"])
        np.testing.assert_array_equal(custom[..., 1], file[f"{split}_acc"])
        assert f"{split}_loss" in trace["hovertemplate"] and "%{x" in trace["hovertemplate"]
    # one metric shown at a time, train_loss first
    assert [t["name"] for t in surfaces if t.get("visible", True) is True] == ["train_loss"]


def test_the_log_toggle_holds_log10_of_the_losses_and_leaves_accuracy_linear(tmp_path):
    path, _, fig = _html(tmp_path)
    with h5py.File(path) as f:
        file = {n: f[n][()] for n in ("train_loss", "test_loss", "train_acc", "test_acc")}
    menus = fig["layout"]["updatemenus"]
    (toggle,) = [m for m in menus if m.get("type") == "buttons"]
    linear, log = toggle["buttons"]
    assert (linear["label"], log["label"]) == ("linear", "log10")
    names = [fig["data"][i]["name"] for i in log["args"][1]]
    for name, lin, lg in zip(names, linear["args"][0]["z"], log["args"][0]["z"]):
        np.testing.assert_array_equal(_array(lin), file[name])
        expected = np.log10(file[name]) if name.endswith("_loss") else file[name]
        np.testing.assert_allclose(_array(lg), expected, rtol=1e-15)
    (dropdown,) = [m for m in menus if m.get("type") == "dropdown"]
    assert [b["label"] for b in dropdown["buttons"]] == [
        "train_loss",
        "test_loss",
        "train_acc",
        "test_acc",
    ]


def test_the_trajectory_and_the_variance_explained_are_drawn(tmp_path):
    _, _, fig = _html(tmp_path)
    (path,) = [t for t in fig["data"] if t.get("name") == "trajectory"]
    np.testing.assert_array_equal(path["x"], [0.9, 0.6, 0.3, 0.0])
    np.testing.assert_array_equal(path["y"], [0.4, 0.1, 0.2, 0.0])
    (drops,) = [t for t in fig["data"] if t.get("name") == "lr drop"]
    assert drops["x"] == [0.3]  # lr 0.1 -> 0.01 at checkpoint 2
    layout = fig["layout"]
    assert layout["xaxis"]["title"]["text"] == "x: PC1 (64.0% of the variance)"
    assert layout["yaxis"]["title"]["text"] == "y: PC2 (12.0% of the variance)"
    assert layout["scene"]["xaxis"]["title"]["text"].startswith("x: PC1 (64.0%")


def test_the_file_is_self_contained(tmp_path):
    _, out, _ = _html(tmp_path)
    html = out.read_text()
    assert re.findall(r"<script[^>]*\bsrc\s*=", html) == []  # no script fetched, from anywhere
    assert re.findall(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", html) == []
    assert "Plotly.newPlot(" in html and len(html) > 1_000_000  # plotly.js is inside


@pytest.mark.parametrize(
    ("attrs", "titles"),
    [
        ({"config": "directions:\n  kind: random\n  norm: filter\n"}, "random direction, filter-"),
        ({"directions_directions": "random", "directions_norm": "layer"}, "layer-normalised"),
        ({"config": "directions:\n  kind: hessian\n  norm: filter\n"}, "Hessian eigenvector v1"),
        ({"directions": "interpolation"}, "t (0 = model a, 1 = model b)"),
        ({}, "x"),
    ],
)
def test_axis_titles_say_what_the_directions_are(attrs, titles):
    ndim = 1 if attrs.get("directions") == "interpolation" else 2
    got = plot_html.axis_titles(attrs, None, ndim)
    assert titles in got[0] and len(got) == ndim


def test_a_1d_file_draws_its_curves_with_gaps(tmp_path):
    path = make_surface(tmp_path / "s.h5", one_d=True)
    assert plot.main([str(path), "--kind", "html"]) == 0
    fig = plot_html.figure_json((tmp_path / "s_surface.html").read_text())
    with h5py.File(path) as f:
        for trace in fig["data"]:
            assert trace["type"] == "scatter"
            y = np.array([np.nan if v is None else v for v in trace["y"]])
            np.testing.assert_array_equal(y, f[trace["name"]][()])
            assert trace["yaxis"] == ("y2" if trace["name"].endswith("_acc") else "y")
    assert sum(v is None for v in fig["data"][0]["y"]) == 2


def test_the_api_returns_the_same_figure_from_a_dataset_or_the_file(tmp_path):
    path = make_surface(tmp_path / "s.h5", pca=False)
    from_file = lh.plot(path, kind="html", out=tmp_path / "a.html")
    from_ds = lh.plot(lh.load(path), kind="html")
    for a, b in zip(from_file.data, from_ds.data):
        assert a.name == b.name and a.z == b.z
    parsed = plot_html.figure_json((tmp_path / "a.html").read_text())
    assert [t["z"] for t in parsed["data"]] == [list(map(list, t.z)) for t in from_file.data]
    assert hasattr(from_ds, "show")  # a plotly Figure: displays inline in a notebook


def test_bad_input_is_one_line(tmp_path, capsys):
    empty = make_surface(tmp_path / "e.h5")
    with h5py.File(empty, "a") as f:
        for n in ("train_loss", "test_loss", "train_acc", "test_acc"):
            f[n][...] = np.nan
        f["done"][...] = 0
    assert plot.main([str(empty), "--kind", "html"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nothing computed" in err[0]
    assert not (tmp_path / "e_surface.html").exists()
    with pytest.raises(ValueError, match="nothing computed"):
        lh.plot(empty)
    with pytest.raises(ValueError, match="kind='3d' is not known"):
        lh.plot(empty, kind="3d")
    with pytest.raises(TypeError, match="pass a surface Dataset"):
        lh.plot([1, 2])
    with pytest.raises(ValueError, match="not in the surface"):
        lh.plot(make_surface(tmp_path / "m.h5"), metric=["val_loss"])


def test_without_plotly_the_html_kind_names_the_extra(tmp_path, capsys, monkeypatch):
    path = make_surface(tmp_path / "s.h5")
    for name in [m for m in sys.modules if m == "plotly" or m.startswith("plotly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)  # what an absent package imports as
    assert plot.main([str(path), "--kind", "html"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error:") and 'pip install "landscape_hpc[html]"' in line
    assert not (tmp_path / "s_surface.html").exists()


def test_the_api_draws_a_given_pca_path_and_more_paths_on_a_dataset(tmp_path):
    from landscape_hpc.directions.pca import ProjectedTrajectory

    ds = lh.load(make_surface(tmp_path / "s.h5", pca=False))
    coords = np.array([[0.8, 0.3], [0.4, 0.1], [0.0, 0.0]])
    path = ProjectedTrajectory(
        coords, np.arange(3), np.array([0.1, 0.01, 0.01]), np.array([0.5, 0.2])
    )
    other = ProjectedTrajectory(coords[::-1] - 0.1, np.arange(3), np.full(3, np.nan), np.zeros(0))
    fig = lh.plot(ds, kind="html", path=path, paths={"adam": other, "xy": ([0.1, 0.2], [0.0, 0.1])})
    traces = {t.name: t for t in fig.data}
    np.testing.assert_array_equal(traces["trajectory"].x, coords[:, 0])
    np.testing.assert_array_equal(traces["trajectory"].y, coords[:, 1])
    assert traces["lr drop"].x == (0.4,)
    np.testing.assert_array_equal(traces["adam"].x, coords[::-1, 0] - 0.1)
    assert traces["xy"].y == (0.0, 0.1)
    assert fig.layout.xaxis.title.text == "x: PC1 (50.0% of the variance)"
    assert all(t.showlegend is not False for n, t in traces.items() if n in ("adam", "xy"))
