"""Any body a client sends the gateway is a request or a typed refusal, never another error.

The bodies are drawn by Hypothesis: arbitrary JSON, and chat or Responses bodies whose
fields hold values of any JSON type. Decoding refuses with the gateway's own 400; mapping
to a `Request` refuses with an `LLMError`. Nothing else may come out (it would be a 500
and a logged bug instead of an answer).
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_invocation.actors.websocket._gateway import (
    _decode,  # pyright: ignore[reportPrivateUsage]
    _Refusal,  # pyright: ignore[reportPrivateUsage]
)
from llm_invocation.actors.websocket._gateway_chat import CHAT_DECODER, chat_request
from llm_invocation.actors.websocket._gateway_responses import (
    RESPONSES_DECODER,
    responses_request,
)
from llm_invocation.errors import LLMError

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ROLES = st.sampled_from(["system", "developer", "user", "assistant", "tool", "other"])
PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_text", "input_image", "refusal"])},
    optional={"text": JSON, "image_url": JSON},
)
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES},
    optional={
        "content": st.one_of(st.text(max_size=10), st.lists(PART, max_size=3), JSON),
        "tool_calls": JSON,
        "tool_call_id": JSON,
        "name": JSON,
    },
)
CHAT = st.fixed_dictionaries(
    {"model": st.one_of(st.just("mock:mock"), JSON), "messages": st.lists(MESSAGE, max_size=3)},
    optional=dict.fromkeys(
        (
            "temperature",
            "top_p",
            "max_tokens",
            "max_completion_tokens",
            "stop",
            "seed",
            "tools",
            "tool_choice",
            "response_format",
            "stream",
            "stream_options",
            "n",
            "user",
        ),
        JSON,
    ),
)
RESPONSES = st.fixed_dictionaries(
    {"model": st.one_of(st.just("mock:mock"), JSON)},
    optional=dict.fromkeys(
        (
            "input",
            "instructions",
            "temperature",
            "top_p",
            "max_output_tokens",
            "tools",
            "tool_choice",
            "text",
            "stream",
            "reasoning",
            "store",
        ),
        JSON,
    )
    | {"input": st.one_of(st.text(max_size=10), st.lists(MESSAGE, max_size=3))},
)


def _outcome(decoder: Any, build: Any, body: bytes) -> str:
    try:
        spec = _decode(decoder, body)
    except _Refusal:
        return "refused"
    try:
        build(spec, metadata={"token": "t"})
    except LLMError:
        return "refused"
    return "request"


@settings(max_examples=300, deadline=None)
@given(st.one_of(CHAT, JSON))
def test_any_chat_body_is_a_request_or_a_typed_refusal(body: Any) -> None:
    assert _outcome(CHAT_DECODER, chat_request, msgspec.json.encode(body)) in {
        "refused",
        "request",
    }


@settings(max_examples=300, deadline=None)
@given(st.one_of(RESPONSES, JSON))
def test_any_responses_body_is_a_request_or_a_typed_refusal(body: Any) -> None:
    assert _outcome(RESPONSES_DECODER, responses_request, msgspec.json.encode(body)) in {
        "refused",
        "request",
    }


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_decoded_or_refused(body: bytes) -> None:
    assert _outcome(CHAT_DECODER, chat_request, body) in {"refused", "request"}
