"""Specification of the configuration loaders under hostile input, by fuzzing.

Every loader (`Config(...)`, `Config.from_dict`, `Config.from_env`, `Config.from_yaml`,
`Config.replace`, `Config.merged_with`) either returns a `Config` or raises
`ConfigurationError`, whatever it is given, and every problem names a path and a source. The
paths are found by walking the `Config` struct; hostile values are put at each of them. A
value at a secret-bearing path (keys, tokens, credential headers, proxy and store URLs) is
never shown, in a problem or in the views of a valid configuration. A valid configuration
survives a trip through a mapping, YAML text and its own redacted JSON.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any, Final

import msgspec
import msgspec.inspect as mi
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_invocation import _secrets
from llm_invocation._secrets import Secret
from llm_invocation.config import Config, RetryConfig
from llm_invocation.errors import ConfigurationError
from llm_invocation.types import ModelOptions

FUZZ: Final = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
#: Whole configurations through YAML are slower: fewer of them.
ROUND_TRIPS: Final = settings(FUZZ, max_examples=40)

#: How a problem begins when a check failed in a way the loader did not foresee: a bug.
UNFORESEEN: Final = "could not be checked"


@pytest.fixture(autouse=True)
def _secrets_forgotten_after_each_test() -> Iterator[None]:
    """Every secret made is masked in every later text of the process: forget the fuzzed
    ones (``memory``, say), so that later tests see their own text unmasked."""
    with _secrets._lock:
        known = dict(_secrets._known)
    yield
    with _secrets._lock:
        _secrets._known.clear()
        _secrets._known.update(known)
        _secrets._known_pattern = None


# ------------------------------------------------------------------------------------ paths

Key = str | int


def _paths(t: mi.Type, prefix: tuple[Key, ...], out: dict[tuple[Key, ...], mi.Type]) -> None:
    """Every path below a value of type ``t``: fields, a dict entry ``k1``, a list item 0."""
    if isinstance(t, mi.UnionType):
        for option in t.types:
            if not isinstance(option, mi.NoneType):
                _paths(option, prefix, out)
    elif isinstance(t, mi.Metadata):
        _paths(t.type, prefix, out)
    elif isinstance(t, mi.StructType):
        for field in t.fields:
            out[(*prefix, field.name)] = field.type
            _paths(field.type, (*prefix, field.name), out)
    elif isinstance(t, mi.ListType):
        out[(*prefix, 0)] = t.item_type
        _paths(t.item_type, (*prefix, 0), out)
    elif isinstance(t, mi.DictType):
        if prefix == ("defaults", "options"):  # free-form, but checked as ModelOptions
            _paths(mi.type_info(ModelOptions), prefix, out)
            return
        out[(*prefix, "k1")] = t.value_type
        _paths(t.value_type, (*prefix, "k1"), out)


def _all_paths() -> list[tuple[Key, ...]]:
    found: dict[tuple[Key, ...], mi.Type] = {}
    _paths(mi.type_info(Config), (), found)
    return sorted(found, key=lambda path: [str(part) for part in path])


PATHS: Final = _all_paths()


def render(path: tuple[Key, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


#: The secret-bearing paths, from the documentation; ``*`` is a name, ``[*]`` an index.
SECRET_PATTERNS: Final = [
    "api_key",
    "providers.*.api_key",
    "providers.*.api_keys",
    "providers.*.api_keys[*]",
    "providers.*.client_key_password",
    "providers.*.headers",
    "providers.*.headers.*",
    "websocket.tokens",
    "websocket.tokens[*]",
    "mcp.servers.*.env",
    "mcp.servers.*.env.*",
    "mcp.servers.*.headers",
    "mcp.servers.*.headers.*",
    "proxy",
    "providers.*.proxy",
    "store",
]


def _pattern(glob: str) -> re.Pattern[str]:
    text = re.escape(glob).replace(r"\[\*\]", r"\[\d+\]").replace(r"\*", r"[^.\[]+")
    return re.compile(text)


SECRET_PATHS: Final = [
    path
    for path in PATHS
    if any(_pattern(glob).fullmatch(render(path)) for glob in SECRET_PATTERNS)
]


def test_the_fuzzed_paths_cover_every_section_and_every_secret_pattern() -> None:
    rendered = {render(path) for path in PATHS}
    assert {"providers.k1.model_rate_limits.k1.max_queue", "defaults.options.top_k"} <= rendered
    assert {"mcp.servers.k1.env.k1", "cost_control.budgets[0].calendar"} <= rendered
    for glob in SECRET_PATTERNS:
        assert any(_pattern(glob).fullmatch(render(path)) for path in SECRET_PATHS), glob


def nest(path: tuple[Key, ...], value: object) -> Any:
    """The mapping that holds ``value`` at ``path``."""
    for part in reversed(path):
        value = [value] if isinstance(part, int) else {part: value}
    return value


# ---------------------------------------------------------------------------- hostile values

HUGE_NUMBERS: Final = [
    10**400,
    -(10**400),
    10**4000,
    2**63,
    -(2**63) - 1,
    2**64,
    1e308,
    -1e308,
    5e-324,
    -0.0,
    float("nan"),
    float("inf"),
    -float("inf"),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    Decimal("1e999999"),
    Decimal("1e-999999"),
    Decimal("-1"),
]
HOSTILE_TEXT: Final = [
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udcff",
    "a\r\nInjected: 1",
    "9" * 400,
    "9" * 5000,
    "1" + "0" * 4400,
    "1e400",
    "-1e400",
    "1e-400",
    "nan",
    "-inf",
    "-1",
    "1.5",
    "0x10",
    "١٢٣",
    "1h" * 2000,
    "9" * 400 + "h",
    "36526d",
    "true",
    "null",
    "~",
    "memory",
    "redis://[::1",
    "redis://:pw@[::1",
    "redis://host:99999",
    "redis://host:notaport/0",
    "redis://host/notadb",
    "rediss://",
    "http://[::1",
    "http://u:p@[::1",
    "http://host:99999",
    "http://host:-1",
    "http://exa mple.com",
    "http://host\r\n/x",
    "http://\ud800.com",
    "https://",
    "http://u:pw@proxy:3128/path?x=1",
    "socks5://u:pw@host:1080",
    "ftp://host",
    "a:b",
    ":",
    "${X}",
    "$${",
    "a" * 10_000,
    "Authorization: Bearer abc",
    "/nonexistent/ca.pem",
]
ODD_OBJECTS: Final[list[Callable[[], object]]] = [
    object,
    lambda: b"bytes",
    lambda: bytearray(b"x"),
    lambda: {1, 2},
    lambda: frozenset({"a"}),
    lambda: (1, "a"),
    lambda: complex(1, 2),
    lambda: datetime.date(2001, 12, 14),
    lambda: datetime.timedelta(seconds=5),
    lambda: PurePosixPath("/tmp/x"),
    lambda: Secret("odd-secret-value"),
    RetryConfig,
    Config,
    lambda: range(3),
    lambda: {1: "int key", None: "none key", (1, 2): "tuple key"},
    lambda: {10**400: "huge key"},
]


def pick(values: list[Any]) -> st.SearchStrategy[Any]:
    """One of ``values``, without putting their (large) reprs in the strategy's."""
    return st.integers(min_value=0, max_value=len(values) - 1).map(values.__getitem__)


