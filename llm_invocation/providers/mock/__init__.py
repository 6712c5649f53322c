"""The built-in mock provider: OpenAI's wire format (and the others'), answered in-process.

`MockCodec` speaks OpenAI's Chat Completions format through the real codec, SSE parser and
session, so everything above the transport runs exactly as with a real provider.
`MockTransport` answers without sockets from `Scenarios`: scripted text, tool calls, usage,
timing and injected failures. `FakeProvider` is the same answering logic without I/O, which
`llm_invocation.testing`'s fake server plays over real sockets. The renderers write each
provider's wire format from a scenario, independently of the codecs, so tests can use them
as an oracle.
"""

from ._codec import MOCK_BASE_URL as MOCK_BASE_URL
from ._codec import MockCodec as MockCodec
from ._render import Event as Event
from ._render import Renderer as Renderer
from ._render import WireFormat as WireFormat
from ._render_anthropic import AnthropicRenderer as AnthropicRenderer
from ._render_gemini import GeminiRenderer as GeminiRenderer
from ._render_openai import OpenAIRenderer as OpenAIRenderer
from ._render_responses import ResponsesRenderer as ResponsesRenderer
from ._scenario import Disconnect as Disconnect
from ._scenario import ErrorEvent as ErrorEvent
from ._scenario import Failure as Failure
from ._scenario import HttpError as HttpError
from ._scenario import Malformed as Malformed
from ._scenario import Scenario as Scenario
from ._scenario import Scenarios as Scenarios
from ._scenario import ScriptedToolCall as ScriptedToolCall
from ._scenario import ScriptedUsage as ScriptedUsage
from ._scenario import Stall as Stall
from ._scenario import tokens_per_second as tokens_per_second
from ._transport import MAX_RECORDED as MAX_RECORDED
from ._transport import FakeProvider as FakeProvider
from ._transport import MockTransport as MockTransport
from ._transport import RecordedRequest as RecordedRequest
from ._transport import Reply as Reply
from ._transport import renderer_for as renderer_for

__all__ = [
    "AnthropicRenderer",
    "Disconnect",
    "ErrorEvent",
    "Event",
    "Failure",
    "FakeProvider",
    "GeminiRenderer",
    "HttpError",
    "MAX_RECORDED",
    "MOCK_BASE_URL",
    "Malformed",
    "MockCodec",
    "MockTransport",
    "OpenAIRenderer",
    "RecordedRequest",
    "Renderer",
    "Reply",
    "ResponsesRenderer",
    "Scenario",
    "Scenarios",
    "ScriptedToolCall",
    "ScriptedUsage",
    "Stall",
    "WireFormat",
    "renderer_for",
    "tokens_per_second",
]
