"""Model prices and the exact cost of a call.

A `PriceBook` answers two questions for the accountant: what does this model cost per million
tokens (`PriceBook.price`), and what did this call cost (`PriceBook.cost`), or could it cost at
most (`PriceBook.worst_case`). Prices come from, in order:

1. the configured overrides (``CostConfig.prices``), keyed ``"provider:model"`` or ``"model"``,
   where ``*`` matches any run of characters (``"openai:gpt-4o*"``, ``"ollama:*"``, ``"*"``);
   matching ignores case; an exact key wins over a pattern, and a longer pattern (more literal
   characters) over a shorter one;
2. the ``mock`` provider's fixed demonstration price, `MOCK_PRICE`, so the demos show a cost;
   and zero, `LOCAL_PRICE`, for the providers the book is told run locally (``free_providers``:
   the client names the local presets, ``ollama`` and ``vllm``), which cost nothing per token;
3. the price table of `genai-prices <https://github.com/pydantic/genai-prices>`_, with our
   provider names mapped to its provider ids (``gemini`` is its ``google``; ``azure`` is its
   ``azure``, which falls back to OpenAI's prices; ``groq``, ``together``, ``openrouter``,
   ``deepseek`` and ``mistral`` keep their names; another name is tried as a genai-prices id
   as it is, so a compatible provider called ``fireworks`` or ``x-ai`` is priced too; the local
   ``ollama``, ``vllm`` and ``openai-compatible`` have no table price).

A model found nowhere has an unknown price: `PriceBook.cost` returns None, never a made-up 0,
and the book logs one warning per ``(provider, model)`` on the ``llm_invocation.pricing``
logger. Give a fine-tune or a local model a price with an override (``"openai:ft:..."``,
``"ollama:*"``, 0 for a free local model). The accountant refuses a model of unknown price
when a cap or a budget applies, unless ``cost_control.unknown_price`` is ``"allow"``.

Which cost budgets count (`budget_cost`): the price book's when it knows the model's price,
else the cost the provider reported (``Usage.reported_cost``: OpenRouter's ``usage.cost``),
else unknown. Both are recorded: a settled `Usage` has the counted one in ``cost`` and the
provider's own figure, untouched, in ``reported_cost``.

Arithmetic is exact: prices are `~decimal.Decimal`, a cost is computed with integers and
becomes a `~decimal.Decimal` once, so no float ever enters a sum. With the normalised `Usage`
(prompt tokens include cache reads and writes, completion tokens include reasoning)::

    cost = (prompt - cache_read - cache_write) * input
         + cache_read * cache_read_price        (input price when there is none)
         + (cache_write - cache_write_1h) * cache_write_price   (input price when none)
         + cache_write_1h * cache_write_1h_price               (cache_write_price when none)
         + (completion - reasoning) * output
         + reasoning * reasoning_price          (output price when there is none)
         all / 1,000,000

genai-prices prices may change with the date of the request (`PriceBook.cost` takes ``at``)
and with the size of the prompt: a tier such as Gemini 2.5 Pro's or Claude's above 200,000
input tokens applies its price to *all* tokens of a call whose prompt (cached tokens included)
is larger than the tier's start, as genai-prices does. Anthropic's cache writes are priced by
their lifetime: ``Usage.cache_write_1h_tokens`` (written for an hour) at the 1-hour write
price (twice the input price in genai-prices' table), the rest at the 5-minute one (1.25
times), and reads at the cache-read price (a tenth). Request-specific variants (batch,
priority service tiers) are not applied: our `Usage` does not say which applied. The book
caches each model's lookup and its compiled prices, so after the first call for a model
`PriceBook.cost` is a dictionary lookup and a few integer products (about 1-2 us). Build a
new book to pick up updated genai-prices data.

genai-prices is imported lazily, once per process, on the first lookup that needs it (it takes
about 0.15 s): ``await book.load()`` does that in a worker thread so the event loop never
stalls (`PriceBook.ready` says whether a lookup needs it), and `preload` starts it without
waiting.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation
from typing import TYPE_CHECKING, Final, final

import msgspec
import trio

from .errors import ConfigurationError
from .runtime._shared_load import SharedLoad

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, ModelPrice, TieredPrices

    from .config import PriceOverride
    from .types import Usage

__all__ = [
    "LOCAL_PRICE",
    "MOCK_PRICE",
    "Price",
    "PriceBook",
    "budget_cost",
    "needs_table",
    "preload",
]

_log = logging.getLogger("llm_invocation.pricing")

_MODELS_KEPT: Final = 4096
"""Models whose lookups a price book keeps (model names may come from callers: the kept
lookups are dropped together when there are more, and made again when asked)."""

# Products and sums of integers are exact; this context only turns the final integer into a
# Decimal with the right exponent, and traps rather than rounds if that were ever inexact.
_EXACT: Final = Context(
    prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact, InvalidOperation]
)
_PER: Final = 6  # prices are per million (10**6) tokens


def budget_cost(usage: Usage, book_cost: Decimal | None) -> Decimal | None:
    """The cost budgets count for a call's ``usage``.

    The rule: the price book's cost (``book_cost``, from `PriceBook.cost`) when it knows the
    model's price; else the cost the provider reported (``usage.reported_cost``); else a cost
    the codec put in ``usage.cost`` itself (a custom codec may); else None, unknown (never a
    made-up 0). ``usage.reported_cost`` is never changed: it stays beside the counted cost.
    """
    if book_cost is not None:
        return book_cost
    if usage.reported_cost is not None:
        return usage.reported_cost
    return usage.cost


@final
class Price(msgspec.Struct, frozen=True, kw_only=True):
    """One model's prices in US dollars (or the override's currency) per million tokens.

    Attributes:
        input: uncached prompt tokens.
        output: completion tokens.
        cache_read: prompt tokens read from the cache; None: the input price.
        cache_write: prompt tokens written to the cache; None: the input price.
        cache_write_1h: prompt tokens written to the cache for an hour (Anthropic's
            ``"1h"`` TTL); None: the ``cache_write`` price.
        reasoning: reasoning tokens; None: the output price.
        source: where the price came from: ``"override"`` (the configuration),
            ``"genai-prices"`` (its price table), ``"mock"`` (`MOCK_PRICE`) or ``"local"``
            (`LOCAL_PRICE`).
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    source: str = "override"