def _deep(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value] if depth % 2 else {"k": value}
    return value


def _holding_itself() -> object:
    value: list[object] = []
    value.append(value)
    return {"k": value}


def _shared_bomb() -> object:
    value: object = ["x"] * 10
    for _ in range(5):
        value = [value] * 10  # a million leaves, each level shared
    return value


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    pick(HUGE_NUMBERS),
    pick(HOSTILE_TEXT),
    st.text(st.characters(exclude_categories=()), max_size=30),
    st.sampled_from([*ODD_OBJECTS, lambda: _deep(40), lambda: _deep(2000), _shared_bomb]).map(
        lambda make: make()
    ),
    st.builds(_holding_itself),
)
hostile = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=3),
    ),
    max_leaves=6,
)
placed = st.tuples(st.sampled_from(PATHS), hostile)


def _yaml_able(value: object, depth: int = 0) -> bool:
    if depth > 50:
        return False
    if value is None or isinstance(value, bool | float | str):
        return True
    if isinstance(value, int):
        return abs(value) < 10**4000
    if isinstance(value, list):
        items: list[object] = value  # type: ignore[assignment]
        return len(items) < 50 and all(_yaml_able(v, depth + 1) for v in items)
    if isinstance(value, dict):
        pairs: dict[object, object] = value  # type: ignore[assignment]
        return all(
            isinstance(k, str | int) and _yaml_able(k, depth + 1) and _yaml_able(v, depth + 1)
            for k, v in pairs.items()
        )
    return False


