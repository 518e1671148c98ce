"""examples/landscape_from_a_notebook.ipynb runs top to bottom and its numbers hold, so the
notebook cannot rot; its committed outputs exist, so the page reads on the hosting site.

The kernel is this interpreter (sys.executable, through a kernel spec written into a temporary
folder): no kernel registered anywhere else is used, none is left behind. The same code
refreshes the committed outputs after an edit of the notebook:

    .venv/bin/python tests/test_notebook.py      # executes it in place, outputs included
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "landscape_from_a_notebook.ipynb"
KERNEL = "python3"  # the notebook's kernelspec name, here pointed at sys.executable


def execute(nb: Any, folder: Path) -> Any:
    """Runs `nb` (a NotebookNode, changed in place) in a kernel of this interpreter with cwd
    `folder`; IPython's and Jupyter's per-user folders (profiles, startup scripts, config)
    live in `folder` too, so nothing of the user's Jupyter set-up takes part."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    specs = folder / "kernels"
    write_kernel_spec(specs / KERNEL)  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    env = {
        **os.environ,
        "IPYTHONDIR": str(folder / "ipython"),
        "JUPYTER_CONFIG_DIR": str(folder / "jupyter_config"),
        "JUPYTER_RUNTIME_DIR": str(folder / "jupyter_runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    manager = AsyncKernelManager(
        kernel_name=KERNEL,
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)], ensure_native_kernel=False),
    )
    manager.connection_file = str(folder / "kernel-connection.json")
    client = NotebookClient(
        nb,
        km=manager,
        timeout=600,  # per cell: a slow or busy machine must not fail the run
        startup_timeout=600,
        record_timing=False,  # no timestamps in the committed file
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute(env=env)
    return nb


def code_cells(nb: Any) -> list[Any]:
    """The code cells of a notebook, as nbformat reads it or as plain JSON (dict access)."""
    return [cell for cell in nb["cells"] if cell["cell_type"] == "code"]


def outputs(nb: Any) -> list[Any]:
    return [o for cell in code_cells(nb) for o in cell["outputs"]]


def text_of(cell: Any) -> str:
    """A cell's printed text (the file stores it as a list of lines, nbformat as one string)."""
    texts = [o.get("text", "") for o in cell["outputs"] if o["output_type"] == "stream"]
    return "".join(t if isinstance(t, str) else "".join(t) for t in texts)


def images(nb: Any) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(nb))


def checks_of(nb: Any) -> dict[str, float]:
    """The `name value` lines the notebook's last cell prints."""
    lines = text_of(code_cells(nb)[-1]).split("\n")
    return {name: float(value) for name, value in (line.split() for line in lines if line)}


def assert_checks_hold(checks: dict[str, float]) -> None:
    assert checks["train_accuracy"] > 0.9 and checks["test_accuracy"] > 0.85, checks
    assert checks["lambda_max"] > 0 and checks["lambda_min"] < checks["lambda_max"], checks
    assert math.isfinite(checks["trace"]) and checks["trace"] > 0, checks
    # the surface's centre is the trained net, the line's ends are the two nets: their losses
    # by plain PyTorch, and the two nets differ (the ends are not one loss twice)
    own = checks["net_train_loss"]
    assert checks["surface_centre_train_loss"] == pytest.approx(own, rel=1e-5)
    assert checks["line_t0_train_loss"] == pytest.approx(own, rel=1e-5)
    assert checks["line_t1_train_loss"] == pytest.approx(checks["net_b_train_loss"], rel=1e-5)
    assert abs(checks["net_b_train_loss"] - own) > 1e-4 * own
    assert checks["saved_and_loaded_equal"] == 1.0


def test_the_notebook_runs_in_this_interpreter_and_its_numbers_hold(tmp_path):
    pytest.importorskip("nbclient", reason="nbclient is not installed: pip install '.[test]'")
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in code_cells(nb):
        cell.outputs = []  # what comes out below comes from this run, not from the file
    # one cell more, in this copy only: which interpreter the kernel ran
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))
    execute(nb, tmp_path)  # raises CellExecutionError on the first cell that fails
    assert not [o for o in outputs(nb) if o["output_type"] == "error"]
    assert text_of(code_cells(nb)[-1]).strip() == sys.prefix  # the kernel was this venv's python
    nb.cells.pop()
    assert images(nb) == 3  # the surface, the interpolation, the Hessian spectrum
    assert_checks_hold(checks_of(nb))


def test_the_committed_notebook_carries_the_outputs_of_one_run():
    nb = json.loads(NOTEBOOK.read_text())  # as the hosting site reads it: no nbformat needed
    cells = code_cells(nb)
    assert [cell["execution_count"] for cell in cells] == list(range(1, len(cells) + 1))
    assert [i for i, cell in enumerate(cells) if not cell["outputs"]] == [0]  # the imports
    assert not [o for o in outputs(nb) if o["output_type"] == "error"]
    assert images(nb) == 3
    assert_checks_hold(checks_of(nb))


if __name__ == "__main__":
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory() as work:
        execute(notebook, Path(work))
    nbformat.write(notebook, NOTEBOOK)
    print(f"{NOTEBOOK}: executed, {images(notebook)} figures")
