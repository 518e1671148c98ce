"""Which paths a command may read and write, decided before any byte moves (issue 33).

Two rules, each checked in one place and called from every command it concerns:
  regular files only   a file the command reads (checkpoint, mask image, MPO checkpoint, surface
                       or directions file) must be a regular file: opening a FIFO blocks forever,
                       a device streams without end, a directory is not the file it was named as
  outputs never alias  an output is never an input, by resolved path (symlinks) or by inode
                       (hard links), nor lies inside an input folder (a trajectory), even with
                       overwrite=true: overwrite replaces an earlier result, never the data it
                       was computed from
And one for what a file says about itself: `printable` escapes bytes read from a file before
they reach a terminal (a lock file's holder), so a file cannot send terminal escapes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from landscape_hpc.errors import UserError

#: what an st_mode that is not a regular file is, for the message
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_kind(path: str | Path) -> Optional[str]:
    """What `path` is when it exists and is not a regular file (after symlinks); None for a
    regular file or a path that does not exist (the caller's own message covers that)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a plain file")


def require_regular(path: str | Path, key: str = "") -> None:
    """A UserError naming config `key` when `path` exists but is not a regular file (checked
    with stat, which never opens it: a FIFO cannot block here)."""
    kind = special_kind(path)
    if kind is not None:
        label = f"{key}={path}" if key else str(path)
        raise UserError(f"{label} is not a regular file ({kind}); pass the path of a file")


#: what an input config key names, for the refusal ("the input checkpoint model.checkpoint=...")
_WHAT = {
    "model.checkpoint": "checkpoint",
    "directions.model2": "checkpoint",
    "directions.model3": "checkpoint",
    "directions.load": "directions file",
    "directions.trajectory": "trajectory",
}


def _identity(path: str | Path) -> tuple[str, Optional[tuple[int, int]]]:
    """The resolved path and, for an existing file, its (st_dev, st_ino)."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
        return real, (st.st_dev, st.st_ino)
    except OSError:
        return real, None


def _inside(real: str, folder: str) -> bool:
    return real != folder and real.startswith(folder.rstrip(os.sep) + os.sep)


def check_no_alias(
    outputs: Mapping[str, str | Path | None], inputs: Mapping[str, str | Path | None]
) -> None:
    """A UserError for the first output (config key -> path) that is an input (same resolved
    path or same inode) or lies inside an input folder; None values are skipped. Called before
    anything is written, whatever overwrite says."""
    resolved = {k: _identity(p) for k, p in inputs.items() if p}
    for out_key, out in outputs.items():
        if not out:
            continue
        real, ident = _identity(out)
        for in_key, (in_real, in_ident) in resolved.items():
            if real == in_real or (ident is not None and ident == in_ident):
                what = _WHAT.get(in_key, "")
                raise UserError(
                    f"{out_key}={out} is the input {what}{' ' if what else ''}"
                    f"{in_key}={inputs[in_key]}; "
                    f"choose another {out_key}="
                )
            if _inside(real, in_real):
                raise UserError(
                    f"{out_key}={out} lies inside the input {_WHAT.get(in_key, 'folder')} "
                    f"{in_key}={inputs[in_key]}; "
                    f"choose another {out_key}="
                )


def printable(text: str, limit: int = 80) -> str:
    """`text` (read from a file) safe for a terminal: control characters and escapes shown as
    Python escapes, cut to `limit` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[:limit] + "..."
