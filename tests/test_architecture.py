"""The package map of the README ("Development") holds: which layer may import which, no import
cycle, each outside library behind its one edge module, no module over 400 lines.

Imports are read from the source (module-level and inside functions alike), so a cycle closed by
a function-local import counts as a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "landscape_hpc"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module name an import statement of `path` names (ours and outside ones)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _ours(name: str) -> str | None:
    """The module of ours an imported name refers to (a name imported from a module counts as
    that module), or None for an outside library."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _graph() -> dict[str, set[str]]:
    """module -> our modules it imports. Importing a.b.c from outside package a.b also runs
    a.b's __init__ (and a's); from inside a.b it does not (a.b is being imported already)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for imported in _imports(path):
            target = _ours(imported)
            while target in MODULES:
                deps.add(target)
                target = target.rpartition(".")[0]
                if not target or name == target or name.startswith(target + "."):
                    break
        graph[name] = deps - {name}
    return graph


def _outside(name: str) -> set[str]:
    return {i.split(".")[0] for i in _imports(MODULES[name]) if _ours(i) is None}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    # the check above could pass by finding nothing at all: a made-up graph with one cycle
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_config_imports_nothing_else_of_the_package():
    graph = _graph()
    for name in MODULES:
        if name.startswith("landscape_hpc.config"):
            inner = {d for d in graph[name] if not d.startswith("landscape_hpc.config")}
            assert inner <= {"landscape_hpc"}, (name, inner)


#: the pure middle: maths on tensors and arrays, no MPI, no HDF5, no Hydra, no command
KERNELS = (
    "landscape_hpc.errors",
    "landscape_hpc.params",
    "landscape_hpc.grid",
    "landscape_hpc.engine.subspace",
    "landscape_hpc.engine.evaluate",
    "landscape_hpc.engine.flat",
    "landscape_hpc.engine.precision",
    "landscape_hpc.hessian",
    "landscape_hpc.directions.maths",
    "landscape_hpc.mpo.patterns",
    "landscape_hpc.mpo.plane",
    "landscape_hpc.mpo.plane_init",
    "landscape_hpc.mpo.objective",
    "landscape_hpc.mpo.scores",
    "landscape_hpc.geometry.hyperplane",
    "landscape_hpc.geometry.curve",
    "landscape_hpc.geometry.block_score",
    "landscape_hpc.swa",
    "landscape_hpc.align",
    "landscape_hpc.auto_range",
)
#: the edges: only these reach MPI, HDF5 and Hydra
EDGES = {
    "mpi4py": ("landscape_hpc.parallel",),
    "h5py": ("landscape_hpc.files",),
    "hydra": ("landscape_hpc.cli",),
}


@pytest.mark.parametrize("kernel", [k for k in KERNELS if k in MODULES])
def test_the_kernels_reach_no_mpi_hdf5_hydra_or_command(kernel):
    graph = _graph()
    reached, todo = set(), [kernel]
    while todo:  # everything the kernel imports, transitively
        for dep in graph[todo.pop()] - reached:
            reached.add(dep)
            todo.append(dep)
    edges = {"landscape_hpc.parallel", "landscape_hpc.cli", "landscape_hpc.files"}
    assert not {m for m in reached if m in edges or m.startswith("landscape_hpc.files.")}
    for module in {kernel, *reached}:
        assert not _outside(module) & set(EDGES), (kernel, module)


@pytest.mark.parametrize("library", sorted(EDGES))
def test_each_outside_library_is_behind_its_edge(library):
    users = sorted(n for n in MODULES if library in _outside(n))
    allowed = EDGES[library]
    assert users and all(u.startswith(allowed) for u in users), users


def test_the_file_formats_import_no_command():
    commands = (
        "api",
        "commands",
        "surface",
        "train",
        "plot",
        "mpo.command",
        "sweep.run",
        "geometry",
        "cli",
    )
    graph = _graph()
    for name in MODULES:
        if name.startswith("landscape_hpc.files"):
            bad = {d for d in graph[name] if d.removeprefix("landscape_hpc.").startswith(commands)}
            assert not bad, (name, bad)


def test_no_module_is_longer_than_the_limit():
    lengths = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert {n: k for n, k in lengths.items() if k > MAX_LINES} == {}
