"""OpenAI Responses API answers (``POST /responses``), streamed and not.

Streams follow WIRE-FORMATS 2 and the recorded ones: every event is ``event: <type>`` and
``data: {"type": <type>, ..., "sequence_number": n}``, without ``[DONE]``:
``response.created`` and ``response.in_progress``; then, per output item, its
``response.output_item.added``, its deltas and its ``.done`` events: a ``reasoning`` item
(``response.reasoning_summary_text.delta``, with ``encrypted_content`` on the finished
item), a ``message`` (``response.output_text.delta``) and one ``function_call`` per tool
call (``response.function_call_arguments.delta``); then ``response.completed``, or
``response.incomplete`` for the finish reasons ``length`` (``max_output_tokens``) and
``content_filter``, carrying the whole response with its usage. An in-stream error is an
``error`` event followed by ``response.failed``. Whole bodies are the response object the
terminal event carries. Errors, model lists and token counts are OpenAI's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, final

from ._render import (
    Plan,
    Renderer,
    RequestInfo,
    collect_text,
    count_words,
    encode_json,
    last_user_text,
)
from ._render_openai import OpenAIRenderer
from ._scenario import ErrorKind, HttpError, ScriptedUsage

__all__ = ["ResponsesRenderer"]

_OPENAI: Final = OpenAIRenderer(legacy=False)
_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}
_STREAM_ERRORS: Final[Mapping[ErrorKind, tuple[str, str]]] = {
    "overloaded": ("server_overloaded", "The server is overloaded, please try again later."),
    "rate_limit": (
        "rate_limit_exceeded",
        "Rate limit reached for requests (fake provider). Please try again later.",
    ),
    "server": ("server_error", "The server had an error while processing your request."),
    "invalid_request": ("invalid_request_error", "Invalid request (fake provider)."),
}


def _usage(usage: ScriptedUsage) -> dict[str, Any]:
    details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens}
    if usage.cache_write_tokens:
        details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": details,
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _event(kind: str, fields: dict[str, Any], sequence: int) -> bytes:
    payload = {"type": kind, **fields, "sequence_number": sequence}
    return b"event: " + kind.encode() + b"\ndata: " + encode_json(payload) + b"\n\n"


class _Items:
    """The ids and finished output items of one answer."""

    def __init__(self, plan: Plan) -> None:
        tag = f"fake{plan.sequence:010d}"
        self.response_id = f"resp_{tag}"
        self.message_id = f"msg_{tag}"
        self.reasoning_id = f"rs_{tag}"
        self.encrypted = f"enc_{tag}"
        self.plan = plan
        self.calls = [
            (f"fc_{tag}n{index}", tool.id or f"call_{tag}n{index}")
            for index, tool in enumerate(plan.tools)
        ]

    def reasoning(self) -> dict[str, Any]:
        return {
            "id": self.reasoning_id,
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": self.plan.reasoning}],
            "encrypted_content": self.encrypted,
        }

    def message(self, status: str) -> dict[str, Any]:
        part: dict[str, Any] = {
            "type": "output_text",
            "annotations": [],
            "logprobs": [],
            "text": self.plan.text,
        }
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "content": [part],
            "role": "assistant",
        }

    def call(self, index: int, arguments: str, status: str) -> dict[str, Any]:
        item_id, call_id = self.calls[index]
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": call_id,
            "name": self.plan.tools[index].name,
        }

    def output(self, status: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.plan.reasoning:
            out.append(self.reasoning())
        if self.plan.text:
            out.append(self.message(status))
        out.extend(
            self.call(index, tool.arguments, "completed")
            for index, tool in enumerate(self.plan.tools)
        )
        return out

    def response(self, *, done: bool) -> dict[str, Any]:
        plan = self.plan
        reason = _INCOMPLETE.get(plan.finish_reason)
        status = ("incomplete" if reason else "completed") if done else "in_progress"
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": {"reason": reason} if reason and done else None,
            "model": plan.model,
            "output": self.output("incomplete" if reason else "completed") if done else [],
            "service_tier": "default",
            "usage": _usage(plan.usage) if done else None,
        }


@final
class ResponsesRenderer(Renderer):
    """OpenAI Responses API answers."""

    format = "openai"
    default_model = "gpt-4o-mini"

    def request_info(self, request: Mapping[str, Any], *, model: str | None = None) -> RequestInfo:
        """Read the model and the words of ``instructions`` and ``input``."""
        name: Any = model or request.get("model")
        items: Any = request.get("input")
        texts = collect_text(request.get("instructions"), [])
        collect_text(items, texts)
        last = items if isinstance(items, str) else last_user_text(items)
        return RequestInfo(
            model=name if isinstance(name, str) and name else self.default_model,
            last_user_text=last,
            prompt_words=count_words(texts),
        )

    def response_headers(self, plan_sequence: int) -> dict[str, str]:
        """OpenAI's ``x-request-id`` and ``openai-version``."""
        return _OPENAI.response_headers(plan_sequence)

    # -- streams ---------------------------------------------------------------------------

    def _stream(self, plan: Plan, info: RequestInfo) -> tuple[list[bytes], list[int], int]:
        items = _Items(plan)
        events: list[bytes] = []
        outputs: list[int] = []

        def add(kind: str, *, is_output: bool = False, **fields: Any) -> None:
            if is_output:
                outputs.append(len(events))
            events.append(_event(kind, fields, len(events)))

        add("response.created", response=items.response(done=False))
        add("response.in_progress", response=items.response(done=False))
        index = 0
        if plan.reasoning:
            item_id = items.reasoning_id
            add(
                "response.output_item.added",
                output_index=index,
                item={"id": item_id, "type": "reasoning", "summary": []},
            )
            part = {"type": "summary_text", "text": ""}
            add(
                "response.reasoning_summary_part.added",
                item_id=item_id,
                output_index=index,
                summary_index=0,
                part=part,
            )
            for piece in plan.reasoning_pieces:
                add(
                    "response.reasoning_summary_text.delta",
                    is_output=True,
                    item_id=item_id,
                    output_index=index,
                    summary_index=0,
                    delta=piece,
                )
            add(
                "response.reasoning_summary_text.done",
                item_id=item_id,
                output_index=index,
                summary_index=0,
                text=plan.reasoning,
            )
            add("response.output_item.done", output_index=index, item=items.reasoning())
            index += 1
        if plan.text:
            item_id = items.message_id
            opening: dict[str, Any] = {**items.message("in_progress"), "content": []}
            add("response.output_item.added", output_index=index, item=opening)
            where: dict[str, Any] = {"item_id": item_id, "output_index": index, "content_index": 0}
            empty: dict[str, Any] = {
                "type": "output_text",
                "annotations": [],
                "logprobs": [],
                "text": "",
            }
            add("response.content_part.added", **where, part=empty)
            for piece in plan.text_pieces:
                add("response.output_text.delta", is_output=True, **where, delta=piece, logprobs=[])
            add("response.output_text.done", **where, text=plan.text, logprobs=[])
            add("response.content_part.done", **where, part={**empty, "text": plan.text})
            done_status = "incomplete" if plan.finish_reason in _INCOMPLETE else "completed"
            add("response.output_item.done", output_index=index, item=items.message(done_status))
            index += 1
        for n, tool in enumerate(plan.tools):
            item_id = items.calls[n][0]
            add(
                "response.output_item.added",
                is_output=True,
                output_index=index,
                item=items.call(n, "", "in_progress"),
            )
            for fragment in tool.fragments:
                add(
                    "response.function_call_arguments.delta",
                    is_output=True,
                    item_id=item_id,
                    output_index=index,
                    delta=fragment,
                )
            add(
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=index,
                arguments=tool.arguments,
            )
            add(
                "response.output_item.done",
                output_index=index,
                item=items.call(n, tool.arguments, "completed"),
            )
            index += 1
        terminal = len(events)
        kind = "response.incomplete" if plan.finish_reason in _INCOMPLETE else "response.completed"
        add(kind, response=items.response(done=True))
        return events, outputs, terminal

    def _error_event(self, kind: ErrorKind, plan: Plan) -> bytes:
        code, message = _STREAM_ERRORS[kind]
        error = _event("error", {"code": code, "message": message, "param": None}, 0)
        failed = _Items(plan).response(done=False)
        failed.update(status="failed", error={"code": code, "message": message})
        return error + _event("response.failed", {"response": failed}, 1)

    def _malformed_event(self) -> bytes:
        return (
            b"event: response.output_text.delta\n"
            b'data: {"type":"response.output_text.delta","delta":"tru\n\n'
        )

    # -- whole bodies ----------------------------------------------------------------------

    def _body(self, plan: Plan, info: RequestInfo) -> bytes:
        return encode_json(_Items(plan).response(done=True))

    def _error(self, error: HttpError) -> tuple[int, bytes, dict[str, str]]:
        status, headers, body = _OPENAI.render_error(error)
        headers.pop("content-type", None)
        return status, body, headers

    # -- models and tokens -----------------------------------------------------------------

    def render_models(self, names: Sequence[str]) -> bytes:
        """OpenAI's model list."""
        return _OPENAI.render_models(names)

    def render_count_tokens(self, request: Mapping[str, Any]) -> bytes:
        """``{"object": "response.input_tokens", "input_tokens": N}``."""
        return _OPENAI.render_count_tokens(request)
