"""How every command starts: the schemas in Hydra's ConfigStore, one output folder for all MPI
ranks, the tuned allocator, and one way to end: a user mistake prints `error: ...` and exits 2,
Ctrl-C prints how to resume and exits 130, and an error on one MPI rank ends them all.

    main = hydra_command("surface", _run)       # _run(cfg: SurfaceConfig, comm) -> None
    if __name__ == "__main__":
        main()

The Hydra commands (surface, train, mpo, sweep, geometry <experiment>) are built by
`hydra_command`; the argparse ones (plot, sweep report) return `exit_status(body)`.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _conf_dir() -> Path:
    """The repository's top-level conf/ in a source checkout or an editable install; in an
    installed wheel the same files as the package data landscape_hpc/conf/ (setup.cfg maps
    conf/ to the package landscape_hpc.conf at build time)."""
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return installed if (installed / "surface.yaml").is_file() else package.parent / "conf"


#: conf/ as an absolute path: Hydra reads a relative config_path against the calling module,
#: which differs between `python -m`, the geometry dispatcher and submitit's pickled task
CONF_DIR = _conf_dir()

#: hydra/help=landscape, selected by every command's YAML (`override hydra/help: landscape`)
HELP = {
    "app_name": "${hydra.job.name}",
    "header": "${hydra.help.app_name}",
    "footer": (
        "Every key, its type and meaning: the dataclasses in landscape_hpc/config/.\n"
        "Hydra's own options: --hydra-help. Tab completion (bash), once per shell:\n"
        '  eval "$$(${hydra.help.app_name} -sc install=bash)"'
    ),
    "template": (
        "${hydra.help.header}\n\n== Config ==\nOverride any key with key=value"
        " (a list: key=[a,b]); the defaults:\n\n$CONFIG\n${hydra.help.footer}\n"
    ),
}

#: exit status of a run stopped by Ctrl-C (128 + SIGINT)
INTERRUPTED_EXIT = 130


def register_configs() -> None:
    """Stores every schema (`<name>_schema`), the mask kinds, and one `model=<name>` /
    `dataset=<name>` option per registry entry, so a name is known in exactly one place."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from landscape_hpc.config import SCHEMAS, DatasetConfig, MaskConfig, ModelConfig
    from landscape_hpc.data import DATASET_NAMES
    from landscape_hpc.models import MODEL_KWARGS, MODEL_NAMES

    # ${csv:${sweep.models}} -> "mpo_cnn,mpo_cnn_bn": a list key as a Hydra sweep over its values
    if not OmegaConf.has_resolver("csv"):
        OmegaConf.register_new_resolver("csv", lambda values: ",".join(str(v) for v in values))
    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=schema)
    for kind in ("builtin", "image", "random"):
        size = {"builtin": 20, "image": 50, "random": 30}[kind]
        cs.store(group="mask", name=kind, node=MaskConfig(kind=kind, size=size))
    for name in MODEL_NAMES:
        kwargs = dict(MODEL_KWARGS.get(name, {}))
        cs.store(group="model", name=name, node=ModelConfig(name=name, kwargs=kwargs))
    for name in DATASET_NAMES:
        cs.store(group="dataset", name=name, node=DatasetConfig(name=name))
    # `--help`: the command's own header (hydra.help.header in its YAML: what it does, its main
    # keys and groups), the composed config, and the footer; never Hydra's list of every group
    cs.store(group="hydra/help", name="landscape", node=HELP)