MOCK_PRICE: Final = Price(input=Decimal(1), output=Decimal(2), source="mock")
"""The ``mock`` provider's price: $1 per million prompt tokens, $2 per million completion
tokens. Small enough to be obviously fake, large enough for a demo's cost to show."""

LOCAL_PRICE: Final = Price(input=Decimal(0), output=Decimal(0), source="local")
"""The price of a model served locally (Ollama, vLLM): nothing per token."""

# Our provider names -> the genai-prices provider ids to try, in order. A name not listed here
# is tried as a genai-prices id as it is.
_GENAI_PROVIDERS: Final[Mapping[str, tuple[str, ...]]] = {
    "openai": ("openai",),
    "anthropic": ("anthropic",),
    "gemini": ("google",),
    "azure": ("azure", "openai"),
    "groq": ("groq",),
    "together": ("together",),
    "openrouter": ("openrouter",),
    "deepseek": ("deepseek",),
    "mistral": ("mistral",),
    # Local servers and unnamed compatible endpoints have no price in any table.
    "ollama": (),
    "vllm": (),
    "openai-compatible": (),
    "mock": (),
}


class _Rates:
    """One tier's prices as integers in units of 10**-exponent per million tokens."""

    __slots__ = (
        "cache_read",
        "cache_write",
        "cache_write_1h",
        "input",
        "output",
        "price",
        "reasoning",
    )

    def __init__(self, price: Price, exponent: int) -> None:
        def scaled(value: Decimal) -> int:
            return int(value.scaleb(exponent, _EXACT))

        self.price = price
        self.input = scaled(price.input)
        self.output = scaled(price.output)
        self.cache_read = self.input if price.cache_read is None else scaled(price.cache_read)
        self.cache_write = self.input if price.cache_write is None else scaled(price.cache_write)
        self.cache_write_1h = (
            self.cache_write if price.cache_write_1h is None else scaled(price.cache_write_1h)
        )
        self.reasoning = None if price.reasoning is None else scaled(price.reasoning)


