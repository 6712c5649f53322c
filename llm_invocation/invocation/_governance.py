"""Admission and settlement of an invocation: tokens, budget and rate limits.

Per candidate (a provider and model; fallbacks are other candidates): count the prompt
(`llm_invocation.tokens`) and reserve its worst case with the accountant (`CostExceeded`
refuses), then settle the cost exactly once however the candidate ended. Per HTTP attempt
(retries included): take a lease from the governor (`RateLimited` refuses or waits) and give
it back with the tokens the attempt used. Settling runs shielded from cancellation (bounded),
so a cancelled or failed stream pays for what it consumed and frees its capacity.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final, Literal, final

import msgspec
import trio

from .. import tokens
from ..actors.accountant import Reservation, Reserve, Settle
from ..actors.governor import Acquire, Lease, Release
from ..errors import LLMError
from ..runtime import ActorError, ActorRef, MailboxFull
from ..types import Request, Response, Usage

if TYPE_CHECKING:
    from ..actors.accountant import AccountantMsg
    from ..actors.governor import GovernorMsg

__all__ = ["Admission", "Governance", "Status", "estimated_usage"]

log = logging.getLogger("llm_invocation.invocation")

# Settling after a cancellation may take this long (shielded) before it is given up; the
# reservation then expires by itself in the store, keeping its worst case charged.
SETTLE_LIMIT: Final = 5.0

Status = Literal["ok", "error", "cancelled"]


@final
class Admission:
    """What one candidate of an invocation holds until it is settled: its reservation."""

    __slots__ = ("estimate", "model", "provider", "reservation", "settled", "started")

    def __init__(
        self,
        provider: str,
        model: str,
        estimate: tokens.TokenEstimate,
        reservation: Reservation,
    ) -> None:
        self.provider = provider
        self.model = model
        self.estimate = estimate
        self.reservation = reservation
        self.started = time.monotonic()
        self.settled = False


def _tags(request: Request) -> dict[str, str]:
    metadata = request.metadata
    if not metadata:
        return {}
    return {str(k): str(v) for k, v in metadata.items() if isinstance(v, str | int | float | bool)}


def estimated_usage(admission: Admission, response: Response | None) -> Usage:
    """Usage counted locally when the provider reported none (a cut or cancelled stream)."""
    completion = 0
    if response is not None:
        pieces = [response.text, response.reasoning]
        pieces.extend(call.name + call.arguments for call in response.tool_calls)
        text = "".join(pieces)
        if text:
            completion = tokens.count_text(text, model=admission.model)
    return Usage(
        prompt_tokens=admission.estimate.prompt_tokens,
        completion_tokens=completion,
        estimated=True,
    )


@final
class Governance:
    """The invocation layer's link to the governor and the accountant."""

    def __init__(
        self,
        governor: ActorRef[GovernorMsg],
        accountant: ActorRef[AccountantMsg],
        price_providers: dict[str, str],
        token_providers: dict[str, str],
    ) -> None:
        self.governor = governor
        self.accountant = accountant
        self._price_providers = price_providers
        self._token_providers = token_providers

    async def reserve(self, request: Request, provider: str, model: str) -> Admission:
        """Count the prompt and reserve the worst-case cost of one candidate.

        Raises:
            CostExceeded: a cap or a budget refuses it.
        """
        probe = msgspec.structs.replace(request, model=model)
        estimate = await tokens.count_request(
            probe, provider=self._token_providers.get(provider, provider)
        )
        reservation = await self.accountant.call(
            Reserve(
                provider=self._price_providers.get(provider, provider),
                model=model,
                prompt_tokens=estimate.prompt_tokens,
                max_tokens=estimate.max_completion_tokens,
                tags=_tags(request),
            )
        )
        return Admission(provider, model, estimate, reservation)

    async def acquire(self, admission: Admission) -> Lease:
        """Take a rate-limit lease for one HTTP attempt of ``admission``'s candidate.

        Raises:
            RateLimited: the governor refuses it (or it waited longer than ``max_wait``).
        """
        return await self.governor.call(
            Acquire(
                provider=admission.provider,
                model=admission.model,
                tokens=admission.estimate.total,
            )
        )

    def release(self, lease: Lease, used: int) -> None:
        """Give a lease back with the tokens its attempt used (a cast: never waits)."""
        try:
            self.governor.send_nowait(Release(lease=lease, used=used))
        except (MailboxFull, ActorError) as exc:
            # The lease expires by itself in the store; its capacity comes back then.
            log.warning("a rate-limit lease was left to expire: %s", exc)

    async def settle(
        self,
        admission: Admission,
        usage: Usage | None,
        *,
        status: Status,
        error: LLMError | None = None,
        response: Response | None = None,
        request_id: str | None = None,
    ) -> Usage:
        """Settle the cost of ``admission``'s candidate; returns the usage with its cost.

        ``usage`` None means the provider reported none: the usage is counted locally from
        ``response`` (what was streamed) and the prompt estimate. Runs shielded (bounded by
        `SETTLE_LIMIT`), so it completes even for a cancelled caller. Settling twice is a
        no-op.
        """
        if admission.settled:
            return usage or Usage()
        admission.settled = True
        if usage is None:
            usage = estimated_usage(admission, response)
        settled_usage = usage
        with trio.move_on_after(SETTLE_LIMIT, shield=True):
            try:
                settled = await self.accountant.call(
                    Settle(
                        reservation=admission.reservation,
                        usage=usage,
                        status=status,
                        error_code=error.code.value if error is not None else None,
                        duration=time.monotonic() - admission.started,
                        request_id=request_id,
                    )
                )
            except (LLMError, ActorError) as exc:
                log.warning("settling an invocation failed; its reservation expires: %s", exc)
            else:
                settled_usage = settled.usage
        return settled_usage