def compose_config(name: str, overrides: list[str] = (), config_dir: Path = CONF_DIR) -> Any:
    """conf/<name>.yaml with command-line style overrides, as the command's dataclass: what the
    command would run with, for scripts and tests (keys that read Hydra's run folder, such as
    out_dir, must be overridden)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    register_configs()
    with initialize_config_dir(str(config_dir), version_base="1.3"):
        return OmegaConf.to_object(compose(name, overrides=list(overrides)))


def exit_status(body: Callable[[], None]) -> int:
    """Runs `body()`: 0 when it ends; a UserError prints `error: <message>` on stderr and gives
    2; Ctrl-C prints `interrupted: ...` and gives 130 (what is written is kept: every command
    resumes). Any other exception propagates, with its traceback."""
    from landscape_hpc.errors import USER_ERROR_EXIT, UserError

    try:
        body()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print(
            "interrupted: what was computed is kept; run the same command again to resume",
            file=sys.stderr,
            flush=True,
        )
        return INTERRUPTED_EXIT
    return 0


Command = Callable[[Any, Any], None]


def hydra_command(
    config_name: str, command: Command, config_dir: Path = CONF_DIR
) -> Callable[[], None]:
    """The `main()` of a Hydra command: conf/<config_name>.yaml composed over its schema, the
    config as its dataclass, then `command(cfg, comm)` on every rank of the MPI world."""

    def task(cfg: Any) -> None:
        from landscape_hpc import parallel

        def body() -> None:
            comm = parallel.world()
            with parallel.abort_on_error(comm):  # one failing rank ends them all, none hangs
                command(_typed(cfg), comm)

        tune_allocator()  # here, not at import: a submitit job calls the task, not main()
        status = exit_status(body)
        if status:
            sys.exit(status)

    # Hydra names the job (hydra.job.name, <job>.log) after the task's module: the command's,
    # or the command's name when it runs as __main__ (never `__main__.log` or `cli.log`)
    module = command.__module__
    task.__module__ = f"landscape_hpc.{config_name}" if module == "__main__" else module
    task.__name__ = task.__qualname__ = command.__name__

    def main() -> None:
        import hydra

        register_configs()
        refuse_ranks_without_mpi4py()
        share_hydra_run_dir()
        problem = check_overrides(config_name, config_dir)
        if problem is not None:
            from landscape_hpc import parallel
            from landscape_hpc.errors import USER_ERROR_EXIT

            if parallel.world().Get_rank() == 0:  # every rank finds it: one says it
                print(f"error: {problem}", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT)
        hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(task)()

    main.__doc__ = f"Runs the `{config_name}` command (conf/{config_name}.yaml)."
    return main


#: Hydra's lines that say nothing about the mistake
_HYDRA_NOISE = ("See https", "Set the environment", "full_key", "reference_type", "object_type")


def check_overrides(
    config_name: str, config_dir: Path = CONF_DIR, argv: list[str] | None = None
) -> str | None:
    """Composes the config with the command line's overrides as Hydra will: the reason, as one
    line, when Hydra would refuse them (a misspelled key, a value of the wrong type, an unknown
    option, bad override syntax), else None. Command lines with flags (--cfg, --help, -m, ...)
    are left to Hydra, as are hydra.* overrides."""
    argv = sys.argv if argv is None else argv
    if any(a.startswith("-") for a in argv[1:]):
        return None
    overrides = [a for a in argv[1:] if not a.lstrip("+~").startswith(("hydra.", "hydra/"))]
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        return _one_line(err)
    except Exception:  # anything else: Hydra reports it as it always has
        return None
    return None


def _one_line(err: BaseException) -> str:
    """Hydra's multi-line message (and its cause's) as one line."""
    lines = str(err).splitlines()
    if err.__cause__ is not None:
        lines += str(err.__cause__).splitlines()
    kept: list[str] = []
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith(_HYDRA_NOISE) or line in kept:
            continue
        if line.startswith(("Config search path", "provider=")):
            break
        kept.append(line)
    text = ""
    for i, line in enumerate(kept):  # a list after "Available options in 'model':" as a, b, c
        in_list = i > 0 and not kept[i - 1].endswith(":") and _listed(kept, i - 1)
        text += (", " if in_list else " " if text else "") + line
    return f"{text} (check the key's spelling and the value's type; --cfg job lists every key)"


def _listed(lines: list[str], i: int) -> bool:
    """Whether lines[i] is an item of a list that a line ending with ':' opened."""
    while i >= 0 and not lines[i].endswith(":"):
        if " " in lines[i]:
            return False
        i -= 1
    return i >= 0


def _typed(cfg: Any) -> Any:
    """The config as its dataclass. Every rank composes the same config, so its refusals are a
    SharedUserError (said once, by rank 0): a mandatory key left without a value, an
    interpolation that does not resolve (an unset variable, an unknown resolver, a cycle), a
    float that is not finite, a seed outside 0 to SEED_MAX."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    from landscape_hpc.errors import SharedUserError, check_seed

    try:
        typed = OmegaConf.to_object(cfg)
    except MissingMandatoryValue as err:
        key = err.full_key or "a key"
        raise SharedUserError(
            f"{key} is required and has no value; pass {key}=... on the command line"
        ) from None
    except RecursionError:
        raise SharedUserError(
            "an interpolation ${...} refers to itself (a cycle); give the key a plain value"
        ) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "a key"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SharedUserError(
            f"{key}: its interpolation does not resolve ({reason}); give {key} a plain value "
            "or fix the ${...} (quote the override in the shell)"
        ) from None
    for key, value in _floats(typed, ""):
        if not math.isfinite(value):
            raise SharedUserError(f"{key}={value} must be a finite number")
    # the command line's own key first (seed=-1, not the model.init_seed=${seed} it sets)
    for key, value in sorted(_seeds(typed, ""), key=lambda kv: kv[0].count(".")):
        check_seed(value, key, SharedUserError)
    return typed


