"""User-facing errors: a short message that names the problem and the fix, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: exit status of a run stopped by a user mistake (bad config, missing file, ...)
USER_ERROR_EXIT = 2


class UserError(ValueError):
    """A mistake in the input (config, files, paths, a library call's arguments) that the user
    can fix.

    The message names the problem and the fix; entry points print it without a traceback and exit
    with status 2; from the library it is a ValueError like any other bad argument.
    """


class SharedUserError(UserError):
    """A UserError every MPI rank raised at once (rank 0 found it and told them all,
    parallel.on_master): printed once, by rank 0, and no rank needs to abort the others."""


def check_choice(key: str, value: str, allowed: tuple[str, ...] | list[str]) -> str:
    """Raises a UserError naming `key` and the valid values when `value` is not one of them."""
    if value not in allowed:
        raise UserError(f"{key}={value!r} is not known; valid values: {', '.join(allowed)}")
    return value
