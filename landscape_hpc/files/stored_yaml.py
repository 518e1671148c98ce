"""YAML read from a file (a surface file's stored `config`), parsed with limits (issue 33): a
file is data, and a few hundred bytes of nested aliases (a "billion laughs") expand to 10^9
strings when the parsed document is walked, so a stored config may not use aliases at all (the
commands never write one: OmegaConf.to_yaml emits none) and may not exceed MAX_BYTES.
"""

from __future__ import annotations

from typing import Any

import yaml

from landscape_hpc.errors import UserError

#: the largest stored config read (a command's resolved config is a few KiB)
MAX_BYTES = 1 << 20


class InvalidYAML(UserError):
    """The text is not YAML at all (a reader may fall back to its defaults)."""


def load_limited(text: str, what: str) -> Any:
    """`text` parsed as plain YAML (safe_load); a UserError naming `what` (e.g. "surface=s.h5:
    its `config` attribute") when it is larger than MAX_BYTES or holds an alias (checked on the
    parser's events, before anything is built), InvalidYAML when it is not YAML."""
    size = len(text.encode("utf-8", "replace"))
    if size > MAX_BYTES:
        raise UserError(
            f"{what} is {size} bytes, over the {MAX_BYTES} a stored config may hold (a "
            "command's config is a few KiB)"
        )
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise UserError(
                    f"{what} uses a YAML alias (*{str(event.anchor)[:40]}, line {line}); a "
                    "stored config may not use aliases (nested ones expand without bound)"
                )
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InvalidYAML(f"{what} is not valid YAML ({reason})") from None
