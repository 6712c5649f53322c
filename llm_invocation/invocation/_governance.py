"""Admission and settlement of an invocation: tokens, budget and rate limits.

Per candidate (a provider and model; fallbacks are other candidates): count the prompt
(`llm_invocation.tokens`) and reserve its worst case with the accountant (`CostExceeded`
refuses), then settle the cost exactly once however the candidate ended. Per HTTP attempt
(retries and fallbacks included): take a lease from the governor (`RateLimited` refuses or
waits) and give it back with the tokens the attempt used.

Reservations and leases are named here, before they are asked for: a caller cancelled while
it waits for one casts `Abandon` with its id, so nothing is left behind whichever await the
cancellation hit. Each is first asked for at once (`ActorRef.call_nowait`: the governor
grants a lease in memory when nobody waits and there is room, the accountant reserves when
no budget applies), which has no await at all; otherwise it is a round trip.

Settling does not wait for the accountant. The usage is priced here (the price book is pure)
by `llm_invocation.pricing.budget_cost`: the model's price when the book knows it, or else
the cost the provider reported (``Usage.reported_cost``, OpenRouter's ``usage.cost``), or else
it is unknown (None, never a made-up 0); the reported cost is kept beside it either way. The
settlement is then cast to the accountant, which applies settlements in the order they
arrive (taken at once, `ActorRef.cast_nowait`, when the accountant has nothing else in
hand; leases are given back the same way). Casting never drops one: when the accountant's
mailbox is full it waits (backpressure), shielded from the caller's cancellation and bounded
by `SETTLE_LIMIT`. A settlement that cannot be handed over at all keeps the safe side: its
reservation keeps the worst case charged until it expires, and it is logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, final

import msgspec
import trio

from .. import tokens
from .._ids import new_id
from ..actors.accountant import Abandon as AbandonReservation
from ..actors.accountant import Reservation, Reserve, Settle
from ..actors.governor import Abandon as AbandonLease
from ..actors.governor import Acquire, Lease, Release
from ..errors import LLMError
from ..pricing import budget_cost
from ..runtime import ActorError, ActorRef, MailboxFull, Msg
from ..types import Request, Response, Usage

if TYPE_CHECKING:
    from ..actors.accountant import AccountantMsg
    from ..actors.governor import GovernorMsg
    from ..pricing import PriceBook
    from ..providers._base import ProviderCodec

__all__ = ["SETTLE_LIMIT", "Admission", "Governance", "Status", "estimated_usage"]

log = logging.getLogger("llm_invocation.invocation")

SETTLE_LIMIT: Final = 5.0
"""How long handing a cast (a settlement, an abandoned reservation or lease) to a full
mailbox may wait, shielded from the caller's cancellation, before it is given up."""

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


def _output_limit(codec: ProviderCodec, model: str) -> int | None:
    """The model's output limit from what the codec knows of it (a dated snapshot of a known
    model shares its limit)."""
    best: tuple[int, int | None] | None = None
    for info in codec.known_models():
        if info.id == model:
            return info.max_output_tokens
        if model.startswith(info.id + "-") and (best is None or len(info.id) > best[0]):
            best = (len(info.id), info.max_output_tokens)
    return best[1] if best is not None else None


