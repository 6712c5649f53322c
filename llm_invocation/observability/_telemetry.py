"""OpenTelemetry spans and metrics under the GenAI semantic conventions (optional).

`Telemetry.open` is called once when a client opens. It returns None (and the invocation
layer pays one attribute check per hook) unless ``opentelemetry-api`` is installed and a
tracer provider or a meter provider is set: passed to `open_client`, or set globally with
``opentelemetry.trace.set_tracer_provider`` / ``opentelemetry.metrics.set_meter_provider``.
Spans and metrics are per invocation and per attempt, never per chunk.

Spans:

* ``{gen_ai.operation.name} {gen_ai.request.model}`` (kind CLIENT), one per invocation, a
  child of the caller's current span;
* ``{http.request.method}`` (kind CLIENT), one per HTTP attempt, a child of the invocation's
  (retries and fallbacks each get one);
* ``execute_tool {gen_ai.tool.name}`` (kind INTERNAL) per tool call, a child of the span
  that was current where the tools were asked for; an MCP tool's call at the server is its
  child ``tools/call {gen_ai.tool.name}`` (kind CLIENT).

Prompts, completions, tool arguments and results are captured only when asked
(``logging.capture_content``, or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, final

from .._secrets import redact

if TYPE_CHECKING:
    from opentelemetry.metrics import (
        Counter,
        Histogram,
        Meter,
        ObservableUpDownCounter,
        Observation,
    )
    from opentelemetry.trace import Span, Tracer

    from ..errors import LLMError
    from ..types import Message, Request, Response, ToolCall, Usage

__all__ = [
    "CAPTURE_ENV",
    "InvocationTrace",
    "Telemetry",
    "capture_from_env",
    "message_parts",
    "provider_system",
    "traceparent_of",
]

log = logging.getLogger("llm_invocation.observability")

CAPTURE_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
SCOPE: Final = "llm_invocation"

_TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
_SECONDS_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
_FIRST_CHUNK_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip

# ``gen_ai.provider.name`` of the conventions, by the name prices are looked up under (a
# codec's kind or a compatible preset's name); others are named as configured.
_SYSTEMS: Final[Mapping[str, str]] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "azure": "azure.ai.openai",
    "groq": "groq",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "perplexity": "perplexity",
}


def provider_system(name: str) -> str:
    """The conventions' ``gen_ai.provider.name`` for a provider kind or preset ``name``."""
    return _SYSTEMS.get(name, name)


def capture_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard variable asks for message content in telemetry."""
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_ENV, "").strip().lower() in ("true", "1", "yes")


def traceparent_of(span: Span) -> str | None:
    """The W3C ``traceparent`` of ``span`` (None: it is not recording a valid trace)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _text_of(message: Message) -> str:
    try:
        return message.text
    except Exception:  # noqa: BLE001 - content of a shape we do not render is left out
        return ""


def message_parts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """``messages`` in the conventions' shape (role, parts), secrets scrubbed."""
    out: list[dict[str, Any]] = []
    for message in messages:
        parts: list[dict[str, Any]] = []
        text = _text_of(message)
        if text:
            parts.append({"type": "text", "content": redact(text)})
        parts.extend(
            {
                "type": "tool_call",
                "id": call.id,
                "name": call.name,
                "arguments": redact(call.arguments),
            }
            for call in message.tool_calls or ()
        )
        if message.tool_call_id is not None:
            parts.append({"type": "tool_call_response", "id": message.tool_call_id})
        out.append({"role": str(message.role), "parts": parts})
    return out


def _output_parts(response: Response) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for choice in response.choices:
        parts = message_parts([choice.message])[0]["parts"]
        out.append(
            {"role": "assistant", "parts": parts, "finish_reason": choice.finish_reason or ""}
        )
    return out


def _server(base_url: str | None) -> tuple[str | None, int | None]:
    if not base_url:
        return None, None
    try:
        parts = urllib.parse.urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None, None
    return parts.hostname, port


def operation_of(request: Request) -> str:
    """``chat``, or ``text_completion`` for a legacy completion request."""
    metadata = request.metadata
    if metadata is not None and metadata.get("endpoint") == "completions":
        return "text_completion"
    return "chat"


