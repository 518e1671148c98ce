"""User-facing errors: a short message that names the problem and the fix, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: exit status of a run stopped by a user mistake (bad config, missing file, ...)
USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake in the input (config, files, paths) that the user can fix.

    The message names the problem and the fix; entry points print it without a traceback and exit
    with status 2.
    """


def exit_on_user_error(fn: F) -> F:
    """Wraps an entry point: a `UserError` becomes `error: <message>` on stderr and exit status 2.

    SystemExit is a BaseException, so it passes through Hydra's own error reporting untouched.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(USER_ERROR_EXIT)

    return wrapper  # type: ignore[return-value]


def check_choice(key: str, value: str, allowed: tuple[str, ...] | list[str]) -> str:
    """Raises a UserError naming `key` and the valid values when `value` is not one of them."""
    if value not in allowed:
        raise UserError(f"{key}={value!r} is not known; valid values: {', '.join(allowed)}")
    return value