@final
class Governance:
    """The invocation layer's link to the governor and the accountant.

    Args:
        governor: the governor actor.
        accountant: the accountant actor.
        price_providers: our provider names to the names prices are looked up under.
        token_providers: our provider names to the names token rules are chosen by.
        prices: the price book settlements are priced with (None: the accountant prices
            them).
        codecs: the providers' codecs, for the models' output limits.
        default_max_tokens: the completion tokens reserved for a request that sets no
            ``max_tokens``, unless the model's output limit is smaller.
    """

    def __init__(
        self,
        governor: ActorRef[GovernorMsg],
        accountant: ActorRef[AccountantMsg],
        price_providers: dict[str, str],
        token_providers: dict[str, str],
        *,
        prices: PriceBook | None = None,
        codecs: Mapping[str, ProviderCodec] | None = None,
        default_max_tokens: int = tokens.DEFAULT_MAX_COMPLETION_TOKENS,
    ) -> None:
        self.governor = governor
        self.accountant = accountant
        self.prices = prices
        self.default_max_tokens = default_max_tokens
        self._price_providers = price_providers
        self._token_providers = token_providers
        self._codecs = dict(codecs or {})
        self._budgets: dict[tuple[str, str], int] = {}
        self._handover_failed = 0
        self._handover_logged = False
        self._count_logged = False

    @property
    def lost_casts(self) -> int:
        """Settlements and give-backs that could not be handed to their actor (their
        reservation or lease was left to expire, keeping the safe side)."""
        return self._handover_failed

    def price_provider(self, provider: str, model: str) -> str:
        """The provider name ``model`` of our ``provider`` is priced under: ours when a price
        override is keyed by it (``"local:llama3"``), else the price table's name for it
        (a compatible preset's, or the codec's kind)."""
        if self.prices is not None and self.prices.has_override(provider, model):
            return provider
        return self._price_providers.get(provider, provider)

    def completion_budget(self, provider: str, model: str) -> int:
        """The completion tokens reserved for a request to ``model`` that sets no
        ``max_tokens``: ``default_max_tokens``, or the model's output limit when smaller
        (from the codec's model information)."""
        key = (provider, model)
        budget = self._budgets.get(key)
        if budget is None:
            budget = self.default_max_tokens
            codec = self._codecs.get(provider)
            limit = _output_limit(codec, model) if codec is not None else None
            if limit is not None and 0 < limit < budget:
                budget = limit
            self._budgets[key] = budget
        return budget

    async def reserve(self, request: Request, provider: str, model: str) -> Admission:
        """Count the prompt and reserve the worst-case cost of one candidate.

        Raises:
            CostExceeded: a cap or a budget refuses it, or its price is unknown.
        """
        probe = request if request.model == model else msgspec.structs.replace(request, model=model)
        price_provider = self.price_provider(provider, model)
        prices = self.prices
        if prices is not None and not prices.ready(price_provider, model):
            # The price table loads once per process, off the event loop: the lookups
            # below and the accountant's are then dictionary reads.
            await prices.load()
        estimate = await tokens.count_request(
            probe,
            provider=self._token_providers.get(provider, provider),
            default_max_tokens=self.completion_budget(provider, model),
        )
        if request.options.max_tokens is None and self.prices is not None:
            # The price data knows the context window: the completion cannot outgrow it.
            window = self.prices.context_window(price_provider, model)
            if window is not None:
                room = max(1, window - estimate.prompt_tokens)
                if room < estimate.max_completion_tokens:
                    estimate = msgspec.structs.replace(estimate, max_completion_tokens=room)
        tags = _tags(request)
        rid = new_id()
        message = Reserve(
            provider=price_provider,
            model=model,
            prompt_tokens=estimate.prompt_tokens,
            max_tokens=estimate.max_completion_tokens,
            tags=tags,
            reservation=rid,
        )
        try:
            # Answered at once when no budget applies; otherwise a round trip.
            reservation = self.accountant.call_nowait(message)
        except trio.WouldBlock:
            pass
        else:
            return Admission(provider, model, estimate, reservation)
        try:
            reservation = await self.accountant.call(message)
        except LLMError:
            raise  # refused: nothing was reserved
        except BaseException:
            # Cancelled (or the accountant failed) while the answer was on its way.
            abandon = AbandonReservation(
                reservation=rid, provider=price_provider, model=model, tags=tags
            )
            await self._hand_over(self.accountant, abandon)
            raise
        return Admission(provider, model, estimate, reservation)

    async def acquire(self, admission: Admission) -> Lease:
        """Take a rate-limit lease for one HTTP attempt of ``admission``'s candidate.

        Raises:
            RateLimited: the governor refuses it (or it waited longer than ``max_wait``).
        """
        lease = new_id()
        message = Acquire(
            provider=admission.provider,
            model=admission.model,
            tokens=admission.estimate.total,
            lease=lease,
        )
        try:
            # Granted at once when nobody waits and there is room (rate limits in memory);
            # otherwise a round trip, waiting in line if it must.
            return self.governor.call_nowait(message)
        except trio.WouldBlock:
            pass
        try:
            return await self.governor.call(message)
        except LLMError:
            raise  # refused: no lease
        except BaseException:
            # Cancelled while queued or while the answer was on its way: drop the place in
            # the queue, or give the lease back.
            await self._hand_over(self.governor, AbandonLease(lease=lease))
            raise

    def release(self, lease: Lease, used: int) -> None:
        """Give a lease back with the tokens its attempt used (a cast: never waits)."""
        message = Release(lease=lease, used=used)
        try:
            try:
                self.governor.cast_nowait(message)  # given back at once when it can be
            except trio.WouldBlock:
                self.governor.send_nowait(message)
        except (MailboxFull, ActorError) as exc:
            self._lost("a rate-limit lease was left to expire", exc)

    def price(self, admission: Admission, usage: Usage) -> Usage:
        """``usage`` with the cost budgets count (`budget_cost`): at the model's price, else
        the cost the provider reported, else unknown (None). ``reported_cost`` is kept."""
        book_cost = None
        if self.prices is not None:
            book_cost = self.prices.cost(
                usage, provider=admission.reservation.provider, model=admission.model
            )
        cost = budget_cost(usage, book_cost)
        current = usage.cost
        if cost is current or (cost is not None and current is not None and cost == current):
            return usage
        # (A Decimal compared with None asks the numbers ABCs: slow on this hot path.)
        return msgspec.structs.replace(usage, cost=cost)

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
        ``response`` (what was streamed) and the prompt estimate. The settlement is cast to
        the accountant (see the module documentation); it completes for a cancelled caller
        too. Settling twice is a no-op.
        """
        if admission.settled:
            return usage or Usage()
        admission.settled = True
        if usage is None:
            usage = await self._count_usage(admission, response)
        usage = self.price(admission, usage)
        message = Settle(
            reservation=admission.reservation,
            usage=usage,
            status=status,
            error_code=error.code.value if error is not None else None,
            duration=time.monotonic() - admission.started,
            request_id=request_id,
            at=time.time(),
        )
        try:
            try:
                self.accountant.cast_nowait(message)  # taken at once when it can be
            except trio.WouldBlock:
                self.accountant.send_nowait(message)
        except MailboxFull:
            await self._hand_over(self.accountant, message)
        except ActorError as exc:
            self._lost("a settlement could not reach the accountant", exc)
        return usage

    async def _count_usage(self, admission: Admission, response: Response | None) -> Usage:
        """`estimated_usage`, its tokenizer loaded off the event loop first (it is, unless
        the prompt was counted by the provider). The wait is shielded, as settling is, and
        bounded by `SETTLE_LIMIT`; a tokenizer that cannot be loaded charges the completion
        at its worst case (the reserved completion tokens), logged once."""
        encoding = tokens.encoding_name_for_model(admission.model)
        streamed = response is not None and bool(
            response.text or response.reasoning or response.tool_calls
        )
        if not streamed or tokens.is_loaded(encoding):
            return estimated_usage(admission, response)
        problem: BaseException | None = None
        with trio.move_on_after(SETTLE_LIMIT, shield=True) as bounded:
            try:
                await tokens.load_encoding(encoding)
            except LLMError as exc:
                problem = exc
        if bounded.cancelled_caught:
            problem = TimeoutError(f"waited {SETTLE_LIMIT:g}s")
        if problem is None:
            return estimated_usage(admission, response)
        if not self._count_logged:
            self._count_logged = True
            log.error(
                "the tokenizer to count a completion could not be loaded (%s): it is charged "
                "at its worst case, the reserved completion tokens",
                problem,
            )
        return Usage(
            prompt_tokens=admission.estimate.prompt_tokens,
            completion_tokens=admission.estimate.max_completion_tokens,
            estimated=True,
        )

    async def record_refusal(
        self, request: Request, provider: str, model: str, error: LLMError
    ) -> None:
        """Record a call refused before anything was reserved or sent (a middleware's veto):
        one ledger row with status ``error``, ``error``'s code and no usage, at no cost. It
        is cast like a settlement, reserves nothing and touches no budget's spend."""
        price_provider = self.price_provider(provider, model)
        reservation = Reservation(
            id=new_id(),
            provider=price_provider,
            model=model,
            worst_case=Decimal(0),
            scopes=[],
            tags=_tags(request),
        )
        message = Settle(
            reservation=reservation,
            usage=Usage(cost=Decimal(0)),
            status="error",
            error_code=error.code.value,
            at=time.time(),
        )
        await self._hand_over(self.accountant, message)

    async def _hand_over(self, ref: ActorRef[Any], msg: Msg) -> None:
        """Cast ``msg``, waiting for room in a full mailbox (shielded, at most
        `SETTLE_LIMIT`); a cast that cannot be handed over is logged once."""
        try:
            ref.send_nowait(msg)
            return
        except MailboxFull:
            pass
        except ActorError as exc:
            self._lost("a cast could not reach its actor", exc)
            return
        with trio.move_on_after(SETTLE_LIMIT, shield=True) as bounded:
            try:
                await ref.send(msg)
            except ActorError as exc:
                self._lost("a cast could not reach its actor", exc)
                return
        if bounded.cancelled_caught:
            self._lost(
                "a cast found no room in a full mailbox",
                TimeoutError(f"waited {SETTLE_LIMIT:g}s"),
            )

    def _lost(self, what: str, exc: BaseException) -> None:
        self._handover_failed += 1
        if not self._handover_logged:
            self._handover_logged = True
            log.error(
                "%s (%s): its reservation or lease keeps the worst case until it expires "
                "(further ones are counted in the client's statistics)",
                what,
                exc,
            )
