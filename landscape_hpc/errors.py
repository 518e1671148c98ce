"""User-facing errors: a short message that names the problem and the fix, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral
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


class UserTypeError(UserError, TypeError):
    """A UserError about the kind of a thing (a batch the engine cannot read, a metric returning
    neither per-sample values nor a (sum, count) pair): a TypeError as well."""


class SharedUserError(UserError):
    """A UserError every MPI rank raised at once (rank 0 found it and told them all,
    parallel.on_master): printed once, by rank 0, and no rank needs to abort the others."""


#: the most points along one axis of a sampled path (distances along a ray, positions along a
#: tunnel): each is a full evaluation of the loss over the data, and 10^5 already resolves a
#: path to 1e-5 of its length (issue 33, limits stated)
MAX_PATH_POINTS = 100_000
#: the most evaluations of the loss one geometry run is allowed (rays × distances × optima,
#: grid points): each is at least a forward pass over the data, so 10^7 is days of work
MAX_EVALUATIONS = 10_000_000
#: the largest seed a config or a library call may hold (issue 33, limits stated): torch's
#: generators take up to 2**64 - 1 and numpy's none below 0, and a seed also derives others
#: (seed + 1, seed + 2 for an MPO plane's vectors, seed · 1000003 + step for its batches), which
#: must stay in range too
SEED_MAX = 2**32 - 1


def check_at_most(key: str, value: int, limit: int, why: str) -> None:
    """A UserError naming `key` when `value` exceeds `limit`; `why` says what the bound keeps
    in check (memory, time)."""
    if value > limit:
        raise UserError(f"{key}={value} is over the limit of {limit}: {why}; give a smaller {key}")


def check_seed(value: Any, key: str, error: type[UserError] = UserError) -> int:
    """`value` as an int when it is an integer (numpy's too, not a bool) from 0 to SEED_MAX;
    otherwise `error` (a UserError) naming `key`, the range and why."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not 0 <= value <= SEED_MAX:
        raise error(
            f"{key}={value!r} is outside the seeds this program takes, 0 to {SEED_MAX} "
            "(2**32 - 1: the random generators and the streams derived from a seed, such "
            "as seed + 1, stay within their range); give a seed in that range"
        )
    return int(value)


def check_seeds(**seeds: Any) -> None:
    """check_seed of each keyword's value, named by its keyword."""
    for key, value in seeds.items():
        check_seed(value, key)


def check_choice(key: str, value: str, allowed: tuple[str, ...] | list[str]) -> str:
    """Raises a UserError naming `key` and the valid values when `value` is not one of them."""
    if value not in allowed:
        raise UserError(f"{key}={value!r} is not known; valid values: {', '.join(allowed)}")
    return value
