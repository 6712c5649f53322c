"""A cost the provider reports (OpenRouter's ``usage.cost``) is kept in `Usage.reported_cost`,
beside the cost budgets count: the price book's when it knows the model's price, else the
reported one, else unknown."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_invocation.pricing import budget_cost
from llm_invocation.providers import _openai_wire
from llm_invocation.providers.compatible import make_compatible_codec
from llm_invocation.types import Message, Request, StreamChunk, Usage

ANY_REQUEST: Final = Request(model="m", messages=[Message(role="user", content="x")])


def stream_with_cost(cost: bytes) -> bytes:
    return (
        b'data: {"id":"gen-1","model":"m","choices":[{"index":0,"delta":{"content":"hi"},'
        b'"finish_reason":"stop"}]}\n\n'
        b'data: {"id":"gen-1","model":"m","choices":[],"usage":{"prompt_tokens":3,'
        b'"completion_tokens":2,"total_tokens":5,"cost":' + cost + b"}}\n\n"
        b"data: [DONE]\n\n"
    )


def decode(data: bytes) -> list[StreamChunk]:
    decoder = make_compatible_codec("openrouter").stream_decoder(ANY_REQUEST)
    return decoder.feed(data) + decoder.close()


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (b"0.000222", Decimal("0.000222")),
        (b"1e-7", Decimal("1e-7")),
        (b'"0.5"', Decimal("0.5")),
        (b'{"input_tokens_cost":0.1,"total_cost":0.25}', Decimal("0.25")),
        (b"null", None),
    ],
)
def test_a_reported_cost_is_read_exactly_and_left_out_of_our_cost(
    cost: bytes, expected: Decimal | None
) -> None:
    usage = decode(stream_with_cost(cost))[-1].usage
    assert usage is not None
    assert usage.reported_cost == expected
    assert usage.cost is None  # the invocation settles it
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 2)


def test_a_reported_cost_of_another_shape_is_unknown_logged_once_and_the_answer_is_fine(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_openai_wire, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="llm_invocation.providers"):
        for _ in range(3):
            chunks = decode(stream_with_cost(b'["n/a"]'))
            assert [c.error for c in chunks] == [None, None]
            assert chunks[0].text == "hi"
            usage = chunks[-1].usage
            assert usage is not None
            assert usage.reported_cost is None
            assert usage.completion_tokens == 2
    warnings = [r for r in caplog.records if "usage.cost" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("cost", [b"-0.5", b"1e300", b'{"total_cost":-1}'])
def test_a_reported_cost_that_cannot_be_true_is_unknown(cost: bytes) -> None:
    usage = decode(stream_with_cost(cost))[-1].usage
    assert usage is not None
    assert usage.reported_cost is None
    assert usage.total_tokens == 5


costs = st.none() | st.decimals(min_value=0, max_value=100, places=6)


@given(book=costs, reported=costs, codec_cost=costs)
def test_budgets_count_the_price_book_s_cost_else_the_reported_one(
    book: Decimal | None, reported: Decimal | None, codec_cost: Decimal | None
) -> None:
    usage = Usage(prompt_tokens=1, reported_cost=reported, cost=codec_cost)
    counted = budget_cost(usage, book)
    if book is not None:
        assert counted == book
    elif reported is not None:
        assert counted == reported
    else:
        assert counted == codec_cost  # a custom codec's own figure, or unknown (None)


def test_reported_costs_add_up_and_an_unreported_part_makes_the_sum_unknown() -> None:
    a = Usage(prompt_tokens=1, cost=Decimal("0.2"), reported_cost=Decimal("0.1"))
    b = Usage(prompt_tokens=2, cost=Decimal("0.3"), reported_cost=Decimal("0.05"))
    assert (a + b).reported_cost == Decimal("0.15")
    assert (a + Usage(prompt_tokens=1, cost=Decimal(0))).reported_cost is None
    assert Usage.zero() + a == a
