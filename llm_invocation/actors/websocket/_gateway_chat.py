"""OpenAI Chat Completions on the gateway: the request read into a `Request`, the answer
written back as a ``chat.completion`` or as ``chat.completion.chunk`` server-sent events.

Reading. The body is decoded by msgspec into the Structs below (messages tagged by their
``role``, content parts by their ``type``); a field the gateway does not know is refused
(400), so nothing a client asks for is dropped unsaid. Options that only make sense at
their default (``n``, ``logprobs``, ``store``, ``parallel_tool_calls``,
``stream_options.include_obfuscation``) are accepted at it and refused otherwise. The
body's ``user`` and ``metadata`` join the call's metadata (tags for budgets and usage
reports); the gateway's own keys (the token's name) win.

Writing. Text goes out as ``delta.content``, thinking as ``delta.reasoning_content`` (what
OpenAI-compatible servers use), tool calls as ``delta.tool_calls`` fragments numbered from 0
in the order the calls start (the first fragment of a call has its ``id``, ``type`` and
``function.name``).
"""

from __future__ import annotations

import time
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

__all__ = [
    "CHAT_DECODER",
    "ChatBody",
    "ChatStreamWriter",
    "chat_completion",
    "chat_request",
    "finish_reason",
    "usage_object",
]


class _TextIn(msgspec.Struct, tag_field="type", tag="text", forbid_unknown_fields=True):
    text: str


class _RefusalIn(msgspec.Struct, tag_field="type", tag="refusal", forbid_unknown_fields=True):
    refusal: str