# ------------------------------------------------------------------------------- the checks


def _said(error: ConfigurationError) -> str:
    parts = [str(error), repr(error), *map(str, error.args), json.dumps(error.details)]
    parts += [f"{p.path} {p.message} {p.source}" for p in error.problems]
    parts.append(msgspec.json.encode(error.info()).decode())
    return "\n".join(parts)


def _views(config: Config) -> str:
    """Every text a valid configuration shows; making them must not fail either."""
    return "\n".join(
        [repr(config), str(config), config.to_json().decode(), json.dumps(config.redacted())]
    )


def outcome(load: Callable[[], Config]) -> str:
    """Run a loader; return what it shows. Fail on anything but a Config or a well-formed
    `ConfigurationError` whose every problem names a path and a source."""
    try:
        config = load()
    except ConfigurationError as error:
        failed = error
    else:
        assert isinstance(config, Config)
        return _views(config)
    assert failed.problems, "a ConfigurationError lists its problems"
    for problem in failed.problems:
        assert problem.path, problem
        assert problem.source, problem
        assert not problem.message.startswith(UNFORESEEN), problem
    return _said(failed)


# --------------------------------------------------------------------- hostile, everywhere


@FUZZ
@given(placed)
def test_from_dict_raises_only_configuration_errors(case: tuple[tuple[Key, ...], object]) -> None:
    path, value = case
    outcome(lambda: Config.from_dict(nest(path, value)))


@FUZZ
@given(placed)
def test_keywords_raise_only_configuration_errors(case: tuple[tuple[Key, ...], object]) -> None:
    path, value = case
    top, rest = path[0], nest(path[1:], value)
    assert isinstance(top, str)
    outcome(lambda: Config(**{top: rest}))
    outcome(lambda: Config.load(environ={}, **{top: rest}))


@FUZZ
@given(placed)
def test_replace_and_merged_with_raise_only_configuration_errors(
    case: tuple[tuple[Key, ...], object],
) -> None:
    path, value = case
    base = Config.from_dict({"provider": "openai", "providers": {"k1": {"models": ["m"]}}})
    top = path[0]
    assert isinstance(top, str)
    outcome(lambda: base.replace(**{top: nest(path[1:], value)}))
    outcome(lambda: base.merged_with(nest(path, value)))


@FUZZ
@given(st.sampled_from([5, None, "text", ["a"], b"x", object(), _holding_itself()]))
def test_a_whole_input_of_the_wrong_kind_is_a_configuration_error(value: Any) -> None:
    outcome(lambda: Config.from_dict(value))
    outcome(lambda: Config.from_dict({"providers": value}))
    outcome(lambda: Config().merged_with(value))
    outcome(lambda: Config.from_yaml(value, environ={}))
    outcome(lambda: Config.from_env(value))
    outcome(lambda: Config.load(yaml=value, environ={}))


#: The variables of the documentation's table, each read into the configuration.
VARIABLES: Final = [
    "LLM_API_KEY",
    "LLM_PROVIDER",
    "LLM_MODEL",
    "LLM_BASE_URL",
    "LLM_TIMEOUT",
    "LLM_MAX_RETRIES",
    "LLM_REQUESTS_PER_MINUTE",
    "LLM_MAX_TOKENS_PER_MINUTE",
    "LLM_MAX_CONCURRENT_CALLS",
    "LLM_MAX_COST_PER_REQUEST",
    "LLM_MAX_BUDGET",
    "LLM_BUDGET_PERIOD",
    "LLM_LOG_LEVEL",
    "LLM_LOG_FORMAT",
    "LLM_STORE",
    "LLM_PROXY",
    "LLM_WS_HOST",
    "LLM_WS_PORT",
    "LLM_WS_TOKENS",
    "LLM_WS_ALLOWED_ORIGINS",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GROQ_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
]
env_values = st.one_of(
    pick(HOSTILE_TEXT),
    st.text(st.characters(exclude_categories=()), max_size=20),
    st.from_regex(r"-?[0-9]{1,30}(\.[0-9]{0,5})?", fullmatch=True),
    pick(["9" * 400, "-" + "9" * 400, "1" + "0" * 4400, "9" * 400 + ".5", "9" * 400 + "s"]),
)
environments = st.fixed_dictionaries({}, optional=dict.fromkeys(VARIABLES, env_values))


