"""The client facade: `open_client` starts the supervision tree, `Client` is what users call."""

from ._facade import Client as Client
from ._facade import ClientStatistics as ClientStatistics
from ._tree import open_anthropic_client as open_anthropic_client
from ._tree import open_client as open_client
from ._tree import open_gemini_client as open_gemini_client
from ._tree import open_mock_client as open_mock_client
from ._tree import open_openai_client as open_openai_client

__all__ = [
    "Client",
    "ClientStatistics",
    "open_anthropic_client",
    "open_client",
    "open_gemini_client",
    "open_mock_client",
    "open_openai_client",
]
