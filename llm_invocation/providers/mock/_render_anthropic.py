"""Anthropic Messages answers.

Streams follow WIRE-FORMATS 3.4: ``message_start`` (input usage), then strictly sequential
content blocks (a ``thinking`` block with ``thinking_delta``s and one ``signature_delta``, a
``text`` block with ``text_delta``s, one ``tool_use`` block per call with an empty first
``input_json_delta`` and then the argument fragments), a ``ping`` after the first block
starts, ``message_delta`` (stop reason, cumulative output usage) and ``message_stop``. An
in-stream error is ``event: error`` and the stream ends without ``message_stop``. Errors are
``{"type": "error", "error": {"type", "message"}, "request_id"}``; overloaded is 529.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Final, final

from ._render import (
    Plan,
    Renderer,
    RequestInfo,
    collect_text,
    count_words,
    default_message,
    encode_json,
    last_user_text,
    seconds_text,
)
from ._scenario import ErrorKind, HttpError, ScriptedUsage

__all__ = ["AnthropicRenderer"]

_FINISH: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "pause": "pause_turn",
    "other": "end_turn",
    "error": "end_turn",
}
_ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STREAM_ERRORS: Final[Mapping[ErrorKind, tuple[str, str]]] = {
    "overloaded": ("overloaded_error", "Overloaded"),
    "rate_limit": ("rate_limit_error", "This request would exceed the rate limit (fake)."),
    "server": ("api_error", "Internal server error"),
    "invalid_request": ("invalid_request_error", "Invalid request (fake provider)."),
}
_PING: Final = b'event: ping\ndata: {"type": "ping"}\n\n'
_STOP: Final = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + encode_json(payload) + b"\n\n"


def _input_tokens(usage: ScriptedUsage) -> int:
    return max(0, usage.prompt_tokens - usage.cache_read_tokens - usage.cache_write_tokens)


def _usage(usage: ScriptedUsage, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": _input_tokens(usage),
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens - usage.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _signature(plan: Plan) -> str:
    return base64.b64encode(b"fake-thinking-signature-%d" % plan.sequence).decode()


def _tool_id(plan: Plan, index: int, given: str | None) -> str:
    return given or f"toolu_fake{plan.sequence:010d}n{index}"


@final
class AnthropicRenderer(Renderer):
    """Anthropic Messages answers, streamed or whole."""

    format = "anthropic"
    default_model = "claude-sonnet-4-5"

    def request_info(self, request: Mapping[str, Any], *, model: str | None = None) -> RequestInfo:
        """Read the model and the words of ``system`` and ``messages``."""
        name: Any = model or request.get("model")
        messages: Any = request.get("messages")
        texts = collect_text(request.get("system"), [])
        collect_text(messages, texts)
        return RequestInfo(
            model=name if isinstance(name, str) and name else self.default_model,
            last_user_text=last_user_text(messages),
            prompt_words=count_words(texts),
        )

    def response_headers(self, plan_sequence: int) -> dict[str, str]:
        """``request-id``, as Anthropic sends it."""
        return {"request-id": f"req_fake{plan_sequence:010d}"}

    # -- streams ---------------------------------------------------------------------------

    def _stream(self, plan: Plan, info: RequestInfo) -> tuple[list[bytes], list[int], int]:
        usage = plan.usage
        message: dict[str, Any] = {
            "model": plan.model,
            "id": f"msg_fake{plan.sequence:010d}",
            "type": "message",
            "role": "assistant",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(usage, min(1, usage.completion_tokens)),
        }
        events = [_event(b"message_start", {"type": "message_start", "message": message})]
        outputs: list[int] = []
        index = 0

        def start(block: dict[str, Any]) -> None:
            payload = {"type": "content_block_start", "index": index, "content_block": block}
            events.append(_event(b"content_block_start", payload))
            if index == 0:
                events.append(_PING)

        def delta(body: dict[str, Any]) -> bytes:
            payload = {"type": "content_block_delta", "index": index, "delta": body}
            return _event(b"content_block_delta", payload)

        def stop() -> None:
            payload = {"type": "content_block_stop", "index": index}
            events.append(_event(b"content_block_stop", payload))

        if plan.reasoning_pieces:
            start({"type": "thinking", "thinking": "", "signature": ""})
            for piece in plan.reasoning_pieces:
                outputs.append(len(events))
                events.append(delta({"type": "thinking_delta", "thinking": piece}))
            events.append(delta({"type": "signature_delta", "signature": _signature(plan)}))
            stop()
            index += 1
        if plan.text or not plan.tools:
            start({"type": "text", "text": ""})
            prefix = b"".join(
                (
                    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":',
                    b"%d" % index,
                    b',"delta":{"type":"text_delta","text":',
                )
            )
            for piece in plan.text_pieces:
                outputs.append(len(events))
                events.append(prefix + encode_json(piece) + b"}}\n\n")
            stop()
            index += 1
        for number, tool in enumerate(plan.tools):
            start(
                {
                    "type": "tool_use",
                    "id": _tool_id(plan, number, tool.id),
                    "name": tool.name,
                    "input": {},
                }
            )
            events.append(delta({"type": "input_json_delta", "partial_json": ""}))
            for fragment in tool.fragments:
                outputs.append(len(events))
                events.append(delta({"type": "input_json_delta", "partial_json": fragment}))
            stop()
            index += 1
        terminal = len(events)
        final_usage = _usage(usage, usage.completion_tokens)
        del final_usage["cache_creation"], final_usage["service_tier"]
        stop_reason = _FINISH.get(plan.finish_reason, plan.finish_reason)
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": final_usage,
        }
        events.append(_event(b"message_delta", message_delta))
        events.append(_STOP)
        return events, outputs, terminal

    def _error_event(self, kind: ErrorKind, plan: Plan) -> bytes:
        error_type, message = _STREAM_ERRORS[kind]
        error = {"details": None, "type": error_type, "message": message}
        return _event(b"error", {"type": "error", "error": error})

    def _malformed_event(self) -> bytes:
        return (
            b"event: content_block_delta\n"
            b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_de\n\n'
        )

    # -- whole bodies ----------------------------------------------------------------------

    def _body(self, plan: Plan, info: RequestInfo) -> bytes:
        content: list[dict[str, Any]] = []
        if plan.reasoning:
            content.append(
                {"type": "thinking", "thinking": plan.reasoning, "signature": _signature(plan)}
            )
        if plan.text or not plan.tools:
            content.append({"type": "text", "text": plan.text})
        content.extend(
            {
                "type": "tool_use",
                "id": _tool_id(plan, number, tool.id),
                "name": tool.name,
                "input": tool.parsed if tool.parsed is not None else {},
            }
            for number, tool in enumerate(plan.tools)
        )
        return encode_json(
            {
                "id": f"msg_fake{plan.sequence:010d}",
                "type": "message",
                "role": "assistant",
                "model": plan.model,
                "content": content,
                "stop_reason": _FINISH.get(plan.finish_reason, plan.finish_reason),
                "stop_sequence": None,
                "usage": _usage(plan.usage, plan.usage.completion_tokens),
            }
        )

    def _error(self, error: HttpError) -> tuple[int, bytes, dict[str, str]]:
        status = error.status
        if status == 503 or error.error_type == "overloaded_error":
            status = 529
        error_type = error.error_type or _ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        message = error.message or default_message(status)
        body = {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_fake_error",
        }
        headers = {"request-id": "req_fake_error"}
        if error.retry_after is not None:
            headers["retry-after"] = seconds_text(error.retry_after)
        return status, encode_json(body), headers

    # -- models and tokens -----------------------------------------------------------------

    def render_models(self, names: Sequence[str]) -> bytes:
        """``{"data": [{"type": "model", "id", ...}], "has_more", "first_id", "last_id"}``."""
        data = [
            {
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for name in names
        ]
        return encode_json(
            {
                "data": data,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        )

    def render_count_tokens(self, request: Mapping[str, Any]) -> bytes:
        """``{"input_tokens": N}``: the words of ``system`` and ``messages``."""
        return encode_json({"input_tokens": max(1, self.request_info(request).prompt_words)})
