"""HTTP for the provider sessions: one path for every transport (not an actor).

`HttpPool` sends a codec's `HttpRequest` through our own HTTP/1.1 transport
(`FastHTTPTransport`), httpx's stock transport (through a proxy) or an injected one, the same
way for all three, and hands back an `HttpResponse`. It applies one header policy, decodes
gzip and deflate bodies, honours proxies and TLS settings (`settings_for` reads them from the
configuration), and is the one boundary where transport exceptions become typed `LLMError`s
(`translate_http_error`).
"""

from ._pool import HttpPool as HttpPool
from ._pool import HttpSettings as HttpSettings
from ._pool import PoolStatistics as PoolStatistics
from ._pool import TransportFactory as TransportFactory
from ._pool import translate_http_error as translate_http_error
from ._response import HttpResponse as HttpResponse
from ._settings import settings_for as settings_for
from ._transport import FastHTTPTransport as FastHTTPTransport
from ._transport import TransportStatistics as TransportStatistics

__all__ = [
    "FastHTTPTransport",
    "HttpPool",
    "HttpResponse",
    "HttpSettings",
    "PoolStatistics",
    "TransportFactory",
    "TransportStatistics",
    "settings_for",
    "translate_http_error",
]
