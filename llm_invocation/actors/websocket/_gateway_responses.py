"""OpenAI's Responses API on the gateway: the request read into a `Request`, the answer
written back as a ``response`` object or as its stream of typed events.

Reading. ``input`` is a string (one user message) or a list of items: messages (with or
without ``"type": "message"``; content a string or ``input_text``, ``input_image`` and
``output_text`` parts), ``function_call`` items (the model's earlier calls),
``function_call_output`` items (their results) and ``reasoning`` items (earlier thinking,
by its summary text). ``instructions`` becomes the system
message. Function tools, ``tool_choice``, ``text.format`` (text, JSON object, JSON schema),
``temperature``, ``top_p``, ``max_output_tokens``, ``user`` and ``metadata`` are served;
other fields, item types and tool types are refused (400), never dropped. The gateway keeps
no state: ``previous_response_id`` and ``store: true`` are refused.

Writing. Output items are the answer's thinking (a ``reasoning`` item whose summary is the
thinking text), its text (a ``message`` item with an ``output_text`` part) and its function
calls (``function_call`` items), in the order they started. A
stream sends ``response.created``, ``response.in_progress``, per item
``response.output_item.added``, its deltas (``response.output_text.delta``,
``response.function_call_arguments.delta``) and its ``...done`` events, then
``response.completed`` (``response.incomplete`` when the answer was cut by the token
limit); an error ends it with an ``error`` event and ``response.failed``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Final, Literal, final

import msgspec

from ...errors import InvalidRequest
from ...types import (
    FinishReason,
    ImagePart,
    Message,
    ModelOptions,
    NamedToolChoice,
    Part,
    ReasoningPart,
    Request,
    Response,
    ResponseFormat,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
)

__all__ = ["RESPONSES_DECODER", "ResponsesBody", "ResponsesStreamWriter", "responses_request"]


class _InputText(msgspec.Struct, tag_field="type", tag="input_text", forbid_unknown_fields=True):
    text: str


class _OutputText(msgspec.Struct, tag_field="type", tag="output_text", forbid_unknown_fields=True):
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class _InputImage(msgspec.Struct, tag_field="type", tag="input_image", forbid_unknown_fields=True):
    image_url: str
    detail: Literal["auto", "low", "high"] | None = None


class _RefusalPart(msgspec.Struct, tag_field="type", tag="refusal", forbid_unknown_fields=True):
    refusal: str


_PartIn = _InputText | _OutputText | _InputImage | _RefusalPart


class _MessageItem(msgspec.Struct, tag_field="type", tag="message", forbid_unknown_fields=True):
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[_PartIn]
    id: str | None = None
    status: str | None = None


class _FunctionCallItem(
    msgspec.Struct, tag_field="type", tag="function_call", forbid_unknown_fields=True
):
    call_id: str
    name: str
    arguments: str = ""
    id: str | None = None
    status: str | None = None


class _FunctionOutputItem(
    msgspec.Struct, tag_field="type", tag="function_call_output", forbid_unknown_fields=True
):
    call_id: str
    output: str | list[_InputText | _OutputText]
    id: str | None = None
    status: str | None = None


class _SummaryText(
    msgspec.Struct, tag_field="type", tag="summary_text", forbid_unknown_fields=True
):
    text: str


class _ReasoningItem(msgspec.Struct, tag_field="type", tag="reasoning", forbid_unknown_fields=True):
    summary: list[_SummaryText] = []
    id: str | None = None
    status: str | None = None


_Item = _MessageItem | _FunctionCallItem | _FunctionOutputItem | _ReasoningItem


class _FunctionTool(msgspec.Struct, tag_field="type", tag="function", forbid_unknown_fields=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _NamedFunction(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    type: Literal["function"] = "function"


class _Format(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class _Text(msgspec.Struct, forbid_unknown_fields=True):
    format: _Format | None = None


@final
class ResponsesBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /v1/responses``, as far as the gateway serves it."""

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool = False
    tools: list[_FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | _NamedFunction | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    text: _Text | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None
    truncation: Literal["disabled"] | None = None


RESPONSES_DECODER: Final = msgspec.json.Decoder(ResponsesBody)


def _refuse(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, details={"field": field})


def _item(raw: dict[str, Any], index: int) -> _Item:
    if "type" not in raw and "role" in raw:
        raw = {"type": "message", **raw}
    try:
        return msgspec.convert(raw, _Item)
    except msgspec.ValidationError as exc:
        text = str(exc)
        _, sep, path = text.rpartition(" - at `")
        where = f"input[{index}]" + (path.rstrip("`").removeprefix("$") if sep else "")
        raise InvalidRequest(f"invalid input item: {text}", details={"field": where}) from None


def _parts(content: str | list[_PartIn], role: str) -> str | list[Part]:
    if isinstance(content, str):
        return content
    parts: list[Part] = []
    for part in content:
        match part:
            case _InputText(text=text) | _OutputText(text=text) | _RefusalPart(refusal=text):
                parts.append(TextPart(text=text))
            case _InputImage():
                if role != "user":
                    raise _refuse("input", f"images are accepted in user messages, not {role}")
                parts.append(ImagePart.from_url(part.image_url, part.detail))
    if all(isinstance(part, TextPart) for part in parts):
        return "".join(part.text for part in parts if isinstance(part, TextPart))
    return parts


def _thinking_only(message: Message | None) -> bool:
    """Whether ``message`` is an assistant turn holding nothing but thinking so far."""
    if message is None or message.role != "assistant" or message.tool_calls:
        return False
    content = message.content
    return isinstance(content, list) and all(isinstance(p, ReasoningPart) for p in content)


def _messages(body: ResponsesBody) -> list[Message]:
    messages: list[Message] = []
    if body.instructions:
        messages.append(Message(role="system", content=body.instructions))
    if isinstance(body.input, str):
        messages.append(Message(role="user", content=body.input))
        return messages
    for index, raw in enumerate(body.input):
        item = _item(raw, index)
        last = messages[-1] if messages else None
        match item:
            case _ReasoningItem():
                thought = ReasoningPart(text="".join(s.text for s in item.summary))
                messages.append(Message(role="assistant", content=[thought]))
            case _MessageItem():
                content = _parts(item.content, item.role)
                if item.role == "assistant" and _thinking_only(last):
                    assert last is not None
                    before = list(last.content or []) if isinstance(last.content, list) else []
                    after = [TextPart(text=content)] if isinstance(content, str) else content
                    messages[-1] = msgspec.structs.replace(last, content=[*before, *after])
                else:
                    messages.append(Message(role=item.role, content=content))
            case _FunctionCallItem():
                call = ToolCall(id=item.call_id, name=item.name, arguments=item.arguments or "{}")
                if last is not None and last.role == "assistant":
                    # parallel calls, or text then calls: one assistant turn
                    calls = [*(last.tool_calls or ()), call]
                    messages[-1] = msgspec.structs.replace(last, tool_calls=calls)
                else:
                    messages.append(Message(role="assistant", tool_calls=[call]))
            case _FunctionOutputItem():
                output = item.output
                text = output if isinstance(output, str) else "".join(p.text for p in output)
                messages.append(Message(role="tool", content=text, tool_call_id=item.call_id))
    return messages


def _format(text: _Text | None) -> ResponseFormat | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat.json()
    if not fmt.schema or not fmt.name:
        raise _refuse("text.format", "a json_schema format needs a name and a schema")
    return ResponseFormat.schema(
        fmt.name, fmt.schema, strict=fmt.strict, description=fmt.description
    )


def _tool_choice(choice: str | _NamedFunction | None) -> ToolChoice | None:
    if isinstance(choice, _NamedFunction):
        return NamedToolChoice(name=choice.name)
    if choice == "none" or choice == "auto" or choice == "required":
        return choice
    return None


def responses_request(body: ResponsesBody, *, metadata: dict[str, Any]) -> Request:
    """The `Request` a Responses API body asks for.

    Raises:
        InvalidRequest: a field, an input item or a tool is not served by the gateway or
            out of range; ``details["field"]`` names it.
    """
    if body.store:
        raise _refuse("store", "this gateway does not store responses")
    if body.parallel_tool_calls is False:
        raise _refuse("parallel_tool_calls", "this gateway cannot turn parallel tool calls off")
    tools = [
        ToolSpec(
            name=tool.name,
            description=tool.description or "",
            parameters=tool.parameters or {"type": "object", "properties": {}},
            strict=tool.strict,
        )
        for tool in body.tools or ()
    ]
    tags: dict[str, Any] = dict(body.metadata or {})
    if body.user:
        tags["user"] = body.user
    tags.update(metadata)
    return Request(
        model=body.model,
        messages=_messages(body),
        options=ModelOptions(
            temperature=body.temperature, top_p=body.top_p, max_tokens=body.max_output_tokens
        ),
        tools=tools,
        tool_choice=_tool_choice(body.tool_choice),
        response_format=_format(body.text),
        stream=body.stream,
        metadata=tags or None,
    )


# -- writing --------------------------------------------------------------------------------------

_ENCODER: Final = msgspec.json.Encoder()


def _usage(usage: Usage | None) -> dict[str, Any]:
    usage = usage or Usage()
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _message_item(id: str, text: str, *, done: bool) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if done:
        content.append({"type": "output_text", "text": text, "annotations": []})
    return {
        "type": "message",
        "id": id,
        "status": "completed" if done else "in_progress",
        "role": "assistant",
        "content": content,
    }


def _call_item(id: str, call_id: str, name: str, arguments: str, *, done: bool) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed" if done else "in_progress",
    }


