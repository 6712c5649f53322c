"""The chat page's two JSON documents: ``/config.json`` and ``/models.json``.

``/config.json`` answers at once, for anyone who can load the page::

    {"model": "mock:mock", "ws": "/ws", "models": "/models.json",
     "token_required": true, "mock_fallback": true}

``model`` is the model the client uses for a request that names none (``""`` when there is
none: the page then asks for one); ``mock_fallback`` says that no provider is configured
and the built-in mock answers.

``/models.json`` lists the models to pick from, named as a request's ``model`` takes them
(``"provider:id"``), with the default model beside them::

    {"default": "mock:mock", "models": [{"model": "mock:gpt-4o-mini", "provider": "mock",
     "label": "GPT-4o mini"}, ...]}

The list is the service's `llm_invocation.Client.list_models` (a service that cannot list
models offers an empty one). It wants the front's token: when tokens are configured, a
request without a valid one gets 401, which the page also reads to tell a refused token
from a server that is down. One listing runs at a time (requests that come meanwhile share
its answer) and its result is kept for `MODELS_TTL` seconds; a listing that fails, or takes
longer than `MODELS_TIMEOUT` seconds, is answered with 503 and
``{"error": {"code", "message"}}``, and is not kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, final, runtime_checkable

import msgspec
import trio

from ...errors import InvocationTimeout, LLMError
from ...types import ModelInfo
from ._http import RequestHead, StaticFile, TokenCheck, presented_tokens
from ._service import InvocationService

__all__ = ["MODELS_TIMEOUT", "MODELS_TTL", "PAGE_JSON", "PageInfo", "PageReply"]

log = logging.getLogger("llm_invocation.websocket")

MODELS_TTL: Final = 60.0
"""Seconds a model listing is kept."""
MODELS_TIMEOUT: Final = 10.0
"""Seconds a model listing may take before ``/models.json`` answers 503."""
PAGE_JSON: Final = frozenset({"/config.json", "/models.json"})
"""The paths `PageInfo.answer` serves."""

_JSON: Final = "application/json"
_ENCODER: Final = msgspec.json.Encoder()


class _KnowsModels(Protocol):
    def known_models(self) -> list[ModelInfo]: ...


@runtime_checkable
class _HasCodecs(Protocol):
    """A service that tells each provider's codec (`llm_invocation.Client` does)."""

    def codec(self, provider: str, /) -> _KnowsModels: ...


@runtime_checkable
class _ListsModels(Protocol):
    """A service that lists the models of its providers (`llm_invocation.Client` does)."""

    async def list_models(self) -> Sequence[ModelInfo]: ...


@final
@dataclass(frozen=True, slots=True)
class PageReply:
    """The answer to one of `PAGE_JSON`'s paths."""

    status: int
    file: StaticFile
    headers: tuple[tuple[str, str], ...] = ()


class _Entry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    model: str
    provider: str
    label: str | None = None


class _Models(msgspec.Struct, frozen=True, kw_only=True):
    default: str
    models: list[_Entry]


@dataclass(slots=True)
class _Attempt:
    """One listing in progress; requests that come meanwhile wait for its reply."""

    done: trio.Event = field(default_factory=trio.Event)
    reply: PageReply | None = None


def _error(error: LLMError) -> bytes:
    return _ENCODER.encode({"error": {"code": str(error.code), "message": str(error)}})


@final
class PageInfo:
    """Answers ``/config.json`` and ``/models.json`` for one front (see the module docstring).

    Args:
        service: what the front relays to; its configuration names the default model.
        tokens: the front's tokens; ``/models.json`` wants one of them when any is set.
    """

    def __init__(self, service: InvocationService, tokens: TokenCheck) -> None:
        self._service = service
        self._tokens = tokens
        self._listed: tuple[float, bytes] | None = None
        self._attempt: _Attempt | None = None

    def default_model(self) -> str:
        """The model of a request that names none, as the client picks it; ``""`` if none."""
        config = self._service.config
        model = config.default_model
        if model:
            return model
        provider = config.default_provider
        service = self._service
        if isinstance(service, _HasCodecs):
            try:
                known = service.codec(provider).known_models()
            except LLMError:
                known = []
            if known:
                return f"{provider}:{known[0].id}"
        return ""

    def config_json(self) -> bytes:
        """The body of ``/config.json``."""
        config = self._service.config
        return _ENCODER.encode(
            {
                "model": self.default_model(),
                "ws": "/ws",
                "models": "/models.json",
                "token_required": not self._tokens.open,
                "mock_fallback": config.mock_fallback,
            }
        )

    async def answer(self, head: RequestHead, peer: str) -> PageReply:
        """The answer to ``head``, whose path is one of `PAGE_JSON`.

        A listing that fails with an `LLMError`, or takes longer than `MODELS_TIMEOUT`, is
        answered with 503 (and not kept); a request without a valid token, with 401.
        """
        if head.path == "/config.json":
            return PageReply(200, StaticFile(_JSON, self.config_json()))
        if not self._authorized(head):
            log.info("refused the model list to %s: no valid token", peer)
            body = _ENCODER.encode({"error": {"code": "unauthorized", "message": "no valid token"}})
            return PageReply(
                401, StaticFile(_JSON, body), (("WWW-Authenticate", 'Bearer realm="llm"'),)
            )
        while True:
            listed = self._listed
            if listed is not None and trio.current_time() - listed[0] < MODELS_TTL:
                return PageReply(200, StaticFile(_JSON, listed[1]))
            attempt = self._attempt
            if attempt is None:
                return await self._list()
            # Another request is listing: share its outcome (a cancelled one leaves none,
            # and this request lists in its turn).
            await attempt.done.wait()
            if attempt.reply is not None:
                return attempt.reply

    def _authorized(self, head: RequestHead) -> bool:
        if self._tokens.open:
            return True
        accepted = False
        for token in presented_tokens(head)[0]:
            accepted |= self._tokens.accepts(token)
        return accepted

    async def _list(self) -> PageReply:
        attempt = self._attempt = _Attempt()
        try:
            infos: Sequence[ModelInfo] = ()
            service = self._service
            if isinstance(service, _ListsModels):
                with trio.move_on_after(MODELS_TIMEOUT) as scope:
                    infos = await service.list_models()
                if scope.cancelled_caught:
                    raise InvocationTimeout(
                        f"listing the models took longer than {MODELS_TIMEOUT:g} s",
                        details={"limit": MODELS_TIMEOUT},
                    )
            entries = [
                _Entry(
                    model=f"{info.provider}:{info.id}",
                    provider=info.provider,
                    label=info.display_name,
                )
                for info in infos
            ]
            body = _ENCODER.encode(_Models(default=self.default_model(), models=entries))
            self._listed = (trio.current_time(), body)
            reply = PageReply(200, StaticFile(_JSON, body))
        except LLMError as error:
            log.info("the chat page's model list failed: %s", error)
            reply = PageReply(503, StaticFile(_JSON, _error(error)))
        finally:
            self._attempt = None
            attempt.done.set()
        attempt.reply = reply
        return reply
