"""PriceBook: prices from overrides, the mock price and genai-prices; exact costs."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest
import trio

from llm_invocation.config import PriceOverride
from llm_invocation.pricing import MOCK_PRICE, Price, PriceBook
from llm_invocation.types import Usage

AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
LOGGER = "llm_invocation.pricing"


def genai_cost(usage: Usage, model: str, provider_id: str, at: datetime = AT) -> Decimal:
    """What genai-prices itself says the usage costs."""
    reference = genai_prices.Usage(
        input_tokens=usage.prompt_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.completion_tokens,
        output_reasoning_tokens=usage.reasoning_tokens,
    )
    return genai_prices.calc_price(
        reference, model, provider_id=provider_id, genai_request_timestamp=at
    ).total_price


def override(
    input_: str, output: str, cache_read: str | None = None, cache_write: str | None = None
) -> PriceOverride:
    return PriceOverride(
        input_per_mtok=Decimal(input_),
        output_per_mtok=Decimal(output),
        cache_read_per_mtok=None if cache_read is None else Decimal(cache_read),
        cache_write_per_mtok=None if cache_write is None else Decimal(cache_write),
    )


# -- genai-prices ------------------------------------------------------------------------------


def test_gpt_4o_mini_costs_what_genai_prices_says() -> None:
    usage = Usage(prompt_tokens=12_000, completion_tokens=800, cache_read_tokens=10_000)
    book = PriceBook()

    cost = book.cost(usage, provider="openai", model="gpt-4o-mini", at=AT)

    assert cost == genai_cost(usage, "gpt-4o-mini", "openai")
    # 2,000 uncached at $0.15, 10,000 cached at $0.075, 800 out at $0.60 per MTok.
    assert cost == Decimal("0.00153")
    assert str(cost) == "0.00153"  # exact, without trailing zeros


def test_gpt_4o_mini_price_comes_from_genai_prices() -> None:
    price = PriceBook().price("openai", "gpt-4o-mini", at=AT)

    assert price == Price(
        input=Decimal("0.15"),
        output=Decimal("0.6"),
        cache_read=Decimal("0.075"),
        source="genai-prices",
    )


def test_claude_sonnet_cache_reads_and_writes_cost_what_genai_prices_says() -> None:
    usage = Usage(
        prompt_tokens=20_000,
        completion_tokens=1_000,
        cache_read_tokens=15_000,
        cache_write_tokens=4_000,
    )

    cost = PriceBook().cost(usage, provider="anthropic", model="claude-sonnet-4-5", at=AT)

    assert cost == genai_cost(usage, "claude-sonnet-4-5", "anthropic")
    # 1,000 x $3 + 15,000 x $0.30 + 4,000 x $3.75 + 1,000 x $15 per MTok.
    assert cost == Decimal("0.0375")


def test_dated_claude_model_name_finds_the_same_price() -> None:
    book = PriceBook()

    assert book.price("anthropic", "claude-sonnet-4-5-20250929", at=AT) == book.price(
        "anthropic", "claude-sonnet-4-5", at=AT
    )


def test_a_prompt_above_a_tier_start_pays_the_tier_price_for_every_token() -> None:
    book = PriceBook()
    small = Usage(prompt_tokens=200_000, completion_tokens=1_000)
    large = Usage(prompt_tokens=200_001, completion_tokens=1_000)

    for usage in (small, large):
        cost = book.cost(usage, provider="anthropic", model="claude-sonnet-4-5", at=AT)
        assert cost == genai_cost(usage, "claude-sonnet-4-5", "anthropic")
    assert book.price("anthropic", "claude-sonnet-4-5", prompt_tokens=200_001, at=AT) == Price(
        input=Decimal(6),
        output=Decimal("22.5"),
        cache_read=Decimal("0.6"),
        cache_write=Decimal("7.5"),
        cache_write_1h=Decimal(12),
        source="genai-prices",
    )


def test_gemini_is_priced_from_genai_prices_google_table() -> None:
    usage = Usage(
        prompt_tokens=50_000,
        completion_tokens=3_000,
        cache_read_tokens=20_000,
        reasoning_tokens=2_000,
    )

    cost = PriceBook().cost(usage, provider="gemini", model="gemini-2.5-flash", at=AT)

    assert cost == genai_cost(usage, "gemini-2.5-flash", "google")
    assert cost == Decimal("0.0171")


def test_gemini_model_names_may_carry_the_models_prefix() -> None:
    book = PriceBook()

    assert book.price("gemini", "models/gemini-2.5-flash", at=AT) == book.price(
        "gemini", "gemini-2.5-flash", at=AT
    )


def test_gemini_pro_long_prompt_tier_matches_genai_prices() -> None:
    usage = Usage(prompt_tokens=250_000, completion_tokens=5_000, cache_read_tokens=100_000)

    cost = PriceBook().cost(usage, provider="gemini", model="gemini-2.5-pro", at=AT)

    assert cost == genai_cost(usage, "gemini-2.5-pro", "google")


def test_a_separate_reasoning_price_charges_reasoning_tokens_at_it() -> None:
    # perplexity's sonar-deep-research has $8 output and $3 reasoning per MTok.
    usage = Usage(prompt_tokens=1_000, completion_tokens=10_000, reasoning_tokens=6_000)

    cost = PriceBook().cost(usage, provider="perplexity", model="sonar-deep-research", at=AT)

    assert cost == genai_cost(usage, "sonar-deep-research", "perplexity")
    assert cost == Decimal("0.002") + Decimal("0.032") + Decimal("0.018")


def test_a_price_that_changed_on_a_date_applies_by_the_call_date() -> None:
    book = PriceBook()
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    before = datetime(2025, 5, 1, tzinfo=UTC)

    old = book.cost(usage, provider="openai", model="o3", at=before)
    new = book.cost(usage, provider="openai", model="o3", at=AT)

    assert old == genai_cost(usage, "o3", "openai", at=before) == Decimal(50)
    assert new == genai_cost(usage, "o3", "openai") == Decimal(10)
    assert book.cost(usage, provider="openai", model="o3", at=before.timestamp()) == old


def test_azure_uses_openai_prices() -> None:
    book = PriceBook()

    assert book.price("azure", "gpt-4o-mini", at=AT) == book.price("openai", "gpt-4o-mini", at=AT)


def test_compatible_presets_map_to_their_genai_prices_providers() -> None:
    usage = Usage(prompt_tokens=1_000, completion_tokens=1_000)
    book = PriceBook()

    for provider, model in [
        ("groq", "llama-3.3-70b-versatile"),
        ("deepseek", "deepseek-chat"),
        ("mistral", "mistral-large-latest"),
        ("openrouter", "openai/gpt-4o-mini"),
    ]:
        assert book.cost(usage, provider=provider, model=model, at=AT) == genai_cost(
            usage, model, provider
        )


async def test_load_imports_the_price_table_in_a_worker_thread() -> None:
    book = PriceBook()

    await book.load()

    assert book.price("openai", "gpt-4o-mini", at=AT) is not None


async def test_importing_pricing_does_not_import_genai_prices() -> None:
    code = "import sys, llm_invocation.pricing; print('genai_prices' in sys.modules)"

    done = await trio.run_process(
        [sys.executable, "-c", code], capture_stdout=True, cwd=Path(__file__).parents[1]
    )

    assert done.stdout.decode().strip() == "False"


# -- arithmetic --------------------------------------------------------------------------------


def test_cache_reads_writes_and_reasoning_use_their_own_prices_exactly() -> None:
    book = PriceBook({"acme:m": override("3", "15", cache_read="0.3", cache_write="3.75")})
    usage = Usage(
        prompt_tokens=1_000,
        completion_tokens=200,
        cache_read_tokens=400,
        cache_write_tokens=100,
        reasoning_tokens=50,
    )

    cost = book.cost(usage, provider="acme", model="m")

    # 500 x 3 + 400 x 0.3 + 100 x 3.75 + 200 x 15 (reasoning is output here), per MTok.
    assert cost == Decimal("0.004995")


def test_cache_tokens_without_their_own_price_pay_the_input_price() -> None:
    book = PriceBook({"acme:m": override("2", "4")})
    cached = Usage(prompt_tokens=1_000, cache_read_tokens=600, cache_write_tokens=300)
    plain = Usage(prompt_tokens=1_000)

    assert book.cost(cached, provider="acme", model="m") == book.cost(
        plain, provider="acme", model="m"
    )


def test_costs_are_exact_decimals_never_floats() -> None:
    book = PriceBook({"acme:m": override("0.1", "0.2")})
    usage = Usage(prompt_tokens=3)

    costs = [book.cost(usage, provider="acme", model="m") for _ in range(10)]

    assert all(type(cost) is Decimal for cost in costs)
    assert costs[0] == Decimal("0.0000003")  # 3 x 0.1 / 10**6; a float gives 3.0000000000000004e-07
    assert sum(cost for cost in costs if cost is not None) == Decimal("0.000003")


def test_long_decimal_prices_stay_exact() -> None:
    book = PriceBook({"acme:m": override("0.041666666666666664", "1")})

    cost = book.cost(Usage(prompt_tokens=7), provider="acme", model="m")

    assert cost == Decimal("0.041666666666666664") * 7 / 1_000_000


def test_zero_usage_costs_zero_when_the_price_is_known() -> None:
    cost = PriceBook().cost(Usage(), provider="openai", model="gpt-4o-mini", at=AT)

    assert cost == 0
    assert cost is not None


# -- overrides ---------------------------------------------------------------------------------


def test_an_override_wins_over_genai_prices() -> None:
    book = PriceBook({"openai:gpt-4o-mini": override("1", "2")})

    price = book.price("openai", "gpt-4o-mini")
    cost = book.cost(Usage(prompt_tokens=1_000_000), provider="openai", model="gpt-4o-mini")

    assert price == Price(input=Decimal(1), output=Decimal(2), source="override")
    assert cost == Decimal(1)


def test_a_bare_model_override_applies_to_every_provider() -> None:
    book = PriceBook({"gpt-4o-mini": override("1", "2")})

    for provider in ("openai", "azure", "my-proxy"):
        price = book.price(provider, "gpt-4o-mini")
        assert price is not None
        assert price.source == "override"


def test_a_provider_qualified_override_beats_a_bare_one() -> None:
    book = PriceBook({"gpt-4o-mini": override("1", "2"), "azure:gpt-4o-mini": override("5", "6")})

    azure = book.price("azure", "gpt-4o-mini")
    openai = book.price("openai", "gpt-4o-mini")

    assert azure is not None and azure.input == 5
    assert openai is not None and openai.input == 1


def test_a_wildcard_override_matches_a_family_of_models() -> None:
    book = PriceBook({"openai:gpt-4o*": override("7", "8")})

    matched = book.price("openai", "gpt-4o-mini-2024-07-18")
    unmatched = book.price("openai", "gpt-4.1", at=AT)
    other_provider = book.price("groq", "gpt-4o-mini")

    assert matched is not None and matched.source == "override"
    assert unmatched is not None and unmatched.source == "genai-prices"
    assert other_provider is None or other_provider.source != "override"


def test_the_more_specific_wildcard_wins_and_exact_keys_win_over_wildcards() -> None:
    book = PriceBook(
        {
            "*": override("1", "1"),
            "openai:*": override("2", "2"),
            "openai:gpt-4o*": override("3", "3"),
            "openai:gpt-4o-mini": override("4", "4"),
        }
    )

    def input_price(provider: str, model: str) -> Decimal | None:
        price = book.price(provider, model)
        return None if price is None else price.input

    assert input_price("openai", "gpt-4o-mini") == 4
    assert input_price("openai", "gpt-4o") == 3
    assert input_price("openai", "o3") == 2
    assert input_price("ollama", "llama3") == 1


def test_override_keys_match_regardless_of_case() -> None:
    book = PriceBook({"Together:Meta-Llama/*": override("1", "1")})

    price = book.price("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo")

    assert price is not None and price.source == "override"


def test_local_models_can_be_priced_at_zero_by_an_override() -> None:
    book = PriceBook({"ollama:*": override("0", "0")})

    cost = book.cost(Usage(prompt_tokens=10, completion_tokens=10), provider="ollama", model="x")

    assert cost == 0


# -- unknown prices ----------------------------------------------------------------------------


def test_an_unknown_model_has_no_cost_never_zero(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook()
    usage = Usage(prompt_tokens=100, completion_tokens=100)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cost = book.cost(usage, provider="openai", model="no-such-model-xyz")

    assert cost is None


def test_an_unknown_model_warns_exactly_once(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook()
    usage = Usage(prompt_tokens=100, completion_tokens=100)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            book.cost(usage, provider="openai", model="no-such-model-xyz")
        book.price("openai", "no-such-model-xyz")
        book.worst_case(100, 100, provider="openai", model="no-such-model-xyz")

    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "openai:no-such-model-xyz" in warnings[0].getMessage()


def test_each_unknown_model_warns_once_per_price_book(caplog: pytest.LogCaptureFixture) -> None:
    usage = Usage(prompt_tokens=1)
    first, second = PriceBook(), PriceBook()

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for book in (first, second):
            for model in ("unknown-a", "unknown-b", "unknown-a"):
                book.cost(usage, provider="openai", model=model)

    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 4
    assert sum("unknown-a" in message for message in messages) == 2


def test_local_providers_have_no_table_price(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook()

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        # The model name is a priced OpenAI model, but an Ollama server does not charge
        # OpenAI's price: the cost is unknown, not guessed.
        cost = book.cost(Usage(prompt_tokens=10), provider="ollama", model="gpt-4o-mini")

    assert cost is None


def test_an_unknown_provider_has_no_price(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        price = PriceBook().price("no-such-provider", "gpt-4o-mini")

    assert price is None


# -- worst case --------------------------------------------------------------------------------


def test_worst_case_charges_all_input_and_max_tokens_of_output() -> None:
    book = PriceBook({"acme:m": override("2", "8")})

    worst = book.worst_case(1_000, 500, provider="acme", model="m")

    assert worst == Decimal("0.006")  # 1,000 x 2 + 500 x 8 per MTok


def test_worst_case_uses_the_dearest_input_price_so_it_bounds_the_cost() -> None:
    book = PriceBook({"acme:m": override("3", "15", cache_read="0.3", cache_write="3.75")})
    usage = Usage(prompt_tokens=1_000, completion_tokens=500, cache_write_tokens=1_000)

    worst = book.worst_case(1_000, 500, provider="acme", model="m")
    cost = book.cost(usage, provider="acme", model="m")

    assert worst == Decimal("0.01125")  # 1,000 x 3.75 + 500 x 15 per MTok
    assert cost is not None and worst is not None and cost <= worst


def test_worst_case_uses_the_tier_that_the_prompt_selects() -> None:
    book = PriceBook()

    worst = book.worst_case(250_000, 1_000, provider="gemini", model="gemini-2.5-pro", at=AT)

    usage = Usage(prompt_tokens=250_000, completion_tokens=1_000)
    assert worst == genai_cost(usage, "gemini-2.5-pro", "google")


def test_worst_case_of_an_unknown_model_is_none(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        worst = PriceBook().worst_case(10, 10, provider="openai", model="no-such-model-xyz")

    assert worst is None


# -- mock --------------------------------------------------------------------------------------


def test_the_mock_provider_has_a_small_fixed_price() -> None:
    book = PriceBook()

    cost = book.cost(
        Usage(prompt_tokens=1_000, completion_tokens=500), provider="mock", model="mock"
    )

    assert book.price("mock", "mock-large") == MOCK_PRICE
    assert cost == Decimal("0.002")  # 1,000 x $1 + 500 x $2 per MTok


def test_an_override_wins_over_the_mock_price() -> None:
    book = PriceBook({"mock:*": override("0", "0")})

    price = book.price("mock", "mock")

    assert price is not None and price.source == "override"


# -- what else the price data tells ------------------------------------------------------------


def test_the_context_window_comes_from_the_price_table() -> None:
    book = PriceBook()

    window = book.context_window("openai", "gpt-4o-mini")

    info = genai_prices.data_snapshot.get_snapshot().find_provider_model(
        "gpt-4o-mini", None, "openai", None
    )[1]
    assert window == info.context_window
    assert window is not None and window > 0


def test_an_override_or_an_unknown_model_has_no_context_window() -> None:
    book = PriceBook({"openai:my-finetune": override("1", "2")})

    assert book.context_window("openai", "my-finetune") is None
    assert book.context_window("ollama", "llama3") is None


def test_has_override_says_which_names_an_override_prices() -> None:
    book = PriceBook({"local:llama3": override("0", "0"), "my-tune": override("1", "1")})

    assert book.has_override("local", "llama3")
    assert not book.has_override("ollama", "llama3")
    assert book.has_override("anyone", "my-tune")  # a bare model key prices it everywhere


def test_a_flood_of_model_names_keeps_the_lookups_bounded_and_right() -> None:
    # Model names may come from callers: the book's lookups stay bounded, and answers made
    # again after they were dropped are the same.
    book = PriceBook({"my-tune": override("1", "2")}, free_providers=["local"])
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    for n in range(5000):
        assert not book.has_override("local", f"model-{n}")
        assert book.cost(usage, provider="local", model=f"model-{n}") == Decimal(0)
        assert book.has_override("local", "my-tune")
        assert book.cost(usage, provider="local", model="my-tune") == Decimal(3)
    assert len(book._cache) <= 4096  # pyright: ignore[reportPrivateUsage]
    assert len(book._overridden) <= 4096  # pyright: ignore[reportPrivateUsage]