def _reasoning_item(id: str, text: str, *, done: bool) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if done else []
    return {"type": "reasoning", "id": id, "summary": summary}


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


_Kind = Literal["message", "reasoning", "function_call"]
_PREFIXES: Final[dict[_Kind, str]] = {"message": "msg", "reasoning": "rs", "function_call": "fc"}


@final
class _OpenItem:
    """An output item being streamed: a message's text, thinking (as a reasoning item's
    summary) or a function call's arguments."""

    __slots__ = ("call_id", "id", "index", "kind", "name", "pieces", "provider_index")

    def __init__(
        self,
        kind: _Kind,
        index: int,
        *,
        call_id: str = "",
        name: str = "",
        provider_index: int = -1,
    ) -> None:
        self.kind: _Kind = kind
        self.index = index
        self.id = _item_id(_PREFIXES[kind])
        self.call_id = call_id
        self.name = name
        self.provider_index = provider_index
        self.pieces: list[str] = []

    @property
    def is_call(self) -> bool:
        return self.kind == "function_call"

    def item(self, *, done: bool) -> dict[str, Any]:
        text = "".join(self.pieces)
        if self.kind == "function_call":
            return _call_item(self.id, self.call_id, self.name, text, done=done)
        if self.kind == "reasoning":
            return _reasoning_item(self.id, text, done=done)
        return _message_item(self.id, text, done=done)


