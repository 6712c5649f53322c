"""The audit log: one structured record per invocation, on ``<client logger>.audit``.

`AuditRecord` is the schema: its fields are the ``extra`` attributes of the log record (and
the keys of a `JsonFormatter` line), stable across releases; new fields may be added, none
is renamed or removed without a deprecation. Prompts and completions appear only when the
client captures content (``logging.capture_content``); API keys never do.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Final, Literal, final

import msgspec

from .._secrets import redact

__all__ = ["AUDIT_EVENT", "AuditRecord", "audit_message", "emit_audit"]

AUDIT_EVENT: Final = "invocation"

_MAX_TAG: Final = 256


@final
class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the audit log says about one invocation (the schema of its records).

    Attributes:
        event: always ``"invocation"``.
        id: this invocation's id (random, unique per invocation; also the span attribute
            ``llm_invocation.invocation.id``).
        provider: the provider that served the invocation (after fallbacks: the last one
            tried).
        model: the model asked of that provider.
        operation: ``"chat"`` or ``"text_completion"``.
        status: ``"ok"``, ``"error"`` or ``"cancelled"`` (by the caller).
        error_code: the error's code (`llm_invocation.ErrorCode`) when ``status`` is
            ``"error"``.
        response_id: the provider's id of the response, when it gave one.
        response_model: the model the provider says answered.
        finish_reason: why the answer ended (``stop``, ``length``, ``tool_calls``...).
        input_tokens: prompt tokens (None: unknown).
        output_tokens: completion tokens (None: unknown).
        usage_estimated: the counts are ours, the provider reported none.
        cost: the cost in dollars, as a decimal string in JSON (None: unknown).
        duration: seconds from the start of the invocation to its end.
        attempts: HTTP attempts made (retries and fallbacks included; 0 when none was let
            through, or the answer came from the cache).
        retries: attempts after a failed one on the same provider.
        fallbacks: times a fallback provider took over.
        attempted: the ``provider:model`` candidates tried, in order.
        cached: the answer came from the response cache.
        stream: the answer was streamed.
        step: the tool loop's step (from 0), for a step of a tool loop.
        tags: the request's metadata values that are strings, numbers or booleans (as text).
        token: the name of the WebSocket token the call came with (``metadata["token"]``).
        trace_id: the trace of the invocation's span, when tracing is on.
        input: the request's messages (only when content is captured).
        output: the answer's text (only when content is captured).
    """

    event: Literal["invocation"] = "invocation"
    id: str
    provider: str
    model: str
    operation: str
    status: Literal["ok", "error", "cancelled"]
    error_code: str | None = None
    response_id: str | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    usage_estimated: bool = False
    cost: Decimal | None = None
    duration: float
    attempts: int
    retries: int
    fallbacks: int
    attempted: list[str]
    cached: bool = False
    stream: bool = True
    step: int | None = None
    tags: dict[str, str] = {}
    token: str | None = None
    trace_id: str | None = None
    input: list[dict[str, Any]] | None = None
    output: str | None = None


def tags_of(metadata: dict[str, Any] | None) -> dict[str, str]:
    """The metadata values fit for the audit log, as text (secrets scrubbed, bounded)."""
    if not metadata:
        return {}
    return {
        str(key): redact(str(value))[:_MAX_TAG]
        for key, value in metadata.items()
        if isinstance(value, str | int | float | bool)
    }


def audit_message(record: AuditRecord) -> str:
    """The human-readable line of an audit record (the fields travel as ``extra``)."""
    tokens = f"{record.input_tokens}+{record.output_tokens} tokens"
    cost = f"${record.cost}" if record.cost is not None else "cost unknown"
    outcome = record.status if record.error_code is None else f"error ({record.error_code})"
    return (
        f"invocation {record.id} {record.provider}:{record.model} {outcome}, {tokens}, "
        f"{cost}, {record.duration:.3f}s, {record.attempts} attempt(s)"
    )


def emit_audit(logger: logging.Logger, record: AuditRecord) -> None:
    """Log ``record`` at INFO on ``logger`` (its fields as the record's ``extra``)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    extra = {field: getattr(record, field) for field in record.__struct_fields__}
    logger.info(audit_message(record), extra=extra)