@final
class _Instruments:
    """The client's metric instruments (made once, at open)."""

    def __init__(self, meter: Meter) -> None:
        self.token_usage: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.first_chunk: Histogram = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time from issuing the request to receiving the first chunk.",
            explicit_bucket_boundaries_advisory=_FIRST_CHUNK_BUCKETS,
        )
        self.retries: Counter = meter.create_counter(
            "llm_invocation.retries",
            unit="{retry}",
            description="Attempts made after a failed one, on the same provider.",
        )
        self.fallbacks: Counter = meter.create_counter(
            "llm_invocation.fallbacks",
            unit="{fallback}",
            description="Times a fallback provider took over an invocation.",
        )
        self.rate_limit_wait: Histogram = meter.create_histogram(
            "llm_invocation.rate_limit.wait",
            unit="s",
            description="Time an attempt waited for rate-limit capacity.",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.spend: Counter = meter.create_counter(
            "llm_invocation.budget.spend",
            unit="{USD}",
            description="Dollars spent, as settled against the budgets.",
        )
        # Invocations in progress, counted here and observed when metrics are collected:
        # nothing is recorded per invocation.
        self.open: dict[tuple[tuple[str, Any], ...], int] = {}
        self.open_streams: ObservableUpDownCounter = meter.create_observable_up_down_counter(
            "llm_invocation.streams.open",
            callbacks=[self._observe_open],
            unit="{stream}",
            description="Invocations in progress.",
        )
        self.tool_calls: Counter = meter.create_counter(
            "llm_invocation.tool.calls",
            unit="{call}",
            description="Tool calls executed, by tool and outcome.",
        )

    def _observe_open(self, options: Any) -> Iterator[Observation]:
        del options
        from opentelemetry.metrics import Observation

        for key, count in list(self.open.items()):
            yield Observation(count, dict(key))

    def opened(self, key: tuple[tuple[str, Any], ...], change: int) -> None:
        self.open[key] = self.open.get(key, 0) + change


@final
class Telemetry:
    """A client's tracer, instruments and content rule; see the module documentation.

    Made by `open`; ``tracer`` or ``instruments`` is None when that signal is off.
    """

    __slots__ = (
        "_restarts",
        "_statistics",
        "_systems",
        "capture_content",
        "instruments",
        "propagate",
        "servers",
        "tracer",
    )

    def __init__(
        self,
        tracer: Tracer | None,
        meter: Meter | None,
        *,
        capture_content: bool,
        propagate: bool,
        servers: Mapping[str, str | None],
        systems: Mapping[str, str],
    ) -> None:
        self.tracer = tracer
        self.instruments = _Instruments(meter) if meter is not None else None
        self.capture_content = capture_content
        self.propagate = propagate and tracer is not None
        self.servers = {name: _server(url) for name, url in servers.items()}
        self._systems = dict(systems)
        self._restarts: Any = None
        self._statistics: Any = None
        if meter is not None:
            self._restarts = meter.create_observable_counter(
                "llm_invocation.actor.restarts",
                callbacks=[self._observe_restarts],
                unit="{restart}",
                description="Actor and supervisor restarts in the client's supervision tree.",
            )

    @classmethod
    def open(
        cls,
        *,
        capture_content: bool = False,
        propagate: bool = False,
        servers: Mapping[str, str | None] | None = None,
        systems: Mapping[str, str] | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> Telemetry | None:
        """The client's telemetry, or None when OpenTelemetry is absent or nothing is set.

        Args:
            capture_content: put prompts and completions in spans (the standard variable
                turns it on too).
            propagate: send the attempt span's ``traceparent`` header to the providers.
            servers: the base URL of each provider (``server.address``, ``server.port``).
            systems: each provider's name for the conventions (``gen_ai.provider.name``).
            tracer_provider: the tracer provider (default: the global one, if set).
            meter_provider: the meter provider (default: the global one, if set).
        """
        explicit = tracer_provider is not None or meter_provider is not None
        if not explicit and "opentelemetry" not in sys.modules:
            return None  # nobody imported it: no provider can be set, nothing to import
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            return None
        from .._version import __version__

        tracer: Tracer | None = None
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        if not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            tracer = provider.get_tracer(SCOPE, __version__)
        meter: Meter | None = None
        meters = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        if type(meters).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider"):
            meter = meters.get_meter(SCOPE, __version__)
        if tracer is None and meter is None:
            return None
        return cls(
            tracer,
            meter,
            capture_content=capture_content or capture_from_env(),
            propagate=propagate,
            servers=servers or {},
            systems=systems or {},
        )

    # -- the runtime's restarts ----------------------------------------------------------------

    def watch_restarts(self, statistics: Any) -> None:
        """Report ``statistics().restarts`` as ``llm_invocation.actor.restarts`` (None:
        stop, the client is closed)."""
        self._statistics = statistics

    def _observe_restarts(self, options: Any) -> Iterator[Any]:
        del options
        statistics = self._statistics
        if statistics is None:
            return
        from opentelemetry.metrics import Observation

        try:
            restarts = statistics().restarts
        except Exception:  # noqa: BLE001 - a closed runtime reports nothing
            return
        yield Observation(restarts)

    # -- attributes ----------------------------------------------------------------------------

    def system(self, provider: str) -> str:
        return self._systems.get(provider, provider)

    def base_attributes(self, operation: str, provider: str, model: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": self.system(provider),
            "gen_ai.request.model": model,
        }
        address, port = self.servers.get(provider, (None, None))
        if address is not None:
            attributes["server.address"] = address
            attributes["server.port"] = port
        return attributes

    # -- spans ---------------------------------------------------------------------------------

    def invocation(
        self, request: Request, provider: str, model: str, *, invocation_id: str
    ) -> InvocationTrace:
        """Start observing one invocation (its span is a child of the current one)."""
        return InvocationTrace(self, request, provider, model, invocation_id=invocation_id)

    def parent_of_tools(self) -> str | None:
        """The ``traceparent`` of the current span, for tool spans made in the executor."""
        if self.tracer is None:
            return None
        from opentelemetry import trace

        return traceparent_of(trace.get_current_span())

    @contextmanager
    def tool_span(self, call: ToolCall, parent: str | None) -> Generator[_ToolSpan]:
        """A span ``execute_tool {name}``, current in the calling task for its duration."""
        tracer = self.tracer
        if tracer is None:
            yield _ToolSpan(None, self)
            return
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent_context = None
        if parent is not None:
            parent_context = TraceContextTextMapPropagator().extract({"traceparent": parent})
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.id,
            "gen_ai.tool.type": "function",
        }
        if self.capture_content:
            attributes["gen_ai.tool.call.arguments"] = redact(call.arguments)
        span = tracer.start_span(
            f"execute_tool {call.name}",
            context=parent_context,
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
        )
        token = context.attach(trace.set_span_in_context(span))
        try:
            yield _ToolSpan(span, self)
        finally:
            context.detach(token)
            span.end()

    @contextmanager
    def mcp_span(self, server: str, tool: str) -> Generator[_ToolSpan]:
        """A span ``tools/call {tool}`` for a call to an MCP server, under the current span."""
        tracer = self.tracer
        if tracer is None:
            yield _ToolSpan(None, self)
            return
        from opentelemetry import trace

        span = tracer.start_span(
            f"tools/call {tool}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "mcp.method.name": "tools/call",
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": tool,
                "llm_invocation.mcp.server": server,
            },
        )
        try:
            yield _ToolSpan(span, self)
        except BaseException as exc:
            _mark_failed(span, exc)
            raise
        finally:
            span.end()

    def tool_done(self, name: str, outcome: str) -> None:
        """Count a finished tool call (``outcome``: ok, an error code, or cancelled)."""
        instruments = self.instruments
        if instruments is not None:
            instruments.tool_calls.add(
                1, {"gen_ai.tool.name": name, "llm_invocation.outcome": outcome}
            )


