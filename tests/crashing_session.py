"""A provider session that crashes on purpose (no tests here)."""

from __future__ import annotations

from typing import Any

from llm_invocation.actors.provider_session import ProviderSession, SessionMsg, SessionStats
from llm_invocation.http import HttpPool
from llm_invocation.runtime import Context


class CrashOnStats(ProviderSession):
    """A session that crashes when asked for its statistics (and remembers its pools)."""

    pools: list[HttpPool] = []  # noqa: RUF012 - shared by the incarnations, on purpose

    def _open_pool(self) -> HttpPool:
        pool = super()._open_pool()
        self.pools.append(pool)
        return pool

    async def handle(self, msg: SessionMsg, ctx: Context) -> Any:
        if isinstance(msg, SessionStats):
            raise RuntimeError("the session crashed on purpose")
        return await super().handle(msg, ctx)