@FUZZ
@given(environments)
def test_environment_variables_raise_only_configuration_errors(environ: dict[str, str]) -> None:
    outcome(lambda: Config.from_env(environ))


@FUZZ
@given(st.dictionaries(st.sampled_from(VARIABLES), scalars, min_size=1, max_size=3))
def test_an_environment_mapping_of_non_strings_is_a_configuration_error(
    environ: dict[str, Any],
) -> None:
    outcome(lambda: Config.from_env(environ))


HOSTILE_YAML: Final = [
    "a: b\x00\n",
    "\x07: 1\n",
    "timeout: 1\n\x1b[31m",
    "[" * 100_000,
    "{a: " * 5000,
    "- " * 5000 + "x",
    "a: &a [*a]\n",
    "a: &a {b: *a}\n",
    "a: *nowhere\n",
    "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)).replace(
        "*l0", "x"
    ),
    "timeout: 2001-02-30\n",
    "timeout: 2001-12-14\n",
    "rate_limits: {requests_per_minute: " + "9" * 5000 + "}\n",
    "rate_limits: {requests_per_minute: " + "190:20:30:" * 2000 + "1}\n",
    "timeout: .nan\n",
    "timeout: -.inf\n",
    "timeout: 1.0e+400\n",
    "a: !!python/object:os.system x\n",
    "a: !!binary notbase64!!\n",
    "a: !!set {x, y}\n",
    "providers: !!omap [a: 1]\n",
    "? [a, b]\n: 1\n",
    "? {a: 1}\n: 1\n",
    "a: 1\na: 2\n",
    "--- a\n--- b\n",
    "%YAML 9.9\n--- a\n",
    "'unterminated\n",
    "\t- tab\n",
    "key: [1, 2\n",
    "\ufeffprovider: openai\n",
    "provider: ${X\n",
    "providers: {p: {api_key: ${K:-}}}\n",
    "x" * ((1 << 20) + 1),
]
HOSTILE_BYTES: Final = [
    b"provider: \xff\xfe\n",
    b"\xef\xbb\xbfprovider: openai\n",
    b"\xc3\x28: 1\n",
    b"a: \xed\xa0\x80\n",
    b"\x00\x00\xfe\xff",
]


@FUZZ
@given(placed.filter(lambda case: _yaml_able(case[1])))
def test_yaml_of_hostile_values_raises_only_configuration_errors(
    case: tuple[tuple[Key, ...], object],
) -> None:
    path, value = case
    outcome(lambda: Config.from_yaml(yaml.safe_dump(nest(path, value)), environ={}))


@FUZZ
@given(
    st.one_of(
        pick(HOSTILE_YAML),
        pick(HOSTILE_BYTES),
        st.text(st.characters(exclude_categories=()), max_size=60),
        st.binary(max_size=60),
    )
)
def test_hostile_yaml_text_raises_only_configuration_errors(text: str | bytes) -> None:
    outcome(lambda: Config.from_yaml("\n" + text if isinstance(text, str) else text, environ={}))


# ---------------------------------------------------------------------------------- secrets

# Token-like strings no message could contain by chance: a prefix no message has.
tokens = st.text("ABCDEFGHJKMNPRSTUVWXYZ23456789", min_size=4, max_size=40).map(lambda s: "Q9" + s)
NUMERIC_TOKENS: Final = [86753091, 4815162342]


def _secret_values() -> st.SearchStrategy[tuple[object, list[str]]]:
    """A value for a secret-bearing path, in every shape, with the secrets it holds."""

    def shaped(token: str, other: str, shape: int) -> tuple[object, list[str]]:
        values: list[tuple[object, list[str]]] = [
            (token, [token]),
            ([token], [token]),
            ({"k1": token}, [token]),
            ({"Authorization": f"Bearer {token}"}, [token]),
            ([[token]], [token]),
            ({"k1": [token]}, [token]),
            (f"http://{token}:{other}@proxy.example:3128", [token, other]),
            (f"http://{token}@proxy.example:3128", [token]),
            (f"http://{token}:{other}@[::1", [token, other]),
            (f"http://{token}:{other}@proxy.example:3128/path", [token, other]),
            (f"socks5://{token}:{other}@proxy.example:1080", [token, other]),
            (f"redis://:{token}@cache:6379/0", [token]),
            (f"redis://{token}:{other}@cache:6379/0?password={other}", [token, other]),
            (f"redis://:{token}@[::1", [token]),
            (f"redis://:{token}@cache:99999/x", [token]),
            (f"{token}\r\n", [token]),
            (f" {token}\x00", [token]),
            (NUMERIC_TOKENS[0], [str(NUMERIC_TOKENS[0])]),
            ([NUMERIC_TOKENS[1]], [str(NUMERIC_TOKENS[1])]),
        ]
        return values[shape % len(values)]

    return st.builds(shaped, tokens, tokens, st.integers(min_value=0, max_value=100))


