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

from ..providers.mock import AnthropicRenderer as AnthropicRenderer
from ..providers.mock import Disconnect as Disconnect
from ..providers.mock import ErrorEvent as ErrorEvent
from ..providers.mock import Event as Event
from ..providers.mock import Failure as Failure
from ..providers.mock import GeminiRenderer as GeminiRenderer
from ..providers.mock import HttpError as HttpError
from ..providers.mock import Malformed as Malformed
from ..providers.mock import MockTransport as MockTransport
from ..providers.mock import OpenAIRenderer as OpenAIRenderer
from ..providers.mock import RecordedRequest as RecordedRequest
from ..providers.mock import Renderer as Renderer
from ..providers.mock import ResponsesRenderer as ResponsesRenderer
from ..providers.mock import Scenario as Scenario
from ..providers.mock import Scenarios as Scenarios
from ..providers.mock import ScriptedToolCall as ScriptedToolCall
from ..providers.mock import ScriptedUsage as ScriptedUsage
from ..providers.mock import Stall as Stall
from ..providers.mock import WireFormat as WireFormat
from ..providers.mock import renderer_for as renderer_for
from ..providers.mock import tokens_per_second as tokens_per_second
from ._server import SEND_TIME as SEND_TIME
from ._server import FakeServer as FakeServer
from ._server import ServerStatistics as ServerStatistics
from ._server import open_fake_server as open_fake_server
from ._server import serve_fake_server as serve_fake_server

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
    "ResponsesRenderer",
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