@final
class _ToolSpan:
    """What a tool's execution tells its span."""

    __slots__ = ("_span", "_telemetry")

    def __init__(self, span: Span | None, telemetry: Telemetry) -> None:
        self._span = span
        self._telemetry = telemetry

    def outcome(self, outcome: str, result: Any = None) -> None:
        span = self._span
        if span is None:
            return
        if outcome != "ok":
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR, outcome))
        if self._telemetry.capture_content and result is not None:
            content = getattr(result, "content", None)
            if isinstance(content, str):
                span.set_attribute("gen_ai.tool.call.result", redact(content))


@final
class InvocationTrace:
    """One invocation's span, its attempts' spans and its metrics."""

    __slots__ = (
        "_attempt",
        "_attempt_started",
        "_attributes",
        "_first_chunk",
        "_key",
        "_started",
        "_telemetry",
        "operation",
        "span",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        request: Request,
        provider: str,
        model: str,
        *,
        invocation_id: str,
    ) -> None:
        self._telemetry = telemetry
        self.operation = operation_of(request)
        self._attributes = telemetry.base_attributes(self.operation, provider, model)
        self._key = tuple(self._attributes.items())
        self._started = time.monotonic()
        self._attempt_started = self._started
        self._first_chunk = False
        self._attempt: Span | None = None
        self.span: Span | None = None
        tracer = telemetry.tracer
        if tracer is not None:
            from opentelemetry.trace import SpanKind

            attributes = dict(self._attributes)
            attributes["llm_invocation.invocation.id"] = invocation_id
            options = request.options
            if options.max_tokens is not None:
                attributes["gen_ai.request.max_tokens"] = options.max_tokens
            if options.temperature is not None:
                attributes["gen_ai.request.temperature"] = options.temperature
            if options.top_p is not None:
                attributes["gen_ai.request.top_p"] = options.top_p
            if options.top_k is not None:
                attributes["gen_ai.request.top_k"] = options.top_k
            if options.seed is not None:
                attributes["gen_ai.request.seed"] = options.seed
            if options.stop:
                attributes["gen_ai.request.stop_sequences"] = list(options.stop)
            if telemetry.capture_content:
                attributes["gen_ai.input.messages"] = json.dumps(
                    message_parts(request.messages), ensure_ascii=False
                )
            self.span = tracer.start_span(
                f"{self.operation} {model}", kind=SpanKind.CLIENT, attributes=attributes
            )
        instruments = telemetry.instruments
        if instruments is not None:
            instruments.opened(self._key, 1)

    @property
    def trace_id(self) -> str | None:
        span = self.span
        if span is None:
            return None
        ctx = span.get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else None

    # -- attempts ------------------------------------------------------------------------------

    def rate_limit_wait(self, seconds: float) -> None:
        """An attempt waited ``seconds`` for its rate-limit lease (queued by the governor)."""
        span = self.span
        if span is not None:
            span.add_event(
                "llm_invocation.rate_limit.wait", {"llm_invocation.wait.seconds": seconds}
            )
        instruments = self._telemetry.instruments
        if instruments is not None:
            instruments.rate_limit_wait.record(seconds, self._attributes)

    def attempt_started(self, provider: str, model: str, number: int) -> str | None:
        """An HTTP attempt starts; returns the ``traceparent`` to send to the provider, or
        None (not asked for)."""
        self._attempt_started = time.monotonic()
        span = self.span
        tracer = self._telemetry.tracer
        if span is None or tracer is None:
            return None
        from opentelemetry import trace

        telemetry = self._telemetry
        attributes: dict[str, Any] = {
            "http.request.method": "POST",
            "gen_ai.provider.name": telemetry.system(provider),
            "gen_ai.request.model": model,
            "llm_invocation.provider": provider,
            "llm_invocation.attempt": number,
        }
        if number > 1:
            attributes["http.request.resend_count"] = number - 1
        address, port = telemetry.servers.get(provider, (None, None))
        if address is not None:
            attributes["server.address"] = address
            attributes["server.port"] = port
        self._attempt = tracer.start_span(
            "POST",
            context=trace.set_span_in_context(span),
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
        )
        if not telemetry.propagate:
            return None
        return traceparent_of(self._attempt)

    def attempt_ended(self, error: BaseException | None) -> None:
        """The current HTTP attempt ended (``error`` None: it succeeded)."""
        attempt, self._attempt = self._attempt, None
        if attempt is None:
            return
        if error is None:
            attempt.set_attribute("http.response.status_code", 200)
        else:
            _mark_failed(attempt, error)
        attempt.end()

    def first_chunk(self) -> None:
        """The first chunk with content arrived (once per invocation)."""
        if self._first_chunk:
            return
        self._first_chunk = True
        seconds = time.monotonic() - self._attempt_started
        span = self.span
        if span is not None:
            span.add_event("gen_ai.first_chunk", {"llm_invocation.seconds": seconds})
        instruments = self._telemetry.instruments
        if instruments is not None:
            instruments.first_chunk.record(seconds, self._attributes)

    def retried(self) -> None:
        instruments = self._telemetry.instruments
        if instruments is not None:
            instruments.retries.add(1, self._attributes)

    def fell_back(self, to_provider: str, to_model: str) -> None:
        span = self.span
        if span is not None:
            span.add_event(
                "llm_invocation.fallback",
                {"gen_ai.provider.name": self._telemetry.system(to_provider),
                 "gen_ai.request.model": to_model},
            )  # fmt: skip
        instruments = self._telemetry.instruments
        if instruments is not None:
            instruments.fallbacks.add(1, self._attributes)

    # -- the end -------------------------------------------------------------------------------

    def finish(
        self,
        status: str,
        *,
        error: LLMError | None,
        response: Response | None,
        usage: Usage | None,
        provider: str,
        model: str,
        attempted: list[str],
    ) -> None:
        """The invocation ended: end its spans and record its metrics."""
        error_type: str | None = None
        if status == "cancelled":
            error_type = "cancelled"
        elif status == "error":
            error_type = error.code.value if error is not None else "error"
        self.attempt_ended(_Ended(error_type) if error_type is not None else None)
        telemetry = self._telemetry
        attributes = self._attributes
        response_model = response.model if response is not None else None
        if response_model:
            attributes = {**attributes, "gen_ai.response.model": response_model}
        span = self.span
        if span is not None:
            if response is not None:
                if response.id:
                    span.set_attribute("gen_ai.response.id", response.id)
                if response_model:
                    span.set_attribute("gen_ai.response.model", response_model)
                reasons = [c.finish_reason for c in response.choices if c.finish_reason]
                if reasons:
                    span.set_attribute("gen_ai.response.finish_reasons", reasons)
                if telemetry.capture_content:
                    span.set_attribute(
                        "gen_ai.output.messages",
                        json.dumps(_output_parts(response), ensure_ascii=False),
                    )
            if usage is not None:
                span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
                if usage.cost is not None:
                    span.set_attribute("llm_invocation.cost", float(usage.cost))
            if len(attempted) > 1:
                span.set_attribute("llm_invocation.attempted", attempted)
                span.set_attribute("llm_invocation.provider", provider)
            if error_type is not None:
                from opentelemetry.trace import Status, StatusCode

                span.set_attribute("error.type", error_type)
                message = error.message if error is not None else "cancelled by the caller"
                span.set_status(Status(StatusCode.ERROR, redact(message)[:200]))
            span.end()
        instruments = telemetry.instruments
        if instruments is None:
            return
        instruments.opened(self._key, -1)
        measured = dict(attributes)
        if error_type is not None:
            measured["error.type"] = error_type
        instruments.duration.record(time.monotonic() - self._started, measured)
        if usage is not None:
            instruments.token_usage.record(
                usage.prompt_tokens, {**attributes, "gen_ai.token.type": "input"}
            )
            instruments.token_usage.record(
                usage.completion_tokens, {**attributes, "gen_ai.token.type": "output"}
            )
            if usage.cost is not None and usage.cost > 0:
                instruments.spend.add(
                    float(usage.cost),
                    {
                        "gen_ai.provider.name": telemetry.system(provider),
                        "gen_ai.request.model": model,
                    },
                )


@final
class _Ended(Exception):
    """How an attempt still open at the end of its invocation ended."""

    def __init__(self, error_type: str) -> None:
        super().__init__(error_type)
        self.error_type = error_type


def _mark_failed(span: Span, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    from ..errors import LLMError

    inner = getattr(error, "error", None)  # the session's AttemptFailed carries the error
    typed = inner if isinstance(inner, LLMError) else error
    if isinstance(typed, _Ended):
        error_type = typed.error_type
        message = error_type
    elif isinstance(typed, LLMError):
        error_type = typed.code.value
        message = typed.message
        if typed.status is not None:
            span.set_attribute("http.response.status_code", typed.status)
    else:
        error_type = type(typed).__name__
        message = error_type
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, redact(message)[:200]))
