"""Private: where the command line finds its configuration file and keeps its usage ledger.

``--config`` takes a file name or inline YAML/JSON. A value is read as YAML text only when it
clearly is some (it spans lines, holds a ``{``, or reads ``key: value``) and names no file;
anything else is a path, and a missing one is reported as such rather than parsed.

The commands that invoke a model record their usage in a ledger: the configuration's
``ledger_path`` when set, else the user's data folder
(``${XDG_DATA_HOME:-~/.local/share}/llm-invocation/ledger.sqlite3``), so that ``usage``
reports what ``chat`` did. ``--no-log`` or ``LLM_LEDGER=off`` turns that default off.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ..errors import ConfigurationError

__all__ = ["config_source", "default_ledger_path", "ledger_wanted"]

#: ``key: value`` (or ``key:`` ending the text) at the start: a one-line YAML mapping.
_MAPPING: Final = re.compile(r"^\s*[\"']?[\w.-]+[\"']?\s*:(\s|$)")
_OFF: Final = frozenset({"off", "0", "false", "no"})
_ON: Final = frozenset({"on", "1", "true", "yes"})


def config_source(value: str) -> Path | bytes:
    """The ``--config`` value as a file path, or as YAML text (UTF-8 bytes).

    Raises:
        ConfigurationError: the value looks like a file name and no such file exists.
    """
    path = Path(value)
    if _exists(path):
        return path
    if "\n" in value or "{" in value or _MAPPING.match(value):
        return value.encode("utf-8", errors="surrogateescape")
    shown = value if value.isprintable() else ascii(value)
    raise ConfigurationError(
        f"config file not found: {shown}", details={"reason": "config_file_not_found"}
    )


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long, a NUL: not a file then
        return False


def default_ledger_path(environ: Mapping[str, str]) -> Path:
    """The usage ledger the command line keeps when the configuration names none.

    ``$XDG_DATA_HOME/llm-invocation/ledger.sqlite3``; ``~/.local/share`` when
    ``XDG_DATA_HOME`` is unset, empty or relative (as the XDG specification says).
    """
    base = environ.get("XDG_DATA_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "share"
    return root / "llm-invocation" / "ledger.sqlite3"


def ledger_wanted(environ: Mapping[str, str], *, no_log: bool) -> bool:
    """Whether the default ledger records this command's usage.

    Raises:
        ConfigurationError: ``LLM_LEDGER`` is neither on nor off.
    """
    value = environ.get("LLM_LEDGER", "").strip().lower()
    if value and value not in _OFF | _ON:
        raise ConfigurationError(
            "LLM_LEDGER must be 'on' or 'off'",
            details={"reason": "invalid_value", "variable": "LLM_LEDGER"},
        )
    return not no_log and value not in _OFF
