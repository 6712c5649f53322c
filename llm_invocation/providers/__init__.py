"""Providers as sans-I/O codecs, and the extension points for your own.

A codec turns a `Request` into an `HttpRequest` and the provider's bytes back into
`StreamChunk`s, a `Response`, a typed error or `RateLimitInfo`, without doing any I/O; the
provider session actor sends and receives. The built-in codecs live in
`llm_invocation.providers.openai`, `.anthropic`, `.gemini`, `.compatible` (Azure and the
OpenAI-compatible presets) and `.mock`; `make_codec` builds the one a provider entry names.

To add a provider of your own, subclass `ProviderCodec` (set ``kind`` and
``default_base_url``; implement ``encode``, ``stream_decoder`` returning a `StreamDecoder`,
``decode_response``, ``map_error`` and the model-listing methods) and register it on a
running client with ``await client.register_provider(name, codec)`` (or pass
``providers={name: codec}`` to `open_client`). The helpers give the common parts:
`error_for_status` (the usual status-to-error mapping), `parse_retry_after`,
`parse_duration_header`, `checked_usage` and `checked_rate_limits` (drop values that cannot
be true), `datetime_from_unix` and `unix_to_datetime`, `JSON_ERRORS` (what a JSON decode
raises) and `SSEParser` for server-sent events. The types a codec reads and builds are
re-exported here too. See ``docs/providers.md``, "Custom providers".
"""

from ..errors import ErrorInfo as ErrorInfo
from ..types import Choice as Choice
from ..types import Feature as Feature
from ..types import Message as Message
from ..types import ModelInfo as ModelInfo
from ..types import Request as Request
from ..types import Response as Response
from ..types import StreamChunk as StreamChunk
from ..types import ToolCall as ToolCall
from ..types import ToolCallDelta as ToolCallDelta
from ..types import Usage as Usage
from ._base import JSON_ERRORS as JSON_ERRORS
from ._base import HttpRequest as HttpRequest
from ._base import ProviderCodec as ProviderCodec
from ._base import RateLimitInfo as RateLimitInfo
from ._base import RetryAdvice as RetryAdvice
from ._base import StreamDecoder as StreamDecoder
from ._base import checked_rate_limits as checked_rate_limits
from ._base import checked_usage as checked_usage
from ._base import datetime_from_unix as datetime_from_unix
from ._base import error_for_status as error_for_status
from ._base import parse_duration_header as parse_duration_header
from ._base import parse_retry_after as parse_retry_after
from ._base import unix_to_datetime as unix_to_datetime
from ._registry import CodecFactory as CodecFactory
from ._registry import CodecSpec as CodecSpec
from ._registry import codec_kinds as codec_kinds
from ._registry import make_codec as make_codec
from ._sse import SSEEvent as SSEEvent
from ._sse import SSEParser as SSEParser

__all__ = [
    "JSON_ERRORS",
    "Choice",
    "CodecFactory",
    "CodecSpec",
    "ErrorInfo",
    "Feature",
    "HttpRequest",
    "Message",
    "ModelInfo",
    "ProviderCodec",
    "RateLimitInfo",
    "Request",
    "Response",
    "RetryAdvice",
    "SSEEvent",
    "SSEParser",
    "StreamChunk",
    "StreamDecoder",
    "ToolCall",
    "ToolCallDelta",
    "Usage",
    "checked_rate_limits",
    "checked_usage",
    "codec_kinds",
    "datetime_from_unix",
    "error_for_status",
    "make_codec",
    "parse_duration_header",
    "parse_retry_after",
    "unix_to_datetime",
]
