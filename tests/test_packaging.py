"""The package installs like any Python package: setup.cfg lists every subpackage, the wheel
holds the configs (conf/ as landscape_hpc.conf) and the console commands, and an installed wheel
runs a surface from a folder outside the checkout, without the checkout on sys.path."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "landscape-train",
    "landscape-surface",
    "landscape-plot",
    "landscape-mpo",
    "landscape-sweep",
    "landscape-geometry",
}


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def test_setup_cfg_lists_every_subpackage_and_config_folder():
    listed = set(_setup_cfg()["options"]["packages"].split())
    code = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "landscape_hpc").rglob("__init__.py")
    }
    conf = {
        ".".join(("landscape_hpc", *p.relative_to(ROOT).parts))
        for p in [ROOT / "conf", *(d for d in (ROOT / "conf").rglob("*") if d.is_dir())]
    }
    assert listed == code | conf


def test_console_commands_are_declared():
    scripts = _setup_cfg()["options.entry_points"]["console_scripts"]
    names = {line.split("=")[0].strip() for line in scripts.strip().splitlines()}
    assert names == COMMANDS


def _requirement_name(line: str) -> str:
    return re.split(r"[<>=!~\[;\s]", line.strip(), maxsplit=1)[0].lower()


def test_mpi4py_is_the_mpi_extra_not_a_requirement():
    """`pip install landscape_hpc` needs no MPI library (tests/test_nompi.py runs the package
    without mpi4py); `[mpi]` adds it, and scripts/setup.sh installs it."""
    cfg = _setup_cfg()
    lines = [line for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    required = {_requirement_name(line) for line in lines}
    assert "mpi4py" not in required
    assert {"torch", "h5py", "hydra-core", "submitit"} <= required
    extras = cfg["options.extras_require"]
    assert [_requirement_name(line) for line in extras["mpi"].split()] == ["mpi4py"]
    assert '-e ".[dev,mpi,bench,hf]"' in (ROOT / "scripts" / "setup.sh").read_text()


def test_plotly_is_the_html_extra_and_the_tests_get_it_and_vtk():
    """The HTML figure's plotly is `[html]`, not a requirement; the test tools (what
    scripts/setup.sh installs through [dev]) hold it and vtk, pinned in constraints.txt."""
    cfg = _setup_cfg()
    required = {_requirement_name(x) for x in cfg["options"]["install_requires"].splitlines()}
    assert "plotly" not in required
    extras = cfg["options.extras_require"]
    assert [_requirement_name(line) for line in extras["html"].split()] == ["plotly"]
    for extra in ("test", "dev"):
        assert {"plotly", "vtk"} <= {_requirement_name(x) for x in extras[extra].split()}
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^plotly==\S+$", pins, re.M) and re.search(r"^vtk==\S+$", pins, re.M)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources, installed into a scratch --target folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("landscape_hpc", "conf"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), "."]
    subprocess.run(build, cwd=src, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("landscape_hpc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "landscape_hpc/conf/surface.yaml" in names
    assert "landscape_hpc/conf/geometry/hessian.yaml" in names
    assert "landscape_hpc/conf/experiment/bn_sweep.yaml" in names
    site = tmp / "site"
    install = [*pip, "install", "--no-deps", "--no-build-isolation", "--target", str(site)]
    subprocess.run([*install, str(wheel)], check=True, capture_output=True, timeout=300)
    return site


def _run(site: Path, cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), MPLBACKEND="Agg")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_wheel_runs_from_outside_the_checkout(installed, tmp_path):
    where = _run(
        installed,
        tmp_path,
        [
            sys.executable,
            "-c",
            "import landscape_hpc.cli as c; print(c.__file__); print(c.CONF_DIR)",
        ],
    )
    module, conf = where.stdout.split()
    assert Path(module).is_relative_to(installed) and Path(conf) == installed / "landscape_hpc/conf"

    bin_dir = installed / "bin"
    assert {p.name for p in bin_dir.iterdir()} >= COMMANDS
    for name in ("landscape-surface", "landscape-train", "landscape-mpo", "landscape-sweep"):
        out = _run(installed, tmp_path, [str(bin_dir / name), "--help"])
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"{name} (python -m landscape_hpc."), out.stdout[:200]
        assert "== Config ==" in out.stdout and "Configuration groups" not in out.stdout
    out = _run(installed, tmp_path, [str(bin_dir / "landscape-geometry"), "hessian", "--help"])
    assert out.returncode == 0 and "lanczos_steps" in out.stdout, out.stderr
    out = _run(installed, tmp_path, [str(bin_dir / "landscape-plot"), "--help"])
    assert out.returncode == 0 and "--kind" in out.stdout
    # the multirun preset resolves from the installed configs
    preset = [sys.executable, "-m", "landscape_hpc.mpo", "+experiment=bn_sweep", "--cfg", "job"]
    out = _run(installed, tmp_path, preset)
    assert out.returncode == 0 and "ce_threshold: 5.0" in out.stdout, out.stderr

    surface = [
        str(bin_dir / "landscape-surface"),
        "model=mlp",
        "dataset.max_samples=60",
        "grid.x=[-1,1,3]",
        "grid.y=[-1,1,2]",
        "splits=[train]",
        "plot=false",
        "out=s.h5",
        "hydra.run.dir=run",
    ]
    out = _run(installed, tmp_path, surface)
    assert out.returncode == 0, out.stderr
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["train_loss"].shape == (2, 3)
        assert np.isfinite(f["train_loss"][()]).all()


@pytest.mark.parametrize(
    "module, line, expected",
    [
        ("landscape_hpc.surface", "landscape-surface grid.", "grid.x."),
        ("landscape_hpc.geometry", "landscape-geometry hes", "hessian"),
        ("landscape_hpc.geometry", "landscape-geometry hessian lanczos_t", "lanczos_tol="),
    ],
)
def test_tab_completion_completes_keys_and_experiments(tmp_path, module, line, expected):
    env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
    args = [sys.executable, "-m", module, "-sc", "query=bash"]
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and expected in out.stdout.split(), (out.stdout, out.stderr)
