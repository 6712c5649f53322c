"""Logging that follows the configuration: levels, one JSON object per line, handlers on request.

The library never installs a handler on import. `open_client` sets the level of the
``llm_invocation`` logger tree from ``logging.level`` (``LLM_LOG_LEVEL``), unless the
application has set that logger's level itself: an application's own logging setup wins.
`configure_logging` is for programs that want the library to log somewhere (the command line
and ``serve`` use it): one handler on the ``llm_invocation`` logger, text or JSON.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, Final, Literal, final

import msgspec

from .._secrets import redact

if TYPE_CHECKING:
    from ..config import Config

__all__ = [
    "LIBRARY_LOGGER",
    "JsonFormatter",
    "LogFormat",
    "LogLevel",
    "apply_config_level",
    "configure_logging",
    "use_log_format",
]

LIBRARY_LOGGER: Final = "llm_invocation"
"""The root of the library's logger tree."""

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["text", "json"]

_LEVELS: Final[dict[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# The attributes every LogRecord has: anything else on a record came from ``extra``.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)

_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The level this module last gave the library's logger; a different level there means the
# application set one itself, and the configuration leaves it alone.
_applied: int | None = None
_installed_marker: Final = "_llm_invocation_handler"


def level_number(level: str | int) -> int:
    """The `logging` level of a name (``"info"``, any case) or a number.

    Raises:
        ValueError: an unknown level name.
    """
    if isinstance(level, int):
        return level
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}") from None


def apply_config_level(level: str | int) -> bool:
    """Give the ``llm_invocation`` logger tree ``level``, unless the application set its level.

    Returns whether the level was applied.

    Raises:
        ValueError: an unknown level name.
    """
    global _applied
    number = level_number(level)
    logger = logging.getLogger(LIBRARY_LOGGER)
    if logger.level not in (logging.NOTSET, _applied):
        return False
    logger.setLevel(number)
    _applied = number
    return True


def _encode_default(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value, enc_hook=_encode_default)
    return redact(str(value))


_encoder: Final = msgspec.json.Encoder(enc_hook=_encode_default, decimal_format="string")


@final
class JsonFormatter(logging.Formatter):
    """One JSON object per line, with stable field names.

    ``ts`` (UTC, ISO 8601 with milliseconds), ``level`` (lower case), ``logger``,
    ``message``; then every ``extra`` field of the record under its own name; ``exception``
    (the formatted traceback) when the record has one. The message and the traceback are
    scrubbed of anything shaped like a key. Values that JSON cannot hold are written as text.
    """

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(created % 1 * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = redact(record.exc_text)
        if record.stack_info:
            out["stack"] = record.stack_info
        try:
            return _encoder.encode(out).decode()
        except (TypeError, ValueError, OverflowError):
            safe = {
                k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in out.items()
            }
            return _encoder.encode(safe).decode()


def _formatter(format: LogFormat) -> logging.Formatter:
    if format == "json":
        return JsonFormatter()
    formatter = logging.Formatter(_TEXT_FORMAT)
    formatter.converter = time.gmtime
    return formatter


def configure_logging(
    config: Config | None = None,
    *,
    level: str | int | None = None,
    format: LogFormat | None = None,
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Make the library log to ``stream``: one handler on the ``llm_invocation`` logger.

    The level is ``level``, else ``config.logging.level``, else ``info``; the format
    ``format``, else ``config.logging.format``, else ``text``. The handler replaces the one
    a previous call installed (and only that one); records no longer propagate to the root
    logger, so they are not written twice. The level counts as the application's own:
    clients opened later leave it alone.

    Args:
        config: the configuration whose ``logging`` section to follow.
        level: a level name (``"debug"`` ... ``"critical"``) or number.
        format: ``"text"`` or ``"json"`` (`JsonFormatter`).
        stream: where to write (default: standard error).

    Returns:
        The installed handler.

    Raises:
        ValueError: an unknown level name or format.
    """
    global _applied
    section = config.logging if config is not None else None
    chosen_level = level if level is not None else (section.level if section else "info")
    chosen_format = format if format is not None else (section.format if section else "text")
    if chosen_format not in ("text", "json"):
        raise ValueError(f"unknown log format {chosen_format!r}: use 'text' or 'json'")
    number = level_number(chosen_level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_formatter(chosen_format))
    setattr(handler, _installed_marker, True)
    logger = logging.getLogger(LIBRARY_LOGGER)
    for old in list(logger.handlers):
        if getattr(old, _installed_marker, False):
            logger.removeHandler(old)
            old.close()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(number)
    _applied = None  # the application's level now: the configuration leaves it alone
    return handler


def use_log_format(format: LogFormat) -> None:
    """Write the records of the ``llm_invocation`` logger's handlers as JSON lines
    (``"json"``); ``"text"`` leaves their formatters as they are (the command line's)."""
    if format != "json":
        return
    for handler in logging.getLogger(LIBRARY_LOGGER).handlers:
        handler.setFormatter(JsonFormatter())


def record_extras(record: logging.LogRecord) -> Mapping[str, Any]:
    """The ``extra`` fields of ``record``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
