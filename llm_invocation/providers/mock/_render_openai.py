"""OpenAI Chat Completions answers (and the legacy ``/completions`` text_completion shape).

Streams follow WIRE-FORMATS 1.4: a first chunk with ``delta.role``, ``delta.content``
fragments, tool calls as index-based fragments (the first with ``id``, ``type`` and ``name``
and empty ``arguments``, then ``arguments`` substrings), a finish chunk with ``delta: {}``,
with ``stream_options.include_usage`` an extra chunk with ``choices: []`` and the usage (and
``"usage": null`` on every other chunk), then ``data: [DONE]``. Reasoning goes out as
``delta.reasoning_content``, as DeepSeek and other compatible servers send it (OpenAI itself
streams no reasoning text). An in-stream error is a ``data:`` payload with an ``error`` key
and no ``[DONE]``, which openai-python raises on.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, final

from ._render import (
    Plan,
    Renderer,
    RequestInfo,
    as_dict,
    collect_text,
    count_words,
    default_message,
    encode_json,
    last_user_text,
    seconds_text,
)
from ._scenario import ErrorKind, HttpError, ScriptedUsage

__all__ = ["OpenAIRenderer"]

_FINISH: Final = {"pause": "stop", "other": "stop", "error": "stop"}
_LEGACY_FINISH: Final = {"tool_calls": "stop", "pause": "stop", "other": "stop", "error": "stop"}
_DONE: Final = b"data: [DONE]\n\n"
_STREAM_ERRORS: Final[Mapping[ErrorKind, tuple[str, str | None, str]]] = {
    "overloaded": (
        "server_error",
        "server_overloaded",
        "The server is overloaded, please try again later.",
    ),
    "rate_limit": (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests (fake provider). Please try again later.",
    ),
    "server": ("server_error", None, "The server had an error while processing your request."),
    "invalid_request": ("invalid_request_error", None, "Invalid request (fake provider)."),
}
_ERROR_TYPES: Final[Mapping[int, tuple[str, str | None]]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


def _usage(usage: ScriptedUsage) -> dict[str, Any]:
    prompt_details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _legacy_usage(usage: ScriptedUsage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _choice(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return encode_json({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish})


def _tool_id(plan: Plan, index: int, given: str | None) -> str:
    return given or f"call_fake{plan.sequence:010d}n{index}"


@final
class OpenAIRenderer(Renderer):
    """OpenAI chat completion answers; legacy text completions when asked.

    Args:
        legacy: True renders ``text_completion`` answers (``/completions``), False chat
            completions; None decides per request (a body with ``prompt`` and no
            ``messages`` is legacy). Legacy answers carry no reasoning and no tool calls.
    """

    format = "openai"
    default_model = "gpt-4o-mini"

    def __init__(self, *, legacy: bool | None = None) -> None:
        self.legacy = legacy

    def _is_legacy(self, request: Mapping[str, Any]) -> bool:
        if self.legacy is not None:
            return self.legacy
        return "messages" not in request and "prompt" in request

    def request_info(self, request: Mapping[str, Any], *, model: str | None = None) -> RequestInfo:
        """Read the model, the messages' words (or the prompt's) and ``include_usage``."""
        name: Any = model or request.get("model")
        include_usage = as_dict(request.get("stream_options")).get("include_usage") is True
        if self._is_legacy(request):
            texts = collect_text(request.get("prompt"), [])
            last = texts[-1] if texts else ""
        else:
            messages: Any = request.get("messages")
            texts = collect_text(messages, [])
            last = last_user_text(messages)
        return RequestInfo(
            model=name if isinstance(name, str) and name else self.default_model,
            last_user_text=last,
            prompt_words=count_words(texts),
            include_usage=include_usage,
            legacy=self._is_legacy(request),
        )

    def response_headers(self, plan_sequence: int) -> dict[str, str]:
        """``x-request-id`` and ``openai-version``, as OpenAI sends them."""
        return {
            "x-request-id": f"req_fake{plan_sequence:010d}",
            "openai-version": "2020-10-01",
            "openai-processing-ms": "1",
        }

    # -- streams ---------------------------------------------------------------------------

    def _stream(self, plan: Plan, info: RequestInfo) -> tuple[list[bytes], list[int], int]:
        if info.legacy:
            return self._legacy_stream(plan, info)
        head = b"".join(
            (
                b'data: {"id":"chatcmpl-fake',
                b"%010d" % plan.sequence,
                b'","object":"chat.completion.chunk","created":',
                b"%d" % int(time.time()),
                b',"model":',
                encode_json(plan.model),
                b',"service_tier":"default","system_fingerprint":"fp_fake","choices":[',
            )
        )
        tail = b'],"usage":null}\n\n' if info.include_usage else b"]}\n\n"
        events: list[bytes] = []
        outputs: list[int] = []
        first: dict[str, Any] = {
            "role": "assistant",
            "content": "" if plan.text or not plan.tools else None,
            "refusal": None,
        }
        events.append(head + _choice(first) + tail)
        for piece in plan.reasoning_pieces:
            outputs.append(len(events))
            events.append(head + _choice({"reasoning_content": piece}) + tail)
        for piece in plan.text_pieces:
            outputs.append(len(events))
            events.append(
                b"".join(
                    (
                        head,
                        b'{"index":0,"delta":{"content":',
                        encode_json(piece),
                        b'},"logprobs":null,"finish_reason":null}',
                        tail,
                    )
                )
            )
        for index, tool in enumerate(plan.tools):
            opening = {
                "index": index,
                "id": _tool_id(plan, index, tool.id),
                "type": "function",
                "function": {"name": tool.name, "arguments": ""},
            }
            outputs.append(len(events))
            events.append(head + _choice({"tool_calls": [opening]}) + tail)
            for fragment in tool.fragments:
                outputs.append(len(events))
                fragment_delta = {"index": index, "function": {"arguments": fragment}}
                events.append(head + _choice({"tool_calls": [fragment_delta]}) + tail)
        terminal = len(events)
        finish = _FINISH.get(plan.finish_reason, plan.finish_reason)
        events.append(head + _choice({}, finish) + tail)
        if info.include_usage:
            events.append(head + b'],"usage":' + encode_json(_usage(plan.usage)) + b"}\n\n")
        events.append(_DONE)
        return events, outputs, terminal

    def _legacy_stream(self, plan: Plan, info: RequestInfo) -> tuple[list[bytes], list[int], int]:
        head = b"".join(
            (
                b'data: {"id":"cmpl-fake',
                b"%010d" % plan.sequence,
                b'","object":"text_completion","created":',
                b"%d" % int(time.time()),
                b',"model":',
                encode_json(plan.model),
                b',"system_fingerprint":"fp_fake","choices":[',
            )
        )
        tail = b'],"usage":null}\n\n' if info.include_usage else b"]}\n\n"
        events: list[bytes] = []
        outputs: list[int] = []
        for piece in plan.text_pieces:
            outputs.append(len(events))
            choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": None}
            events.append(head + encode_json(choice) + tail)
        terminal = len(events)
        finish = _LEGACY_FINISH.get(plan.finish_reason, plan.finish_reason)
        last = {"text": "", "index": 0, "logprobs": None, "finish_reason": finish}
        events.append(head + encode_json(last) + tail)
        if info.include_usage:
            usage = encode_json(_legacy_usage(plan.usage))
            events.append(head + b'],"usage":' + usage + b"}\n\n")
        events.append(_DONE)
        return events, outputs, terminal

    def _error_event(self, kind: ErrorKind, plan: Plan) -> bytes:
        kind_type, code, message = _STREAM_ERRORS[kind]
        error = {"message": message, "type": kind_type, "param": None, "code": code}
        return b"data: " + encode_json({"error": error}) + b"\n\n"

    def _malformed_event(self) -> bytes:
        return b'data: {"id":"chatcmpl-broken","choices":[{"index":0,"delta":{"content":"tru\n\n'

    # -- whole bodies ----------------------------------------------------------------------

    def _body(self, plan: Plan, info: RequestInfo) -> bytes:
        created = int(time.time())
        if info.legacy:
            choice = {
                "text": plan.text,
                "index": 0,
                "logprobs": None,
                "finish_reason": _LEGACY_FINISH.get(plan.finish_reason, plan.finish_reason),
            }
            return encode_json(
                {
                    "id": f"cmpl-fake{plan.sequence:010d}",
                    "object": "text_completion",
                    "created": created,
                    "model": plan.model,
                    "system_fingerprint": "fp_fake",
                    "choices": [choice],
                    "usage": _legacy_usage(plan.usage),
                }
            )
        message: dict[str, Any] = {
            "role": "assistant",
            "content": plan.text if plan.text or not plan.tools else None,
            "refusal": None,
            "annotations": [],
        }
        if plan.reasoning:
            message["reasoning_content"] = plan.reasoning
        if plan.tools:
            message["tool_calls"] = [
                {
                    "id": _tool_id(plan, index, tool.id),
                    "type": "function",
                    "function": {"name": tool.name, "arguments": tool.arguments},
                }
                for index, tool in enumerate(plan.tools)
            ]
        return encode_json(
            {
                "id": f"chatcmpl-fake{plan.sequence:010d}",
                "object": "chat.completion",
                "created": created,
                "model": plan.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": _FINISH.get(plan.finish_reason, plan.finish_reason),
                    }
                ],
                "usage": _usage(plan.usage),
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
        )

    def _error(self, error: HttpError) -> tuple[int, bytes, dict[str, str]]:
        status = 503 if error.status == 529 else error.status
        if error.error_type is not None:
            error_type, code = error.error_type, error.error_type
        else:
            error_type, code = _ERROR_TYPES.get(
                status, ("server_error", None) if status >= 500 else ("invalid_request_error", None)
            )
        message = error.message or default_message(status)
        body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        headers = {"x-request-id": "req_fake_error"}
        if error.retry_after is not None:
            headers["retry-after"] = seconds_text(error.retry_after)
        return status, encode_json(body), headers

    # -- models and tokens -----------------------------------------------------------------

    def render_models(self, names: Sequence[str]) -> bytes:
        """``{"object": "list", "data": [{"id", "object": "model", "created", "owned_by"}]}``."""
        data = [
            {"id": name, "object": "model", "created": 1700000000, "owned_by": "fake"}
            for name in names
        ]
        return encode_json({"object": "list", "data": data})

    def render_count_tokens(self, request: Mapping[str, Any]) -> bytes:
        """The Responses API's ``{"object": "response.input_tokens", "input_tokens": N}``."""
        texts: list[str] = []
        for key in ("instructions", "input", "messages", "prompt"):
            collect_text(request.get(key), texts)
        return encode_json(
            {"object": "response.input_tokens", "input_tokens": max(1, count_words(texts))}
        )