class _ImageUrl(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class _ImageIn(msgspec.Struct, tag_field="type", tag="image_url", forbid_unknown_fields=True):
    image_url: _ImageUrl


class _FunctionCall(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    arguments: str = ""


class _ToolCallIn(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    function: _FunctionCall
    type: Literal["function"] = "function"


class _SystemIn(msgspec.Struct, tag_field="role", tag="system", forbid_unknown_fields=True):
    content: str | list[_TextIn]
    name: str | None = None


class _DeveloperIn(msgspec.Struct, tag_field="role", tag="developer", forbid_unknown_fields=True):
    content: str | list[_TextIn]
    name: str | None = None


class _UserIn(msgspec.Struct, tag_field="role", tag="user", forbid_unknown_fields=True):
    content: str | list[_TextIn | _ImageIn]
    name: str | None = None


class _AssistantIn(msgspec.Struct, tag_field="role", tag="assistant", forbid_unknown_fields=True):
    content: str | list[_TextIn | _RefusalIn] | None = None
    name: str | None = None
    tool_calls: list[_ToolCallIn] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    # what an SDK echoes back when a client appends the answer's message object as it is
    annotations: list[Any] | None = None
    audio: None = None
    function_call: None = None


class _ToolIn(msgspec.Struct, tag_field="role", tag="tool", forbid_unknown_fields=True):
    content: str | list[_TextIn]
    tool_call_id: str


_MessageIn = _SystemIn | _DeveloperIn | _UserIn | _AssistantIn | _ToolIn


class _FunctionDef(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _ToolDef(msgspec.Struct, forbid_unknown_fields=True):
    function: _FunctionDef
    type: Literal["function"] = "function"


class _NamedFunction(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class _NamedChoice(msgspec.Struct, forbid_unknown_fields=True):
    function: _NamedFunction
    type: Literal["function"] = "function"


class _JsonSchema(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class _ResponseFormatIn(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


class _StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


@final
class ChatBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /v1/chat/completions``, as far as the gateway serves it."""

    model: str
    messages: list[_MessageIn]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | _NamedChoice | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    response_format: _ResponseFormatIn | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    n: int | None = None
    logprobs: bool | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None


CHAT_DECODER: Final = msgspec.json.Decoder(ChatBody)


def _refuse(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, details={"field": field})


def _text(content: str | list[_TextIn] | list[_TextIn | _RefusalIn] | None) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return "".join(part.text if isinstance(part, _TextIn) else part.refusal for part in content)


def _message(message: _MessageIn) -> Message:
    match message:
        case _SystemIn() | _DeveloperIn():
            role: Literal["system", "developer"] = (
                "system" if isinstance(message, _SystemIn) else "developer"
            )
            return Message(role=role, content=_text(message.content), name=message.name)
        case _UserIn():
            content = message.content
            if isinstance(content, str):
                return Message(role="user", content=content, name=message.name)
            parts: list[Part] = []
            for part in content:
                if isinstance(part, _TextIn):
                    parts.append(TextPart(text=part.text))
                else:
                    image = part.image_url
                    parts.append(ImagePart.from_url(image.url, image.detail))
            return Message(role="user", content=parts, name=message.name)
        case _AssistantIn():
            calls = [
                ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
                for call in message.tool_calls or ()
            ]
            text = _text(message.content)
            if text is None and message.refusal:
                text = message.refusal
            said: str | list[Part] | None = text
            if message.reasoning_content:
                said = [ReasoningPart(text=message.reasoning_content)]
                if text:
                    said.append(TextPart(text=text))
            return Message(
                role="assistant", content=said, name=message.name, tool_calls=calls or None
            )
        case _ToolIn():
            return Message(
                role="tool", content=_text(message.content), tool_call_id=message.tool_call_id
            )


def _tool_choice(choice: str | _NamedChoice | None) -> ToolChoice | None:
    if isinstance(choice, _NamedChoice):
        return NamedToolChoice(name=choice.function.name)
    if choice == "none" or choice == "auto" or choice == "required":
        return choice
    return None


def _response_format(fmt: _ResponseFormatIn | None) -> ResponseFormat | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat.json()
    spec = fmt.json_schema
    if spec is None or not spec.schema:
        raise _refuse("response_format", "a json_schema response format needs json_schema.schema")
    return ResponseFormat.schema(
        spec.name, spec.schema, strict=spec.strict, description=spec.description
    )


def _check_defaults(body: ChatBody) -> None:
    if body.n not in (None, 1):
        raise _refuse("n", "this gateway answers with one choice: n must be 1")
    if body.logprobs:
        raise _refuse("logprobs", "this gateway does not return logprobs")
    if body.store:
        raise _refuse("store", "this gateway does not store completions")
    if body.parallel_tool_calls is False:
        raise _refuse("parallel_tool_calls", "this gateway cannot turn parallel tool calls off")
    if body.stream_options is not None and body.stream_options.include_obfuscation:
        raise _refuse("stream_options", "this gateway does not pad streamed events")


def chat_request(body: ChatBody, *, metadata: dict[str, Any]) -> Request:
    """The `Request` a Chat Completions body asks for.

    Only the tools the body lists are offered (none when it lists none); ``user`` and the
    body's ``metadata`` join ``metadata`` (whose keys win).

    Raises:
        InvalidRequest: a field is out of range or not served by the gateway; ``details``
            names it.
    """
    _check_defaults(body)
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    max_tokens = body.max_completion_tokens
    if max_tokens is None:
        max_tokens = body.max_tokens
    options = ModelOptions(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=body.seed,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
    )
    tools = [
        ToolSpec(
            name=tool.function.name,
            description=tool.function.description,
            parameters=tool.function.parameters or {"type": "object", "properties": {}},
            strict=tool.function.strict,
        )
        for tool in body.tools or ()
    ]
    tags: dict[str, Any] = dict(body.metadata or {})
    if body.user:
        tags["user"] = body.user
    tags.update(metadata)
    return Request(
        model=body.model,
        messages=[_message(message) for message in body.messages],
        options=options,
        tools=tools,
        tool_choice=_tool_choice(body.tool_choice),
        response_format=_response_format(body.response_format),
        stream=body.stream,
        metadata=tags or None,
    )


# -- writing --------------------------------------------------------------------------------------

_FINISH: Final[dict[FinishReason, str]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "pause": "stop",
    "error": "stop",
    "other": "stop",
}


def finish_reason(reason: FinishReason | None) -> str:
    """OpenAI's ``finish_reason`` for ours (``pause`` and ``other`` end as ``stop``)."""
    return _FINISH.get(reason or "stop", "stop")


def usage_object(usage: Usage | None) -> dict[str, Any]:
    """OpenAI's Chat Completions ``usage`` object (cached tokens are part of the prompt)."""
    usage = usage or Usage()
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _wire_calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for call in calls
    ]


def chat_completion(response: Response, *, id: str, model: str, created: int) -> dict[str, Any]:
    """A whole answer as a ``chat.completion`` object."""
    choices: list[dict[str, Any]] = []
    for choice in response.choices:
        message = choice.message
        wire: dict[str, Any] = {
            "role": "assistant",
            "content": message.text if message.content is not None else None,
            "refusal": None,
        }
        if message.reasoning:
            wire["reasoning_content"] = message.reasoning
        if message.tool_calls:
            wire["tool_calls"] = _wire_calls(message.tool_calls)
        choices.append(
            {
                "index": choice.index,
                "message": wire,
                "finish_reason": finish_reason(choice.finish_reason),
                "logprobs": None,
            }
        )
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_object(response.usage),
    }
    if response.system_fingerprint:
        body["system_fingerprint"] = response.system_fingerprint
    return body


_ENCODER: Final = msgspec.json.Encoder()


@final
class ChatStreamWriter:
    """Turns one invocation's stream chunks into ``chat.completion.chunk`` events.

    Args:
        id: the completion id every chunk carries.
        model: the model name every chunk carries.
        include_usage: end with a chunk that has no choices and the usage.
    """

    __slots__ = (
        "_calls",
        "_created",
        "_finished",
        "_include_usage",
        "_model",
        "_prefix",
        "_started",
    )

    def __init__(self, *, id: str, model: str, include_usage: bool) -> None:
        self._created = int(time.time())
        self._model = model
        self._include_usage = include_usage
        self._started = False
        self._finished = False
        # (provider index, call id) of each call, in the order the calls started
        self._calls: list[tuple[int, str | None]] = []
        head = _ENCODER.encode({"id": id, "object": "chat.completion.chunk"})
        created = _ENCODER.encode(self._created)
        model_json = _ENCODER.encode(model)
        self._prefix = b"data: " + head[:-1] + b',"created":' + created + b',"model":'
        self._prefix += model_json + b',"choices":['

    def _event(self, choice: dict[str, Any]) -> bytes:
        return self._prefix + _ENCODER.encode(choice) + b"]}\n\n"

    def _call_index(self, index: int, id: str | None) -> tuple[int, bool]:
        """Our index of a call fragment, and whether it starts a new call."""
        for ours in range(len(self._calls) - 1, -1, -1):
            theirs, known = self._calls[ours]
            if theirs == index:
                if id and known and id != known:
                    break  # a server that numbers every call alike: a new call
                return ours, False
        self._calls.append((index, id))
        return len(self._calls) - 1, True

    def chunk(self, chunk: StreamChunk) -> bytes:
        """The events of one chunk (nothing for a chunk that says nothing new)."""
        delta: dict[str, Any] = {}
        if not self._started:
            self._started = True
            delta["role"] = "assistant"
            delta["content"] = ""
        if chunk.text:
            delta["content"] = chunk.text
        if chunk.reasoning:
            delta["reasoning_content"] = chunk.reasoning
        if chunk.tool_calls:
            fragments: list[dict[str, Any]] = []
            for call in chunk.tool_calls:
                index, first = self._call_index(call.index, call.id)
                fragment: dict[str, Any] = {"index": index}
                function: dict[str, Any] = {"arguments": call.arguments}
                if first:
                    fragment["id"] = call.id or f"call_{index}"
                    fragment["type"] = "function"
                    function["name"] = call.name or ""
                fragment["function"] = function
                fragments.append(fragment)
            delta["tool_calls"] = fragments
        out = b""
        if delta:
            out = self._event({"index": chunk.choice, "delta": delta, "finish_reason": None})
        if chunk.finish_reason is not None:
            self._finished = True
            out += self._event(
                {
                    "index": chunk.choice,
                    "delta": {},
                    "finish_reason": finish_reason(chunk.finish_reason),
                }
            )
        return out

    def end(self, usage: Usage | None) -> bytes:
        """The last events: a finish reason if none came, the usage if asked, ``[DONE]``."""
        out = b""
        if not self._started:
            out += self.chunk(StreamChunk())
        if not self._finished:
            reason = "tool_calls" if self._calls else "stop"
            out += self._event({"index": 0, "delta": {}, "finish_reason": reason})
        if self._include_usage:
            out += self._prefix[:-1] + b'[],"usage":' + _ENCODER.encode(usage_object(usage))
            out += b"}\n\n"
        return out + b"data: [DONE]\n\n"