class _Plan:
    """A model's compiled prices: base rates and tiers by prompt size, highest first."""

    __slots__ = ("base", "scale", "tiers")

    def __init__(self, base: Price, tiers: list[tuple[int, Price]]) -> None:
        prices = [base, *(price for _, price in tiers)]
        exponent = max(_decimals(value) for price in prices for value in _values(price))
        self.scale = -(exponent + _PER)
        self.base = _Rates(base, exponent)
        self.tiers = tuple(
            (start, _Rates(price, exponent)) for start, price in sorted(tiers, reverse=True)
        )

    def rates(self, prompt_tokens: int) -> _Rates:
        for start, rates in self.tiers:
            if prompt_tokens > start:
                return rates
        return self.base

    def cost(self, usage: Usage) -> Decimal:
        prompt = usage.prompt_tokens
        rates = self.rates(prompt) if self.tiers else self.base
        cache_read = usage.cache_read_tokens
        cache_write = usage.cache_write_tokens
        hour = min(usage.cache_write_1h_tokens, cache_write)
        uncached = prompt - cache_read - cache_write
        total = (
            (uncached if uncached > 0 else 0) * rates.input
            + cache_read * rates.cache_read
            + (cache_write - hour) * rates.cache_write
            + hour * rates.cache_write_1h
        )
        completion = usage.completion_tokens
        if rates.reasoning is None:
            total += completion * rates.output
        else:
            reasoning = min(usage.reasoning_tokens, completion)
            total += (completion - reasoning) * rates.output + reasoning * rates.reasoning
        return _decimal(total, self.scale)

    def worst_case(self, prompt_tokens: int, max_tokens: int) -> Decimal:
        rates = self.rates(prompt_tokens)
        prompt_rate = max(rates.input, rates.cache_read, rates.cache_write, rates.cache_write_1h)
        output_rate = (
            rates.output if rates.reasoning is None else max(rates.output, rates.reasoning)
        )
        total = prompt_tokens * prompt_rate + max_tokens * output_rate
        return _decimal(total, self.scale)


def _decimal(units: int, exponent: int) -> Decimal:
    """Return ``units * 10**exponent`` without trailing zeros (and never as ``1E+1``)."""
    if not units:
        return Decimal(0)
    while exponent < 0 and not units % 10:
        units //= 10
        exponent += 1
    return Decimal(units).scaleb(exponent, _EXACT)


def _values(price: Price) -> list[Decimal]:
    values = [
        price.input,
        price.output,
        price.cache_read,
        price.cache_write,
        price.cache_write_1h,
        price.reasoning,
    ]
    return [value for value in values if value is not None]


