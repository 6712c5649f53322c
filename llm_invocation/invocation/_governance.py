"""Admission and settlement of one invocation attempt: tokens, budget, rate limits.

Before an attempt is sent: count the prompt (`llm_invocation.tokens`), reserve its worst
case with the accountant (`CostExceeded` refuses), then take a lease from the governor
(`RateLimited` refuses or waits). After it, however it ended: release the lease with the
tokens actually used and settle the cost, shielded from cancellation (bounded), so a
cancelled or failed stream pays for what it consumed and frees its capacity.
"""

from __future__ import annotations

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

__all__ = ["Admission", "Governance"]

# Settling after a cancellation may take this long (shielded) before it is given up; the
# reservation then expires by itself in the store.
SETTLE_LIMIT: Final = 5.0

Status = Literal["ok", "error", "cancelled"]


@final
class Admission:
    """What one admitted attempt holds until it is settled."""

    __slots__ = ("estimate", "lease", "model", "provider", "reservation", "settled", "started")

    def __init__(
        self,
        provider: str,
        model: str,
        estimate: tokens.TokenEstimate,
        reservation: Reservation,
        lease: Lease,
    ) -> None:
        self.provider = provider
        self.model = model
        self.estimate = estimate
        self.reservation = reservation
        self.lease = lease
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
    """The facade's link to the governor and the accountant."""

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

    async def admit(self, request: Request, provider: str, model: str) -> Admission:
        """Reserve the budget and take a rate-limit lease for one attempt.

        Raises:
            CostExceeded: a cap or a budget refuses it.
            RateLimited: the governor refuses it.
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
        try:
            lease = await self.governor.call(
                Acquire(provider=provider, model=model, tokens=estimate.total)
            )
        except BaseException:
            with trio.move_on_after(SETTLE_LIMIT, shield=True):
                await self.accountant.call(
                    Settle(reservation=reservation, usage=Usage(), status="error")
                )
            raise
        return Admission(provider, model, estimate, reservation, lease)

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
        """Release the lease and settle the cost; returns the usage with its cost.

        Runs shielded (bounded by `SETTLE_LIMIT`), so it completes even for a cancelled
        caller. Settling twice is a no-op.
        """
        if admission.settled:
            return usage or Usage()
        admission.settled = True
        if usage is None:
            usage = estimated_usage(admission, response)
        used = usage.total_tokens if usage.total_tokens else admission.estimate.prompt_tokens
        try:
            self.governor.send_nowait(Release(lease=admission.lease, used=used))
        except (MailboxFull, ActorError):
            pass  # the lease expires by itself
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
            except (LLMError, ActorError):
                pass  # reported by the accountant; the reservation expires
            else:
                settled_usage = settled.usage
        return settled_usage
