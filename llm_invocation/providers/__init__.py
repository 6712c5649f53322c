"""Providers as sans-I/O codecs, and the extension points for your own.

A codec turns a `Request` into an `HttpRequest` and the provider's bytes back into
`StreamChunk`s, a `Response`, a typed error or `RateLimitInfo`, without doing any I/O; the
provider session actor sends and receives. The built-in codecs live in
`llm_invocation.providers.openai`, `.anthropic`, `.gemini`, `.compatible` (Azure and the
OpenAI-compatible presets) and `.mock`; `make_codec` builds the one a provider entry names.

To add a provider, subclass `ProviderCodec` (set ``kind``, implement ``encode``,
``stream_decoder`` returning a `StreamDecoder`, ``decode_response``, ``map_error`` and the
model-listing methods); the shared helpers (`error_for_status`, `parse_retry_after`,
`parse_duration_header`, `unix_to_datetime`) give the common mappings.
"""

from ._base import HttpRequest as HttpRequest
from ._base import ProviderCodec as ProviderCodec
from ._base import RateLimitInfo as RateLimitInfo
from ._base import RetryAdvice as RetryAdvice
from ._base import StreamDecoder as StreamDecoder
from ._base import error_for_status as error_for_status
from ._base import parse_duration_header as parse_duration_header
from ._base import parse_retry_after as parse_retry_after
from ._base import unix_to_datetime as unix_to_datetime
from ._registry import codec_kinds as codec_kinds
from ._registry import make_codec as make_codec

__all__ = [
    "HttpRequest",
    "ProviderCodec",
    "RateLimitInfo",
    "RetryAdvice",
    "StreamDecoder",
    "codec_kinds",
    "error_for_status",
    "make_codec",
    "parse_duration_header",
    "parse_retry_after",
    "unix_to_datetime",
]
