"""What a sweep file's job group holds (the layout files/sweep.py writes, its docstring's
table) and the checks of a group against it: a file is checked against what it claims (issue 33),
on report and on resume, so that an edited or damaged job is one line naming it, not a traceback
or a row of NaN."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from landscape_hpc.files.surface import metric_names
from landscape_hpc.mpo.convergence import HISTORY_COLUMNS
from landscape_hpc.mpo.scores import METRIC_COLUMNS as SCORED_METRICS

PENDING, DONE, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed"}
METRIC_SPLITS = ("train", "test")
#: over all cells, then over the trained (boundary) cells only (the paper code's metric), then
#: the scores against the radial prior (mpo/scores.py); a file's own `columns` attribute says
#: which it holds (files before the scores: the first 10)
METRIC_COLUMNS = SCORED_METRICS
VALUE_NAMES = metric_names(list(METRIC_SPLITS))
TEXT = {"reason": 512, "host": 64}
SCALARS = {
    "rank": "i4",
    "steps": "i8",
    "bn": "u1",
    "converged": "u1",
    "seconds": "f8",
    "train_seconds": "f8",
    "heldout_seconds": "f8",
    "eval_seconds": "f8",
    "scale": "f8",
}


def shape_problem(g: h5py.Group) -> str:
    """What is wrong with the shapes and types of a job group's datasets and attributes, as
    read_jobs reads them and SweepFile.write writes into them; "" when nothing is. A file is
    checked against what it claims (issue 33): an edited dataset would otherwise end the report
    or the resumed sweep with a traceback."""
    model = g.attrs.get("model")
    if not isinstance(model, (str, bytes)):
        return f"has a model attribute that is {_kind(model)}, not a string"
    for name, kind in (("fill_prob", "fiu"), ("seed", "iu")):
        value = g.attrs.get(name)
        if np.ndim(value) != 0 or np.asarray(value).dtype.kind not in kind:
            what = "a number" if kind == "fiu" else "an integer"
            return f"has a {name} attribute that is {_kind(value)}, not {what}"
    if not np.isfinite(float(g.attrs["fill_prob"])):
        return f"has fill_prob={float(g.attrs['fill_prob'])}, not a finite number"
    scalars = {"status": "iub", "bn": "iub", "steps": "iub", "rank": "iub"}
    optional = {"converged": "iub", **{n: "fiub" for n in SCALARS if n.endswith("seconds")}}
    for name, kind in {**scalars, **optional}.items():
        node = g.get(name)
        if node is None and name in optional:
            continue
        if not isinstance(node, h5py.Dataset) or node.shape != () or node.dtype.kind not in kind:
            what = "an integer" if kind == "iub" else "a number"
            return f"has a dataset {name} that is {_kind(node)}, not {what} (shape ())"
    if int(g["status"][()]) not in STATUS_NAMES:
        return f"has status {int(g['status'][()])}, not one of {sorted(STATUS_NAMES)}"
    for name in TEXT:
        node = g.get(name)
        if not isinstance(node, h5py.Dataset) or node.shape != () or node.dtype.kind not in "SO":
            return f"has a dataset {name} that is {_kind(node)}, not a string (shape ())"
        if not isinstance(node[()], bytes):
            return f"has a dataset {name} that holds {type(node[()]).__name__}, not a string"
    metrics = g.get("metrics")
    if not isinstance(metrics, h5py.Dataset) or metrics.ndim != 2 or metrics.dtype.kind != "f":
        return f"has a dataset metrics that is {_kind(metrics)}, not a 2D float array"
    if "columns" in metrics.attrs:
        columns = metrics.attrs["columns"]
        if np.ndim(columns) != 1 or not all(isinstance(c, (str, bytes)) for c in columns):
            return f"has a metrics columns attribute that is {_kind(columns)}, not a list of names"
        fits = metrics.shape == (len(METRIC_SPLITS), len(columns))
        want_shape = f"({len(METRIC_SPLITS)}, {len(columns)})"
    else:  # the first files: the first 5 columns, no attribute
        fits = metrics.shape[0] == len(METRIC_SPLITS) and metrics.shape[1] >= 5
        want_shape = f"({len(METRIC_SPLITS)}, 5 or more)"
    if not fits:
        return (
            f"has metrics of shape {metrics.shape}, not {want_shape} (rows "
            f"{', '.join(METRIC_SPLITS)}; a column per name in its columns attribute)"
        )
    history = g.get("history")
    want = len(HISTORY_COLUMNS)
    if history is not None and (
        not isinstance(history, h5py.Dataset)
        or history.ndim != 2
        or history.shape[1] != want
        or history.dtype.kind != "f"
    ):
        return f"has a history that is {_kind(history)}, not a float array of shape (rows, {want})"
    x, y = g.get("xcoordinates"), g.get("ycoordinates")
    for name, node in (("xcoordinates", x), ("ycoordinates", y)):
        if not isinstance(node, h5py.Dataset) or node.ndim != 1 or node.dtype.kind != "f":
            return f"has a dataset {name} that is {_kind(node)}, not a 1D float array"
    shape = (y.shape[0], x.shape[0])
    for name in (*VALUE_NAMES, "done", "mask"):
        node = g.get(name)
        kind = "f" if name in VALUE_NAMES else "iub"
        if not isinstance(node, h5py.Dataset) or node.shape != shape or node.dtype.kind not in kind:
            what = "float" if kind == "f" else "integer"
            return (
                f"has a dataset {name} that is {_kind(node)}, not a {what} array of shape "
                f"{shape} (len(ycoordinates), len(xcoordinates))"
            )
    return ""


def _kind(node: Any) -> str:
    """A short description of what a stored node or attribute is, for a message."""
    if node is None:
        return "missing"
    if isinstance(node, h5py.Group):
        return "a group"
    if isinstance(node, (h5py.Dataset, np.ndarray)):
        return f"an array ({node.dtype}, shape {node.shape})"
    if isinstance(node, (str, bytes)):
        return "a string"
    if np.ndim(node) == 0:
        return f"a value ({np.asarray(node).dtype})"
    return f"a {type(node).__name__}"


def done_without_values(g: h5py.Group) -> str:
    """What is wrong with a job group marked done (status 1) that lacks its values (every cell
    done, each metric written somewhere: Outcome(DONE) always carries them); "" when nothing
    is, or the job is not done. A file is checked against what it claims (issue 33): such a job
    would be skipped on resume and reported as a row of NaN."""
    if int(np.asarray(g["status"][()])) != DONE:
        return ""
    done = np.asarray(g["done"][()]) if isinstance(g.get("done"), h5py.Dataset) else None
    if done is None or done.size == 0 or not np.all(done != 0):
        return "is marked done but not every cell is (done is not all 1)"
    for name in VALUE_NAMES:
        node = g.get(name)
        values = np.asarray(node[()]) if isinstance(node, h5py.Dataset) else None
        if (
            values is None
            or not np.issubdtype(values.dtype, np.floating)
            or np.all(np.isnan(values))
        ):
            return f"is marked done but holds no {name} values"
    return ""
