"""Google Gemini ``generateContent`` answers.

Streams follow WIRE-FORMATS 4.4: ``data: <GenerateContentResponse>`` events separated by
CRLF CRLF (``alt=sse``), or, without ``alt=sse``, one JSON array written element by element
(``[{...}\\n,\\r\\n{...}\\n]``). Every chunk repeats ``modelVersion`` and ``responseId`` and
carries running ``usageMetadata``; reasoning goes out as ``thought`` parts, tool calls as
whole ``functionCall`` parts sharing one chunk, and the last chunk has the ``finishReason``
(``STOP`` for tool calls too). Errors are ``google.rpc.Status`` objects, with a ``RetryInfo``
detail when a retry delay is scripted; an in-stream error is such an object as a chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, final

from ._render import (
    Event,
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
from ._scenario import ErrorEvent, ErrorKind, HttpError, Scenario, ScriptedUsage

__all__ = ["GeminiRenderer"]

_FINISH: Final = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "content_filter": "SAFETY",
    "pause": "STOP",
    "other": "OTHER",
    "error": "OTHER",
}
_CANONICAL: Final[Mapping[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_CANONICAL_NAMES: Final = frozenset(
    (*_CANONICAL.values(), "FAILED_PRECONDITION", "OUT_OF_RANGE", "DATA_LOSS", "UNKNOWN")
)
_MESSAGES: Final[Mapping[int, str]] = {
    429: (
        "You exceeded your current quota, please check your plan and billing details "
        "(fake provider)."
    ),
    503: "The model is overloaded. Please try again later.",
}
_STREAM_ERRORS: Final[Mapping[ErrorKind, int]] = {
    "overloaded": 503,
    "rate_limit": 429,
    "server": 500,
    "invalid_request": 400,
}
_SSE_END: Final = b"\r\n\r\n"
_SEPARATOR: Final = b"\n,\r\n"
_ARRAY_END: Final = b"\n]"
_MIDDLE: Final = b'"role":"model"},"index":0}]'


def _status(status: int, message: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": status,
        "message": message or _MESSAGES.get(status) or default_message(status),
        "status": _CANONICAL.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def _usage(usage: ScriptedUsage, *, candidates: int, thoughts: int, final: bool) -> dict[str, Any]:
    prompt = usage.prompt_tokens
    meta: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates or final:
        meta["candidatesTokenCount"] = candidates
    meta["totalTokenCount"] = prompt + candidates + thoughts
    meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    if usage.cache_read_tokens:
        meta["cachedContentTokenCount"] = usage.cache_read_tokens
    return meta


def _call_parts(plan: Plan) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for tool in plan.tools:
        call: dict[str, Any] = {"name": tool.name, "args": tool.parsed or {}}
        if tool.id is not None:
            call["id"] = tool.id
        parts.append({"functionCall": call})
    return parts


@final
class GeminiRenderer(Renderer):
    """Gemini ``generateContent`` answers, streamed or whole.

    Args:
        sse: stream server-sent events (``alt=sse``); False streams one JSON array, as the
            endpoint does without ``alt=sse``.

    Tool-call arguments must be a JSON object here: a string that is not one is sent as
    ``{}`` (only OpenAI and Anthropic can stream broken arguments).
    """

    format = "gemini"
    default_model = "gemini-2.5-flash"

    def __init__(self, *, sse: bool = True) -> None:
        self.sse = sse
        self.stream_content_type = "text/event-stream" if sse else "application/json; charset=UTF-8"

    def _frame(self, payload: bytes, position: int) -> bytes:
        if self.sse:
            return b"data: " + payload + _SSE_END
        return payload if position == 0 else _SEPARATOR + payload

    def request_info(self, request: Mapping[str, Any], *, model: str | None = None) -> RequestInfo:
        """Read the words of ``systemInstruction`` and ``contents``.

        A ``countTokens`` body that wraps a ``generateContentRequest`` is unwrapped.
        """
        inner = as_dict(request.get("generateContentRequest"))
        if inner:
            request = inner
        name: Any = model or request.get("model")
        contents: Any = request.get("contents")
        texts = collect_text(request.get("systemInstruction"), [])
        collect_text(contents, texts)
        last = last_user_text(contents, default_role="user")
        if isinstance(name, str) and name:
            name = name.removeprefix("models/")
        return RequestInfo(
            model=name if isinstance(name, str) and name else self.default_model,
            last_user_text=last,
            prompt_words=count_words(texts),
        )

    # -- streams ---------------------------------------------------------------------------

    def render_stream(
        self, scenario: Scenario, request: Mapping[str, Any], *, model: str | None = None
    ) -> list[Event]:
        """See `Renderer.render_stream`; a JSON-array stream ends with ``]`` on an error too.

        Raises:
            ValueError: the scenario fails with an `HttpError` (see `render_body`).
        """
        events = super().render_stream(scenario, request, model=model)
        if (
            not self.sse
            and isinstance(scenario.failure, ErrorEvent)
            and len(events) >= 2
            and events[-2] == b"["
        ):
            last = events[-1]
            if isinstance(last, bytes):
                events[-1] = last.removeprefix(_SEPARATOR)
        return events

    def _stream(self, plan: Plan, info: RequestInfo) -> tuple[list[bytes], list[int], int]:
        usage = plan.usage
        final_thoughts = usage.reasoning_tokens
        final_candidates = usage.completion_tokens - final_thoughts
        head = b'{"candidates":[{"content":{"parts":'
        tail = b"".join(
            (
                b',"modelVersion":',
                encode_json(plan.model),
                b',"responseId":"fake',
                b"%010d" % plan.sequence,
                b'"}',
            )
        )
        chunks: list[list[dict[str, Any]]] = [
            [{"text": piece, "thought": True}] for piece in plan.reasoning_pieces
        ]
        chunks.extend([{"text": piece}] for piece in plan.text_pieces)
        if plan.tools:
            chunks.append(_call_parts(plan))
        if not chunks:
            chunks.append([{"text": ""}])
        events: list[bytes] = [b"["] if not self.sse else []
        outputs: list[int] = []
        thoughts = candidates = 0
        last = len(chunks) - 1
        finish = _FINISH.get(plan.finish_reason, plan.finish_reason)
        for number, parts in enumerate(chunks):
            final = number == last
            if final:
                thoughts, candidates = final_thoughts, final_candidates
            elif "thought" in parts[0]:
                thoughts = min(thoughts + 1, final_thoughts)
            else:
                candidates = min(candidates + 1, final_candidates)
            middle = _MIDDLE
            if final:
                middle = b'"role":"model"},"finishReason":' + encode_json(finish) + b',"index":0}]'
            meta = _usage(usage, candidates=candidates, thoughts=thoughts, final=final)
            payload = b"".join(
                (
                    head,
                    encode_json(parts),
                    b",",
                    middle,
                    b',"usageMetadata":',
                    encode_json(meta),
                    tail,
                )
            )
            outputs.append(len(events))
            events.append(self._frame(payload, number))
        if not self.sse:
            events[-1] += _ARRAY_END
        return events, outputs, outputs[-1]

    def _error_event(self, kind: ErrorKind, plan: Plan) -> bytes:
        payload = encode_json(_status(_STREAM_ERRORS[kind], "", []))
        if self.sse:
            return b"data: " + payload + _SSE_END
        return _SEPARATOR + payload + _ARRAY_END

    def _malformed_event(self) -> bytes:
        if self.sse:
            return b'data: {"candidates": [{"content": {"parts": [{"text": "tru' + _SSE_END
        return _SEPARATOR + b'{"candidates": [{"content": {"parts": [{"text": "tru'

    # -- whole bodies ----------------------------------------------------------------------

    def _body(self, plan: Plan, info: RequestInfo) -> bytes:
        parts: list[dict[str, Any]] = []
        if plan.reasoning:
            parts.append({"text": plan.reasoning, "thought": True})
        if plan.text or not plan.tools:
            parts.append({"text": plan.text})
        parts.extend(_call_parts(plan))
        usage = plan.usage
        meta = _usage(
            usage,
            candidates=usage.completion_tokens - usage.reasoning_tokens,
            thoughts=usage.reasoning_tokens,
            final=True,
        )
        return encode_json(
            {
                "candidates": [
                    {
                        "content": {"parts": parts, "role": "model"},
                        "finishReason": _FINISH.get(plan.finish_reason, plan.finish_reason),
                        "index": 0,
                    }
                ],
                "usageMetadata": meta,
                "modelVersion": plan.model,
                "responseId": f"fake{plan.sequence:010d}",
            }
        )

    def _error(self, error: HttpError) -> tuple[int, bytes, dict[str, str]]:
        status = 503 if error.status == 529 else error.status
        details: list[dict[str, Any]] = []
        canonical: str | None = None
        if error.error_type is not None:
            if error.error_type in _CANONICAL_NAMES:
                canonical = error.error_type
            else:
                details.append(
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": error.error_type,
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                )
        if error.retry_after is not None:
            details.append(
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": seconds_text(error.retry_after) + "s",
                }
            )
        body = _status(status, error.message, details)
        if canonical is not None:
            body["error"]["status"] = canonical
        return status, encode_json(body), {}

    # -- models and tokens -----------------------------------------------------------------

    def render_models(self, names: Sequence[str]) -> bytes:
        """``{"models": [{"name": "models/<id>", ...}]}`` (one page, no token)."""
        models = [
            {
                "name": f"models/{name}",
                "version": "001",
                "displayName": name,
                "description": "A fake model of the llm_invocation test server.",
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
                "temperature": 1,
                "topP": 0.95,
                "topK": 64,
                "maxTemperature": 2,
                "thinking": True,
            }
            for name in names
        ]
        return encode_json({"models": models})

    def render_count_tokens(self, request: Mapping[str, Any]) -> bytes:
        """``{"totalTokens": N, "promptTokensDetails": [...]}``: the request's words."""
        total = max(1, self.request_info(request).prompt_words)
        return encode_json(
            {
                "totalTokens": total,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
            }
        )
