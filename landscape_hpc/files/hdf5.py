"""What every result file of a run shares: where it may be written, how the ranks of an MPI run
reach it, and how a file made for another job is refused.

Two ways for the ranks to reach one file, chosen explicitly by the caller (`collective`):
  collective (io=mpio)  every rank opens it with driver='mpio'; metadata (groups, datasets,
                        attributes, resizes) is created by all ranks together, before work
                        starts; each worker then writes its own raw values (independent I/O)
  gather (io=gather)    rank 0 alone opens it and writes what the workers send back
Either way rank 0 alone decides whether an existing file is resumed, refused or replaced, and
tells the others, so no rank is left waiting when the file is refused.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

import h5py

from landscape_hpc import __version__, paths
from landscape_hpc.errors import UserError, check_choice

#: how a command writes its file: auto (mpio when h5py has MPI, else gather), mpio (every rank
#: writes through parallel HDF5), gather (the master writes what the workers send)
IO_MODES = ("auto", "mpio", "gather")


def mpi_available() -> bool:
    """Whether this process can write through parallel HDF5: an h5py built with MPI, and mpi4py
    (the [mpi] extra), whose communicators h5py's mpio driver takes."""
    from landscape_hpc import parallel  # mpi4py: called by the MPI commands only

    return bool(h5py.get_config().mpi) and parallel.HAVE_MPI4PY


def use_mpio(key: str, mode: str) -> bool:
    """Whether io mode `mode` (the value of config key `key`) means parallel-HDF5 writes; a
    UserError for an unknown mode, or for mpio where h5py was built without MPI or mpi4py is
    not installed."""
    check_choice(key, mode, IO_MODES)
    if mode == "mpio" and not mpi_available():
        from landscape_hpc import parallel

        missing = (
            "this h5py was built without MPI (scripts/setup.sh builds one)"
            if parallel.HAVE_MPI4PY
            else f"mpi4py is not installed ({parallel.INSTALL_MPI})"
        )
        raise UserError(f"{key}=mpio but {missing}; use {key}=gather or {key}=auto")
    return mode == "mpio" or (mode == "auto" and mpi_available())


def check_writable(path: Path, key: str = "out") -> None:
    """Creates the parent folder; a clear error naming config `key` when the file cannot be
    written there."""
    if path.is_dir():
        raise UserError(f"{key}={path} is a directory; pass a file path, e.g. {key}={path}/x.h5")
    paths.require_regular(path, key)  # an existing FIFO or device would block h5py's open
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the folder {path.parent} ({err.strerror}); choose {key}="
        ) from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"cannot write {path}: permission denied; choose a writable {key}=")


def open_read(path: str | Path, key: str = "", missing_hint: str = "") -> h5py.File:
    """An existing HDF5 file, opened read-only; a UserError naming it (as config `key` when
    given) when it does not exist (then `missing_hint` says how to make it) or is not HDF5."""
    path = Path(path)
    label = f"{key}={path}" if key else str(path)
    if path.is_dir():
        raise UserError(f"{label} is a directory, not an HDF5 file; pass the file inside it")
    paths.require_regular(path, key)
    if not path.is_file():
        raise UserError(f"{label} does not exist" + (f"; {missing_hint}" if missing_hint else ""))
    try:
        return h5py.File(path, "r")
    except OSError:
        raise UserError(f"{label} is not an HDF5 file") from None


#: what h5py raises when a file's bytes are damaged (a bad object header, a truncated chunk)
DAMAGED = (OSError, RuntimeError, KeyError, ValueError)


