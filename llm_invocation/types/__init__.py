"""The domain types: messages, requests, responses, stream chunks and model information.

Everything here is a frozen, keyword-only `msgspec.Struct` that encodes to compact JSON
(defaults are omitted), so the same values travel between actors, over the WebSocket front
and into the response cache without a second set of models. Content parts are a tagged union
on the ``"type"`` field::

    Request ── messages: list[Message] ── content: str | list[Part]
       │                                   Part = TextPart | ImagePart | ReasoningPart
       ├── options: ModelOptions
       ├── tools: list[ToolSpec], tool_choice: ToolChoice
       └── response_format: ResponseFormat

    StreamChunk ... StreamChunk ──(StreamAggregator)──> Response ── choices: list[Choice]
                                                              └── usage: Usage

A `CacheControl` marker on a text or image part, a message or a tool spec is a
prompt-cache breakpoint (Anthropic's ``cache_control``; other providers cache by themselves
and ignore it), at most `CacheControl.MAX_PER_REQUEST` per request.

Values are validated when they are made *and* when they are decoded (msgspec calls
``__post_init__`` in both cases); a violation raises `llm_invocation.errors.InvalidRequest`.
`StreamChunk` and `ToolCallDelta` have no ``__post_init__``: they are on the hot path.

The types of the first specification (`CompletionRequest`, `ChatRequest`,
`CompletionResponse`, `ChatResponse`) are thin views that convert to and from `Request` and
`Response`.

Finish reasons and usage are normalised across providers (see ``WIRE-FORMATS.md`` 6.1-6.2):
``Usage.prompt_tokens`` includes cached tokens, ``Usage.completion_tokens`` includes reasoning
tokens, and the provider's own finish reason goes in ``metadata["native_finish_reason"]``.
"""

from ._content import AudioPart as AudioPart
from ._content import ContentAnnotations as ContentAnnotations
from ._content import ContentBlock as ContentBlock
from ._content import ContentPart as ContentPart
from ._content import ResourceLinkPart as ResourceLinkPart
from ._content import ResourcePart as ResourcePart
from ._messages import CacheControl as CacheControl
from ._messages import ImagePart as ImagePart
from ._messages import Message as Message
from ._messages import NamedToolChoice as NamedToolChoice
from ._messages import Part as Part
from ._messages import ReasoningPart as ReasoningPart
from ._messages import ResponseFormat as ResponseFormat
from ._messages import Role as Role
from ._messages import TextPart as TextPart
from ._messages import ToolCall as ToolCall
from ._messages import ToolChoice as ToolChoice
from ._messages import ToolSpec as ToolSpec
from ._messages import assistant as assistant
from ._messages import developer as developer
from ._messages import from_json as from_json
from ._messages import system as system
from ._messages import to_json as to_json
from ._messages import tool_result as tool_result
from ._messages import user as user
from ._requests import ChatRequest as ChatRequest
from ._requests import ChatResponse as ChatResponse
from ._requests import Choice as Choice
from ._requests import CompletionRequest as CompletionRequest
from ._requests import CompletionResponse as CompletionResponse
from ._requests import Feature as Feature
from ._requests import FinishReason as FinishReason
from ._requests import InvocationRequest as InvocationRequest
from ._requests import InvocationResponse as InvocationResponse
from ._requests import ModelInfo as ModelInfo
from ._requests import ModelOptions as ModelOptions
from ._requests import Request as Request
from ._requests import Response as Response
from ._requests import Usage as Usage
from ._stream import StreamAggregator as StreamAggregator
from ._stream import StreamChunk as StreamChunk
from ._stream import ToolCallDelta as ToolCallDelta

__all__ = [
    "AudioPart",
    "CacheControl",
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "CompletionRequest",
    "CompletionResponse",
    "ContentAnnotations",
    "ContentBlock",
    "ContentPart",
    "Feature",
    "FinishReason",
    "ImagePart",
    "InvocationRequest",
    "InvocationResponse",
    "Message",
    "ModelInfo",
    "ModelOptions",
    "NamedToolChoice",
    "Part",
    "ReasoningPart",
    "Request",
    "ResourceLinkPart",
    "ResourcePart",
    "Response",
    "ResponseFormat",
    "Role",
    "StreamAggregator",
    "StreamChunk",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolSpec",
    "Usage",
    "assistant",
    "developer",
    "from_json",
    "system",
    "to_json",
    "tool_result",
    "user",
]