#: config keys that hold seeds (sweep.seeds: a list of them)
SEED_KEYS = ("seed", "init_seed", "seeds")


def _floats(node: Any, prefix: str) -> list[tuple[str, float]]:
    """(key, value) of every float in a config dataclass, lists included (not the kwargs a
    model or data set builder takes: those are the builder's to check)."""
    return [(k, v) for k, v in _leaves(node, prefix) if isinstance(v, float)]


def _seeds(node: Any, prefix: str) -> list[tuple[str, Any]]:
    """(key, value) of every seed (a key of SEED_KEYS, or an item of one) in a config."""
    return [
        (k, v)
        for k, v in _leaves(node, prefix)
        if k.rsplit(".", 1)[-1].split("[", 1)[0] in SEED_KEYS and v is not None
    ]


def _leaves(node: Any, prefix: str) -> list[tuple[str, Any]]:
    """(key, value) of every value that is neither a list nor a dataclass in a config
    dataclass (not inside the kwargs a model or data set builder takes)."""
    if isinstance(node, (list, tuple)):
        return [kv for i, v in enumerate(node) for kv in _leaves(v, f"{prefix}[{i}]")]
    if dataclasses.is_dataclass(node):
        return [
            kv
            for f in dataclasses.fields(node)
            if f.name != "kwargs"
            for kv in _leaves(getattr(node, f.name), f"{prefix}.{f.name}".lstrip("."))
        ]
    return [(prefix, node)]


def refuse_ranks_without_mpi4py() -> None:
    """Exits 2 with one `error:` line (said by the launcher's rank 0) where mpirun or srun
    started this process as one of several ranks but mpi4py is missing: each rank would run the
    whole job alone and write the same file. A no-op with mpi4py, or on one process."""
    from landscape_hpc import parallel
    from landscape_hpc.errors import USER_ERROR_EXIT, UserError

    try:
        parallel.world()
    except UserError as err:
        if parallel.launched_ranks()[1] == 0:
            print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(USER_ERROR_EXIT)


def share_hydra_run_dir(argv: list[str] | None = None) -> None:
    """Under mpirun every rank runs the Hydra app. Rank 0 picks the output folder (unless the
    command gives hydra.run.dir) and broadcasts it, so all ranks agree; the other ranks write no
    Hydra logs or .hydra folder of their own. A no-op on one process."""
    argv = sys.argv if argv is None else argv
    from landscape_hpc import parallel

    comm = parallel.world()
    if comm.Get_size() == 1 or any(a in ("-m", "--multirun") for a in argv[1:]):
        return
    run_dir = None
    if not any(a.startswith("hydra.run.dir=") for a in argv[1:]):
        stamp = datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
        run_dir = comm.bcast(f"outputs/{stamp}" if comm.Get_rank() == 0 else None, root=0)
        argv.append(f"hydra.run.dir={run_dir}")
    if comm.Get_rank() > 0:
        argv.extend(["hydra/job_logging=disabled", "hydra.output_subdir=null"])


#: glibc mallopt parameters (malloc.h) and the values the commands set
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MALLOPT = ((_M_MMAP_THRESHOLD, 32 * 2**20), (_M_TRIM_THRESHOLD, 2**30), (_M_TOP_PAD, 64 * 2**20))


def tune_allocator() -> bool:
    """glibc: keep freed blocks up to 32 MiB in the heap and do not trim it, so the activation
    buffers of one forward are reused by the next instead of being unmapped and page-faulted back
    in, zeroed (100–160 faults per sample; mpo_cnn evaluates 1.5–2× faster without them,
    docs/benchmarks.md). Called at the start of every command, never on import. The heap then
    keeps up to 1 GiB of freed memory. LANDSCAPE_HPC_MALLOC=default leaves malloc as it is.
    Returns whether the settings were applied (False without glibc)."""
    import ctypes
    import os

    if os.environ.get("LANDSCAPE_HPC_MALLOC", "tuned") == "default":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(option, value) == 1 for option, value in _MALLOPT)