def damaged(path: str | Path, what: str, err: BaseException) -> UserError:
    """The refusal of a file whose structure h5py cannot read."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return UserError(
        f"{path} is damaged: cannot read {what} ({reason}); remake or replace the file"
    )


def read_array(f: h5py.File, name: str, path: str | Path) -> Any:
    """The dataset `name` of `f` as an array; a UserError naming it when it is a group or its
    bytes cannot be read."""
    try:
        node = f.get(name)
    except DAMAGED as err:
        raise damaged(path, name, err) from None
    if not isinstance(node, h5py.Dataset):
        raise UserError(
            f"{path}: {name} is {'missing' if node is None else 'not a dataset'}; "
            "it is not a file this program wrote, or it was edited"
        )
    try:
        return node[()]
    except DAMAGED as err:
        raise damaged(path, name, err) from None


def fingerprint_diff(
    stored: Mapping[str, Any], wanted: Mapping[str, Any], holder: str = "file"
) -> list[str]:
    """One line per key whose value differs: `key: <holder> has X, this run Y`."""
    keys = sorted(set(stored) | set(wanted))
    return [
        f"{k}: {holder} has {stored.get(k)!r}, this run {wanted.get(k)!r}"
        for k in keys
        if stored.get(k) != wanted.get(k)
    ]


def software_versions() -> dict[str, str]:
    """The versions a result file records (root attributes `<name>_version`)."""
    import platform

    import numpy
    import torch

    return {
        "landscape_hpc_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": str(torch.__version__),
        "numpy_version": numpy.__version__,
        "h5py_version": h5py.__version__,
        "hdf5_version": h5py.version.hdf5_version,
    }


def attach_grid_scales(f: h5py.Group, names: list[str]) -> None:
    """Makes xcoordinates (and ycoordinates) HDF5 dimension scales and attaches them to the
    datasets `names` over the grid ((ny, nx): y then x; (nx,): x), so netCDF readers (xarray
    through h5netcdf) see them as coordinates; x and y stay two dimensions on a square grid.
    Metadata only: under mpio every rank calls it, as it creates the datasets."""
    x = f["xcoordinates"]
    y = f.get("ycoordinates")
    if not x.is_scale:
        x.make_scale("xcoordinates")
    if y is not None and not y.is_scale:
        y.make_scale("ycoordinates")
    for name in names:
        ds = f[name]
        scales = (x,) if ds.ndim == 1 else (y, x)
        for dim, scale in zip(ds.dims, scales):
            if scale is not None and len(dim) == 0:
                dim.attach_scale(scale)


def write_header(f: h5py.File, attrs: Mapping[str, Any], collective: bool) -> None:
    """The attributes every new result file carries: version, created, io_driver, the software
    versions (software_versions), and `attrs` (None stored as an empty string)."""
    f.attrs["version"] = __version__
    for key, value in software_versions().items():
        f.attrs[key] = value
    f.attrs["created"] = datetime.datetime.now().isoformat(timespec="seconds")
    f.attrs["io_driver"] = "mpio" if collective else "gather"
    for key, value in attrs.items():
        f.attrs[key] = "" if value is None else value


def close(f: h5py.File, lock: Optional[OutputLock] = None) -> None:
    """Closes a result file (once: a second call does nothing), then releases its lock."""
    if f.id.valid:
        f.close()
    if lock is not None:
        lock.release()


class OutputLock:
    """An advisory lock beside an output file, `<file>.lock`, holding the pid and host of the
    run writing it, so two runs never compute into one file. `acquire()` refuses (UserError
    naming the pid and host) while another run holds it; a lock left by a dead process of this
    host is taken over with a note. Only one process (rank 0) takes it; `release()` removes it.
    fcntl.flock: the kernel drops the lock of a process that dies, however it dies.

    `inside`: the output is a folder (train's out_dir) and the lock is the file of that name
    inside it, `<folder>/<inside>`; the folder must exist."""

    def __init__(self, path: Path, key: str = "out", inside: Optional[str] = None) -> None:
        self.target = Path(path)
        # keyed on the file, not the name: a symlink and its target share one lock
        real = Path(os.path.realpath(self.target))
        self.path = real / inside if inside else real.with_name(real.name + ".lock")
        self.key = key
        self.fd: Optional[int] = None

    def _refuse_hard_links(self) -> None:
        """An output file with other names (hard links) is refused: the lock goes by name, so
        a run given another of its names would write into it at the same time."""
        try:
            links = os.stat(self.target).st_nlink
        except OSError:
            return  # not there yet: created with one name
        if os.path.isfile(self.target) and links > 1:
            raise UserError(
                f"{self.key}={self.target} has {links} hard links: a run given another of its "
                f"names would write into it too; write to a copy (cp it to a new name) instead"
            )

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        import fcntl
        import socket

        host = socket.gethostname()
        self._refuse_hard_links()
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
            except OSError as err:  # a directory or an unwritable folder where the lock goes
                raise UserError(
                    f"cannot use the lock file {self.path} of {self.key}={self.target} "
                    f"({err.strerror}); remove it or choose another {self.key}="
                ) from None
            if paths.special_kind(self.path) is not None:
                os.close(fd)
                raise UserError(
                    f"the lock file {self.path} of {self.key}={self.target} is not a regular "
                    f"file ({paths.special_kind(self.path)}); remove it"
                )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = paths.printable(_holder(fd))
                os.close(fd)
                raise UserError(
                    f"{self.key}={self.target} is being written by another run ({holder}, lock "
                    f"{self.path}); wait for it to end, stop it, or choose another {self.key}="
                ) from None
            try:  # the holder may have removed the file between our open and flock
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        previous = _holder(fd)
        if previous and not _HOLDER.fullmatch(previous):
            os.close(fd)  # not a lock this program wrote: its bytes are shown escaped
            raise UserError(
                f"{self.key}={self.target}: the lock file {self.path} holds "
                f"'{paths.printable(previous)}', not 'pid N on HOST' as a run writes it; if no "
                f"run is writing {self.target}, delete {self.path}"
            )
        if previous and not previous.endswith(f"on {host}"):
            os.close(fd)  # another host's run: flock may not reach it (NFS), so never guess
            raise UserError(
                f"{self.key}={self.target} is locked by a run on another machine ({previous}, "
                f"lock {self.path}); if that run is over, delete {self.path}"
            )
        if previous:
            print(f"note: took over the stale lock of {previous} (no longer running)", flush=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {host}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


#: what a run writes into its lock file (anything else is garbage, never echoed raw)
_HOLDER = re.compile(r"pid \d+ on [\w.\-]+")


def _holder(fd: int) -> str:
    """What a lock file says: "pid N on HOST" (empty when it is new)."""
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def open_locked(
    lock: Any,
    path: Path,
    comm: Any,
    collective: bool,
    decide: Callable[[], bool],
    setup: Callable[[h5py.File, bool], None],
) -> Optional[h5py.File]:
    """open_shared under a held OutputLock: the lock is released where no file comes back (a
    refusal, an error, or a rank that does not write)."""
    try:
        f = open_shared(path, comm, collective, decide, setup)
    except BaseException:
        lock.release()
        raise
    if f is None:
        lock.release()
    return f


def open_shared(
    path: Path,
    comm: Any,
    collective: bool,
    decide: Callable[[], bool],
    setup: Callable[[h5py.File, bool], None],
) -> Optional[h5py.File]:
    """Opens a result file for a job, on the ranks that write it.

    `decide()` runs on rank 0 only: it raises a UserError to refuse the file, or says whether
    the file is resumed (True: opened "r+") or (re)created (False: "w"). `setup(f, resumed)`
    then creates what the file lacks, on every rank that opened it, and the layout is flushed
    to disk before any work starts (so a run killed later leaves a readable file).

    collective: every rank of `comm` calls this and gets the file (driver='mpio'). gather (or
    `comm` None, one process): rank 0 gets the file, the other ranks None; a refusal on rank 0
    is raised on every rank either way."""
    from landscape_hpc import parallel  # mpi4py: only where a communicator is given

    def on_one_rank() -> h5py.File:
        resumed = decide()
        return _set_up(h5py.File(path, "r+" if resumed else "w"), setup, resumed)

    if comm is None:
        return on_one_rank()
    if collective:
        resumed = parallel.on_master(comm, decide)
        f = h5py.File(path, "r+" if resumed else "w", driver="mpio", comm=comm)
        return _set_up(f, setup, resumed)
    return parallel.on_master(comm, on_one_rank, share=False)


def _set_up(f: h5py.File, setup: Callable[[h5py.File, bool], None], resumed: bool) -> h5py.File:
    try:
        setup(f, resumed)
        f.flush()  # collective under mpio: every rank is here
    except BaseException:
        f.close()
        raise
    return f