_INCOMPLETE: Final[dict[FinishReason, str]] = {
    "length": "max_output_tokens",
    "content_filter": "content_filter",
}


@final
class ResponsesStreamWriter:
    """Writes one invocation as a Responses API ``response``, streamed or whole.

    Args:
        id: the response id.
        model: the model the request named (a stream's events carry it).
        body: the request, whose settings the response object echoes.
        created: the creation time (seconds since the epoch).
    """

    __slots__ = (
        "_body",
        "_created",
        "_current",
        "_done",
        "_finish",
        "_id",
        "_model",
        "_sequence",
        "_started",
    )

    def __init__(
        self, *, id: str, model: str, body: ResponsesBody, created: int | None = None
    ) -> None:
        self._id = id
        self._model = model
        self._body = body
        self._created = created if created is not None else int(time.time())
        self._sequence = 0
        self._started = False
        self._current: _OpenItem | None = None
        self._done: list[dict[str, Any]] = []
        self._finish: FinishReason | None = None

    def _response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: Usage | None,
        *,
        model: str | None = None,
        error: dict[str, Any] | None = None,
        incomplete: str | None = None,
    ) -> dict[str, Any]:
        body = self._body
        fmt: dict[str, Any] = {"type": "text"}
        if body.text is not None and body.text.format is not None:
            fmt = msgspec.to_builtins(body.text.format)
        tools = [msgspec.to_builtins(tool) for tool in body.tools or ()]
        tool_choice = msgspec.to_builtins(body.tool_choice) if body.tool_choice else "auto"
        return {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "model": model or self._model,
            "output": output,
            "usage": _usage(usage) if status != "in_progress" else None,
            "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": body.instructions,
            "metadata": body.metadata or {},
            "max_output_tokens": body.max_output_tokens,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": None,
            "store": False,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "text": {"format": fmt},
            "tool_choice": tool_choice,
            "tools": tools,
            "truncation": "disabled",
            "user": body.user,
        }

    def whole(self, response: Response, *, model: str) -> dict[str, Any]:
        """A whole answer as a ``response`` object."""
        output: list[dict[str, Any]] = []
        message = response.message
        if message.reasoning:
            output.append(_reasoning_item(_item_id("rs"), message.reasoning, done=True))
        if message.text:
            output.append(_message_item(_item_id("msg"), message.text, done=True))
        output.extend(
            _call_item(_item_id("fc"), call.id, call.name, call.arguments, done=True)
            for call in message.tool_calls or ()
        )
        finish = response.choices[0].finish_reason if response.choices else None
        incomplete = _INCOMPLETE.get(finish) if finish is not None else None
        return self._response(
            "incomplete" if incomplete else "completed",
            output,
            response.usage,
            model=model,
            incomplete=incomplete,
        )

    # -- streaming ------------------------------------------------------------------------------

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + _ENCODER.encode(payload) + b"\n\n"

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        snapshot = self._response("in_progress", [], None)
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot}
        )

    def _close(self) -> bytes:
        item = self._current
        if item is None:
            return b""
        self._current = None
        where = {"item_id": item.id, "output_index": item.index}
        text = "".join(item.pieces)
        out = b""
        if item.kind == "function_call":
            done_args = {**where, "arguments": text}
            out += self._event("response.function_call_arguments.done", done_args)
        elif item.kind == "reasoning":
            summary: dict[str, Any] = {"type": "summary_text", "text": text}
            where["summary_index"] = 0
            out += self._event("response.reasoning_summary_text.done", {**where, "text": text})
            out += self._event("response.reasoning_summary_part.done", {**where, "part": summary})
        else:
            part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
            where["content_index"] = 0
            out += self._event("response.output_text.done", {**where, "text": text})
            out += self._event("response.content_part.done", {**where, "part": part})
        done = item.item(done=True)
        self._done.append(done)
        ended = {"output_index": item.index, "item": done}
        return out + self._event("response.output_item.done", ended)

    def _open(self, item: _OpenItem) -> bytes:
        out = self._close()
        self._current = item
        added = {"output_index": item.index, "item": item.item(done=False)}
        out += self._event("response.output_item.added", added)
        where: dict[str, Any] = {"item_id": item.id, "output_index": item.index}
        if item.kind == "message":
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
            out += self._event(
                "response.content_part.added", {**where, "content_index": 0, "part": part}
            )
        elif item.kind == "reasoning":
            summary: dict[str, Any] = {"type": "summary_text", "text": ""}
            added = {**where, "summary_index": 0, "part": summary}
            out += self._event("response.reasoning_summary_part.added", added)
        return out

    def _item_for(self, kind: _Kind) -> tuple[_OpenItem, bytes]:
        """The open item of ``kind``, opened now (closing the one before) when needed."""
        item = self._current
        if item is not None and item.kind == kind:
            return item, b""
        opened = _OpenItem(kind, len(self._done) + (item is not None))
        return opened, self._open(opened)

    def chunk(self, chunk: StreamChunk) -> bytes:
        """The events of one chunk."""
        out = self._start()
        if chunk.reasoning:
            item, opened = self._item_for("reasoning")
            item.pieces.append(chunk.reasoning)
            where = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
            out += opened + self._event(
                "response.reasoning_summary_text.delta", {**where, "delta": chunk.reasoning}
            )
        if chunk.text:
            item, opened = self._item_for("message")
            out += opened
            item.pieces.append(chunk.text)
            where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
            out += self._event(
                "response.output_text.delta", {**where, "delta": chunk.text, "logprobs": []}
            )
        for delta in chunk.tool_calls or ():
            item = self._current
            new_call = (
                item is None
                or not item.is_call
                or item.provider_index != delta.index
                or (delta.id is not None and delta.id != item.call_id)
            )
            if new_call:
                index = len(self._done) + (item is not None)
                item = _OpenItem(
                    "function_call",
                    index,
                    call_id=delta.id or f"call_{index}",
                    name=delta.name or "",
                    provider_index=delta.index,
                )
                out += self._open(item)
            assert item is not None
            if delta.arguments:
                item.pieces.append(delta.arguments)
                where = {"item_id": item.id, "output_index": item.index}
                out += self._event(
                    "response.function_call_arguments.delta", {**where, "delta": delta.arguments}
                )
        if chunk.finish_reason is not None:
            self._finish = chunk.finish_reason
        return out

    def end(self, usage: Usage | None) -> bytes:
        """The last events: the open item's end and ``response.completed``."""
        out = self._start() + self._close()
        incomplete = _INCOMPLETE.get(self._finish) if self._finish is not None else None
        response = self._response(
            "incomplete" if incomplete else "completed", self._done, usage, incomplete=incomplete
        )
        kind = "response.incomplete" if incomplete else "response.completed"
        return out + self._event(kind, {"response": response})

    def error(self, body: dict[str, Any]) -> bytes:
        """The events that end a stream in error."""
        out = self._start()
        error = {"code": body.get("code") or body.get("type"), "message": body.get("message")}
        out += self._event("error", {**error, "param": body.get("param")})
        failed = self._response("failed", self._done, None, error=error)
        failed["usage"] = None
        return out + self._event("response.failed", {"response": failed})