def _decimals(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


class _Entry:
    """The cached lookup of one (provider, model): a fixed plan, or genai-prices' model whose
    prices depend on the date (compiled once per price set); ``info`` is the genai-prices
    model it came from, if any."""

    __slots__ = ("info", "model", "plan", "plans", "warned")

    def __init__(
        self, plan: _Plan | None, model: ModelInfo | None = None, info: ModelInfo | None = None
    ) -> None:
        self.plan = plan
        self.model = model
        self.info = info if info is not None else model
        self.plans: dict[int, tuple[ModelPrice, _Plan | None]] = {}
        self.warned = False

    def plan_at(self, at: datetime | float | None) -> _Plan | None:
        if self.plan is not None or self.model is None:
            return self.plan
        if at is None:
            moment = datetime.now(UTC)
        elif isinstance(at, datetime):
            moment = at
        else:
            moment = datetime.fromtimestamp(at, UTC)
        prices = self.model.get_prices(moment)
        cached = self.plans.get(id(prices))
        if cached is None or cached[0] is not prices:
            cached = self.plans[id(prices)] = (prices, _compile(prices))
        return cached[1]


def _price_value(prices: ModelPrice, key: str) -> Decimal | TieredPrices | None:
    value: object = prices.__dict__.get(key)
    if value is None or isinstance(value, Decimal):
        return value
    from genai_prices.types import TieredPrices

    return value if isinstance(value, TieredPrices) else None


def _compile(prices: ModelPrice) -> _Plan | None:
    """Turn a genai-prices price set into a plan, or None when it has no token prices."""
    from genai_prices.types import TieredPrices

    keys = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")
    raw = {
        "input": _price_value(prices, "input_mtok"),
        "output": _price_value(prices, "output_mtok"),
        "cache_read": _price_value(prices, "cache_read_mtok"),
        "cache_write": _price_value(prices, "cache_write_mtok"),
        "cache_write_1h": _price_value(prices, "cache_write_1h_mtok"),
        "reasoning": _price_value(prices, "output_reasoning_mtok"),
    }
    if raw["input"] is None or raw["output"] is None:
        return None
    starts = sorted(
        {
            tier.start
            for value in raw.values()
            if isinstance(value, TieredPrices)
            for tier in value.tiers
        }
    )

    def at_tier(start: int | None) -> Price:
        # The price each key has for a prompt larger than `start` (None: the base price).
        chosen: dict[str, Decimal | None] = {}
        for key in keys:
            value = raw[key]
            if isinstance(value, TieredPrices):
                price = value.base
                for tier in value.tiers:
                    if start is not None and start >= tier.start:
                        price = tier.price
                chosen[key] = price
            else:
                chosen[key] = value
        input_price, output_price = chosen["input"], chosen["output"]
        assert input_price is not None and output_price is not None
        return Price(
            input=input_price,
            output=output_price,
            cache_read=chosen["cache_read"],
            cache_write=chosen["cache_write"],
            cache_write_1h=chosen["cache_write_1h"],
            reasoning=chosen["reasoning"],
            source="genai-prices",
        )

    return _Plan(at_tier(None), [(start, at_tier(start)) for start in starts])


def _override_price(override: PriceOverride) -> Price:
    return Price(
        input=override.input_per_mtok,
        output=override.output_per_mtok,
        cache_read=override.cache_read_per_mtok,
        cache_write=override.cache_write_per_mtok,
        cache_write_1h=override.cache_write_1h_per_mtok,
        source="override",
    )


class _Overrides:
    """Override keys: exact ones in a dict, patterns in order of specificity."""

    __slots__ = ("exact", "patterns")

    def __init__(self, overrides: Mapping[str, PriceOverride]) -> None:
        self.exact: dict[str, _Plan] = {}
        patterns: list[tuple[int, bool, str, re.Pattern[str], _Plan]] = []
        for key, override in overrides.items():
            plan = _Plan(_override_price(override), [])
            lowered = key.lower()
            if "*" in lowered:
                literal = len(lowered.replace("*", ""))
                regex = re.compile(".*".join(re.escape(part) for part in lowered.split("*")))
                patterns.append((-literal, ":" not in lowered, lowered, regex, plan))
            else:
                self.exact[lowered] = plan
        patterns.sort(key=lambda item: item[:3])
        self.patterns = tuple((regex, plan) for *_, regex, plan in patterns)

    def find(self, provider: str, model: str) -> _Plan | None:
        qualified = f"{provider}:{model}".lower()
        bare = model.lower()
        plan = self.exact.get(qualified) or self.exact.get(bare)
        if plan is not None:
            return plan
        for regex, candidate in self.patterns:
            if regex.fullmatch(qualified) or regex.fullmatch(bare):
                return candidate
        return None


def _load_snapshot() -> DataSnapshot:
    """Import genai-prices and load its bundled data (blocking: about 0.15 s and 15 MB).

    Raises:
        ConfigurationError: genai-prices or its data cannot be loaded.
    """
    try:
        from genai_prices import data_snapshot

        return data_snapshot.get_snapshot()
    except Exception as exc:  # an installation problem: whatever it is, say what failed
        raise ConfigurationError(
            f"the genai-prices price table cannot be loaded: {exc!r} (reinstall genai-prices, "
            "or price the models in cost_control.prices)"
        ) from exc


_SNAPSHOT: Final = SharedLoad(_load_snapshot, name="the genai-prices price table", logger=_log)
"""The price table, loaded once per process and shared by every book."""


def preload() -> None:
    """Start loading the genai-prices price table in a worker thread and return at once
    (nothing happens when it is loaded or loading; a failure is logged, and the next use
    tries again)."""
    _SNAPSHOT.start()


def needs_table(provider: str) -> bool:
    """Whether models of ``provider`` (as prices are looked up) may be priced from the
    genai-prices table (not the mock, nor a local server with no table price)."""
    key = provider.lower()
    return key != "mock" and bool(_GENAI_PROVIDERS.get(key, (key,)))


def _genai_model(provider: str, model: str) -> ModelInfo | None:
    key = provider.lower()
    provider_ids = _GENAI_PROVIDERS.get(key, (key,))
    if not provider_ids:
        return None
    snapshot = _SNAPSHOT.get_blocking()
    name = model.removeprefix("models/") if key == "gemini" else model
    for provider_id in provider_ids:
        try:
            _, info = snapshot.find_provider_model(name, None, provider_id, None)
        except LookupError:
            continue
        return info
    return None


@final
class PriceBook:
    """Prices per model from overrides, the mock price and genai-prices; exact costs.

    Not thread-safe: use one book from one trio run (the client shares its book between the
    invocation layer, which prices settlements, and the accountant, which prices worst
    cases). Lookups are pure: they read the configuration and the price table only.

    Args:
        overrides: ``CostConfig.prices``: prices keyed ``"provider:model"``, ``"model"`` or
            a pattern with ``*``; they win over every other source.
        free_providers: provider names (as prices are looked up) whose models run locally
            and cost nothing per token: priced `LOCAL_PRICE` unless an override says
            otherwise.
    """

    def __init__(
        self,
        overrides: Mapping[str, PriceOverride] | None = None,
        *,
        free_providers: Iterable[str] = (),
    ) -> None:
        self._overrides = _Overrides(overrides or {})
        self._overridden: dict[tuple[str, str], bool] = {}  # see `has_override`
        self._free = frozenset(name.lower() for name in free_providers)
        self._cache: dict[tuple[str, str], _Entry] = {}

    async def load(self) -> None:
        """Import genai-prices and its price table in a worker thread, if not done yet.

        The table is loaded once per process and shared by every book; concurrent callers
        share one load, and a failed load is tried again by the next call. Await it before
        a lookup on the event loop when `ready` says no: without it, the first lookup that
        needs the table imports it on the spot (about 0.15 s, blocking).

        Raises:
            ConfigurationError: genai-prices or its data cannot be loaded.
        """
        if _SNAPSHOT.loaded:
            await trio.lowlevel.checkpoint()
            return
        await _SNAPSHOT.wait()

    def ready(self, provider: str, model: str) -> bool:
        """Whether looking up ``model`` of ``provider`` costs no load: it was looked up
        before, an override, the mock price or the local price answers it, or the price
        table is loaded."""
        return (
            (provider, model) in self._cache
            or _SNAPSHOT.loaded
            or not needs_table(provider)
            or provider.lower() in self._free
            or self._overrides.find(provider, model) is not None
        )

    def price(
        self,
        provider: str,
        model: str,
        *,
        prompt_tokens: int = 0,
        at: datetime | float | None = None,
    ) -> Price | None:
        """Return the model's prices per million tokens, or None when they are unknown.

        Args:
            provider: our provider name (``"openai"``, ``"gemini"``, ``"mock"``, ...).
            model: the model name as sent to the provider.
            prompt_tokens: the prompt size that selects a price tier (0: the base prices).
            at: when the call was made (a datetime or a unix time); None: now.
        """
        entry = self._entry(provider, model)
        plan = entry.plan_at(at)
        if plan is None:
            self._warn(entry, provider, model)
            return None
        return plan.rates(prompt_tokens).price

    def cost(
        self,
        usage: Usage,
        *,
        provider: str,
        model: str,
        at: datetime | float | None = None,
    ) -> Decimal | None:
        """Return the exact cost of a call's usage, or None when the price is unknown.

        Args:
            usage: the normalised usage of the call (``usage.cost`` is ignored).
            provider: our provider name.
            model: the model name as sent to the provider.
            at: when the call was made (a datetime or a unix time); None: now. Only prices
                that change over time use it.
        """
        entry = self._cache.get((provider, model))
        if entry is None:
            entry = self._entry(provider, model)
        plan = entry.plan if entry.model is None else entry.plan_at(at)
        if plan is None:
            self._warn(entry, provider, model)
            return None
        return plan.cost(usage)

    def has_override(self, provider: str, model: str) -> bool:
        """Whether a configured override prices ``model`` under this provider name (keyed
        ``"provider:model"``, ``"model"`` or a pattern). Decided once per model: the overrides
        are fixed when the book is made, and admission asks on every call."""
        key = (provider, model)
        known = self._overridden.get(key)
        if known is None:
            if len(self._overridden) >= _MODELS_KEPT:
                self._overridden.clear()
            known = self._overridden[key] = self._overrides.find(provider, model) is not None
        return known

    def context_window(self, provider: str, model: str) -> int | None:
        """Return the model's context window in tokens from the price table, or None.

        Only genai-prices models have one (overrides and the mock price do not). A call's
        completion cannot outgrow the window less its prompt, which bounds what a request
        without ``max_tokens`` reserves.
        """
        entry = self._entry(provider, model)
        info = entry.info
        window = info.context_window if info is not None else None
        return window if isinstance(window, int) and window > 0 else None

    def worst_case(
        self,
        prompt_tokens: int,
        max_tokens: int,
        *,
        provider: str,
        model: str,
        at: datetime | float | None = None,
    ) -> Decimal | None:
        """Return the most a call can cost, for per-request caps; None when unknown.

        Every prompt token is charged at the highest of the input, cache-read and cache-write
        prices (a cache write can cost more than plain input), and ``max_tokens`` completion
        tokens at the higher of the output and reasoning prices, in the price tier that
        ``prompt_tokens`` selects. The actual `cost` of such a call is never higher.

        Args:
            prompt_tokens: the (estimated) prompt size.
            max_tokens: the most completion tokens the call may produce.
            provider: our provider name.
            model: the model name as sent to the provider.
            at: when the call is made; None: now.
        """
        entry = self._entry(provider, model)
        plan = entry.plan_at(at)
        if plan is None:
            self._warn(entry, provider, model)
            return None
        return plan.worst_case(prompt_tokens, max_tokens)

    def _entry(self, provider: str, model: str) -> _Entry:
        key = (provider, model)
        entry = self._cache.get(key)
        if entry is None:
            if len(self._cache) >= _MODELS_KEPT:
                self._cache.clear()  # an unknown price may then warn once more
            entry = self._cache[key] = self._lookup(provider, model)
        return entry

    def _lookup(self, provider: str, model: str) -> _Entry:
        plan = self._overrides.find(provider, model)
        if plan is not None:
            return _Entry(plan)
        if provider.lower() == "mock":
            return _Entry(_Plan(MOCK_PRICE, []))
        if provider.lower() in self._free:
            return _Entry(_Plan(LOCAL_PRICE, []))
        info = _genai_model(provider, model)
        if info is None:
            return _Entry(None)  # unknown: cached, and it warns once
        from genai_prices.types import ModelPrice

        if isinstance(info.prices, ModelPrice):
            return _Entry(_compile(info.prices), info=info)
        return _Entry(None, info)

    def _warn(self, entry: _Entry, provider: str, model: str) -> None:
        if not entry.warned:
            entry.warned = True
            _log.warning(
                "no price known for %s:%s; its cost is unknown (price it in "
                "cost_control.prices; under a cap or a budget it is refused unless "
                "cost_control.unknown_price is 'allow')",
                provider,
                model,
            )
