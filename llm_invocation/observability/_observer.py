"""`Observer`: what the invocation layer tells about each invocation (audit, spans, metrics).

The invoker holds one. `start` is called when an invocation begins, `finished` once when it
ends however it ended; the hooks in between go to the invocation's `InvocationTrace`, which
exists only when telemetry is on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, final

from .._secrets import redact
from ._audit import AuditRecord, emit_audit, tags_of
from ._logging import apply_config_level
from ._telemetry import (
    InvocationTrace,
    Telemetry,
    capture_from_env,
    message_parts,
    operation_of,
    provider_system,
)

if TYPE_CHECKING:
    from ..config import Config
    from ..errors import LLMError
    from ..types import Request, Response, Usage

__all__ = ["DEFAULT_LOGGER", "Observer", "open_observer"]

DEFAULT_LOGGER: Final = "llm_invocation"


def _last_resort_takes_info() -> bool:
    last = logging.lastResort
    return last is not None and last.level <= logging.INFO


@final
class Observer:
    """A client's audit log and telemetry.

    Args:
        logger: the client's logger (default ``llm_invocation``); audit records go to its
            child ``audit``, the invocation layer's own records to its child ``invocation``.
        telemetry: the client's spans and metrics, or None (off).
        capture_content: put the prompt and the answer in audit records.
    """

    __slots__ = (
        "_failure_logged",
        "audit_log",
        "capture_content",
        "invocation_log",
        "logger",
        "telemetry",
    )

    def __init__(
        self,
        *,
        logger: logging.Logger | None = None,
        telemetry: Telemetry | None = None,
        capture_content: bool = False,
    ) -> None:
        self.logger = logger if logger is not None else logging.getLogger(DEFAULT_LOGGER)
        self.audit_log = self.logger.getChild("audit")
        self.invocation_log = self.logger.getChild("invocation")
        self.telemetry = telemetry
        self.capture_content = capture_content
        self._failure_logged = False

    def start(
        self, request: Request, provider: str, model: str, invocation_id: str
    ) -> tuple[float, InvocationTrace | None]:
        """The invocation ``invocation_id`` begins: its start (monotonic) and its trace
        (None: off)."""
        telemetry = self.telemetry
        trace = None
        if telemetry is not None:
            try:
                trace = telemetry.invocation(request, provider, model, invocation_id=invocation_id)
            except Exception as exc:  # noqa: BLE001 - telemetry never fails a call
                self._failed(exc)
        return time.monotonic(), trace

    def finished(
        self,
        *,
        invocation_id: str,
        started: float,
        trace: InvocationTrace | None,
        request: Request,
        provider: str,
        model: str,
        status: Any,
        error: LLMError | None,
        response: Response | None,
        usage: Usage | None,
        attempts: int,
        retries: int,
        attempted: list[str],
        cached: bool,
        step: int | None,
    ) -> None:
        """The invocation ended: end its trace, then write its audit record.

        Neither ever fails the call: a failure here is logged (once per client).
        """
        try:
            if trace is not None:
                trace.finish(
                    status,
                    error=error,
                    response=response,
                    usage=usage,
                    provider=provider,
                    model=model,
                    attempted=attempted,
                )
            log = self.audit_log
            # Nobody to read it (INFO disabled, or no handler on the way to the root and
            # none of last resort for INFO): the record is not built.
            if not log.isEnabledFor(logging.INFO) or not (
                log.hasHandlers() or _last_resort_takes_info()
            ):
                return
            metadata = request.metadata
            token = metadata.get("token") if metadata else None
            capture = self.capture_content
            record = AuditRecord(
                id=invocation_id,
                provider=provider,
                model=model,
                operation=trace.operation if trace is not None else operation_of(request),
                status=status,
                error_code=error.code.value if error is not None and status == "error" else None,
                response_id=(response.id or None) if response is not None else None,
                response_model=response.model if response is not None else None,
                finish_reason=response.finish_reason if response is not None else None,
                input_tokens=usage.prompt_tokens if usage is not None else None,
                output_tokens=usage.completion_tokens if usage is not None else None,
                usage_estimated=usage.estimated if usage is not None else False,
                cost=usage.cost if usage is not None else None,
                duration=time.monotonic() - started,
                attempts=attempts,
                retries=retries,
                fallbacks=max(0, len(attempted) - 1),
                attempted=list(attempted),
                cached=cached,
                stream=request.stream,
                step=step,
                tags=tags_of(metadata),
                token=token if isinstance(token, str) else None,
                trace_id=trace.trace_id if trace is not None else None,
                input=message_parts(request.messages) if capture else None,
                output=redact(response.text) if capture and response is not None else None,
            )
            emit_audit(log, record)
        except Exception as exc:  # noqa: BLE001 - observing never fails a call
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not self._failure_logged:
            self._failure_logged = True
            self.logger.getChild("observability").error(
                "recording an invocation failed (%s: %s); further failures are not logged",
                type(exc).__name__,
                redact(str(exc))[:200],
            )


def open_observer(
    config: Config,
    *,
    logger: logging.Logger | None,
    servers: Mapping[str, str | None],
    systems: Mapping[str, str],
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Observer:
    """A client's observer, made when it opens: the ``logging`` section's level applied to
    the library's loggers (see `apply_config_level`), telemetry when OpenTelemetry is set up.

    Raises:
        TypeError: ``logger`` is not a `logging.Logger`.
    """
    if logger is not None and not isinstance(logger, logging.Logger):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise TypeError(f"logger must be a logging.Logger, not {type(logger).__name__}")
    section = config.logging
    apply_config_level(section.level)
    capture = section.capture_content or capture_from_env()
    telemetry = Telemetry.open(
        capture_content=capture,
        propagate=section.trace_propagation,
        servers=servers,
        systems={name: provider_system(system) for name, system in systems.items()},
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    return Observer(logger=logger, telemetry=telemetry, capture_content=capture)