def _shown(text: str, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if secret in text]


@FUZZ
@given(st.sampled_from(SECRET_PATHS), _secret_values())
def test_a_secret_bearing_path_never_shows_its_value_from_a_dict_or_keywords(
    path: tuple[Key, ...], secret: tuple[object, list[str]]
) -> None:
    value, secrets = secret
    top = path[0]
    assert isinstance(top, str)
    assert not _shown(outcome(lambda: Config.from_dict(nest(path, value))), secrets)
    assert not _shown(outcome(lambda: Config(**{top: nest(path[1:], value)})), secrets)
    assert not _shown(outcome(lambda: Config().replace(**{top: nest(path[1:], value)})), secrets)


@FUZZ
@given(st.sampled_from(SECRET_PATHS), _secret_values())
def test_a_secret_bearing_path_never_shows_its_value_from_yaml(
    path: tuple[Key, ...], secret: tuple[object, list[str]]
) -> None:
    value, secrets = secret
    text = yaml.safe_dump(nest(path, "${SECRET}"))
    environ = {"SECRET": value} if isinstance(value, str) else {}
    plain = yaml.safe_dump(nest(path, value))
    assert not _shown(outcome(lambda: Config.from_yaml(text, environ=environ)), secrets)
    assert not _shown(outcome(lambda: Config.from_yaml(plain, environ={})), secrets)


SECRET_VARIABLES: Final = [
    "LLM_API_KEY",
    "LLM_PROXY",
    "LLM_STORE",
    "LLM_WS_TOKENS",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AZURE_OPENAI_API_KEY",
]


@FUZZ
@given(st.sampled_from(SECRET_VARIABLES), _secret_values())
def test_a_secret_bearing_variable_never_shows_its_value(
    variable: str, secret: tuple[object, list[str]]
) -> None:
    value, secrets = secret
    environ = {variable: value if isinstance(value, str) else json.dumps(value)}
    assert not _shown(outcome(lambda: Config.from_env(environ)), secrets)


# ------------------------------------------------------------------------------ round trips

