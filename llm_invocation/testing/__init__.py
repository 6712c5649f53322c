"""Test helpers: a fake LLM provider, in-process or on real sockets, driven by scenarios.

Script what the provider answers, then point a client at it::

    from llm_invocation.testing import HttpError, Scenario, Scenarios, open_fake_server

    scenarios = Scenarios()
    scenarios.add("flaky", Scenario(failure=HttpError(status=429, retry_after=1)),
                  Scenario(text="ok"))
    async with open_fake_server(scenarios) as server:
        ...  # base_url=server.base_url("openai"), model="flaky"

or, without sockets, ``httpx.AsyncClient(transport=MockTransport(scenarios))``. Renderers
produce the exact bytes of each wire format for codec tests; ``python -m
llm_invocation.testing.fake_server`` runs the server in its own process for benchmarks.
"""

from ._render import Event as Event
from ._render import Renderer as Renderer
from ._render import WireFormat as WireFormat
from ._render_anthropic import AnthropicRenderer as AnthropicRenderer
from ._render_gemini import GeminiRenderer as GeminiRenderer
from ._render_openai import OpenAIRenderer as OpenAIRenderer
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
from ._server import SEND_TIME as SEND_TIME
from ._server import FakeServer as FakeServer
from ._server import ServerStatistics as ServerStatistics
from ._server import open_fake_server as open_fake_server
from ._server import serve_fake_server as serve_fake_server
from ._transport import MockTransport as MockTransport
from ._transport import RecordedRequest as RecordedRequest
from ._transport import renderer_for as renderer_for

__all__ = [
    "SEND_TIME",
    "AnthropicRenderer",
    "Disconnect",
    "ErrorEvent",
    "Event",
    "Failure",
    "FakeServer",
    "GeminiRenderer",
    "HttpError",
    "Malformed",
    "MockTransport",
    "OpenAIRenderer",
    "RecordedRequest",
    "Renderer",
    "Scenario",
    "Scenarios",
    "ScriptedToolCall",
    "ScriptedUsage",
    "ServerStatistics",
    "Stall",
    "WireFormat",
    "open_fake_server",
    "renderer_for",
    "serve_fake_server",
    "tokens_per_second",
]