names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12)
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00$"), max_size=20)
# Credentials no other text holds: a secret made is masked wherever it appears later.
credentials = st.text("abcdefghjkmnpqrstuvwxyz23456789", min_size=1, max_size=24).map(
    lambda s: "Q8" + s
)
durations = st.floats(min_value=0.001, max_value=10**6, allow_nan=False)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3),
    max_leaves=5,
)
money = st.decimals(min_value=0, max_value=10**6, places=2).map(str)
limits = st.fixed_dictionaries(
    {},
    optional={
        "requests_per_minute": st.integers(1, 10**9),
        "tokens_per_minute": st.integers(1, 2**63 - 1),
        "concurrent_calls": st.none() | st.integers(1, 1000),
        "max_wait": durations,
        "max_queue": st.integers(0, 10**6),
    },
)
providers = st.fixed_dictionaries(
    {},
    optional={
        "enabled": st.booleans(),
        "api_key": credentials,
        "api_keys": st.lists(credentials, max_size=2),
        "base_url": st.sampled_from(["http://127.0.0.1:8000/v1", "https://api.example.com"]),
        "models": st.lists(names, max_size=2),
        "options": st.dictionaries(names, json_like, max_size=3),
        "kind": st.sampled_from(["openai", "anthropic", "gemini", "mock", "ollama"]),
        "organization": texts,
        "headers": st.dictionaries(
            st.from_regex(r"X-[A-Za-z]{1,8}", fullmatch=True), credentials, max_size=2
        ),
        "fallback": st.lists(st.sampled_from(["openai:gpt-4o", "anthropic:claude"]), max_size=2),
        "max_connections": st.integers(1, 1000),
        "rate_limits": limits,
        "model_rate_limits": st.dictionaries(names, limits, max_size=2),
        "proxy": st.sampled_from(["http://proxy:3128", "http://user:pw@proxy.example:8080"]),
        "trust_env": st.booleans(),
        "verify": st.booleans(),
    },
)
valid_configs = st.fixed_dictionaries(
    {},
    optional={
        "provider": names,
        "model": names,
        "api_key": credentials,
        "base_url": st.just("https://gateway.example/v1"),
        "timeout": durations,
        "retries": st.builds(
            lambda first, more, attempts: {
                "initial_delay": first,
                "max_delay": first + more,
                "max_attempts": attempts,
            },
            durations,
            durations,
            st.integers(1, 20),
        ),
        "rate_limits": limits,
        "cost_control": st.fixed_dictionaries(
            {},
            optional={
                "max_budget": money,
                "max_cost_per_request": money,
                "alert_thresholds": st.lists(st.floats(0.01, 1.0), max_size=3),
                "budgets": st.lists(
                    st.fixed_dictionaries({"scope": st.just("global"), "limit": money}), max_size=2
                ),
            },
        ),
        "logging": st.fixed_dictionaries({"level": st.sampled_from(["debug", "error"])}),
        "providers": st.dictionaries(names, providers, max_size=2),
        "mcp": st.fixed_dictionaries(
            {
                "servers": st.dictionaries(
                    names,
                    st.fixed_dictionaries(
                        {"transport": st.just("stdio"), "command": names},
                        optional={
                            "args": st.lists(texts, max_size=2),
                            "env": st.dictionaries(
                                st.from_regex(r"[A-Z_]{1,8}", fullmatch=True),
                                credentials,
                                max_size=2,
                            ),
                        },
                    ),
                    max_size=2,
                )
            }
        ),
        "defaults": st.fixed_dictionaries(
            {},
            optional={
                "options": st.fixed_dictionaries(
                    {},
                    optional={
                        "temperature": st.floats(0, 2),
                        "stop": st.lists(names, max_size=2),
                        "seed": st.integers(-(2**63), 2**63 - 1),
                    },
                )
            },
        ),
        "store": st.sampled_from(["memory", "redis://:pw@cache:6379/0", "rediss://cache"]),
        "proxy": st.sampled_from(["http://proxy:3128", "http://u:pw@proxy:3128"]),
        "websocket": st.fixed_dictionaries(
            {},
            optional={"tokens": st.lists(credentials, max_size=2), "port": st.integers(0, 65535)},
        ),
    },
)


def once(plain: Any) -> Any:
    """Plain data with the default provider and model written once, in ``defaults``: both
    spellings in one layer set both, so writing a default ``provider: mock`` would set
    ``defaults.provider`` too."""
    return {key: value for key, value in plain.items() if key not in ("provider", "model")}


def revealed(value: object) -> object:
    """A configuration as plain data, secrets revealed: what a file would hold."""
    if isinstance(value, msgspec.Struct):
        return {name: revealed(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {k: revealed(v) for k, v in value.items()}  # type: ignore[misc]
    if isinstance(value, list):
        return [revealed(v) for v in value]  # type: ignore[misc]
    return value


@ROUND_TRIPS
@given(valid_configs)
def test_a_valid_configuration_round_trips_through_a_mapping_and_yaml(data: dict[str, Any]) -> None:
    config = Config.from_dict(data)
    plain = once(revealed(config))
    assert Config.from_dict(plain) == config
    assert Config.from_yaml(yaml.safe_dump(plain), environ={}) == config


@ROUND_TRIPS
@given(valid_configs)
def test_the_redacted_json_of_a_valid_configuration_is_a_valid_configuration(
    data: dict[str, Any],
) -> None:
    config = Config.from_dict(data)
    again = Config.from_dict(once(json.loads(config.to_json())))
    assert masked_alike(again.redacted()) == masked_alike(config.redacted())


def masked_alike(value: object) -> object:
    """Redacted data with every masked text as ``***`` (a mask masked again is shorter)."""
    if isinstance(value, dict):
        return {k: masked_alike(v) for k, v in value.items()}  # type: ignore[misc]
    if isinstance(value, list):
        return [masked_alike(v) for v in value]  # type: ignore[misc]
    return "***" if isinstance(value, str) and "***" in value else value
