"""Provider options: what a provider entry's ``options`` may hold, checked when the client opens.

Each codec describes its options with `OptionRules`; `ProviderOptions.parse` sorts an entry's
``options`` into three kinds, and refuses the rest with a `ConfigurationError` naming the
provider and the key (``providers.<name>.options.<key>``), so a bad option fails
`open_client`, not every call:

* **settings**: read by the codec itself and never sent (``use_max_completion_tokens``,
  ``anthropic_version``, ``stream_format``...);
* **sampling defaults**: the `ModelOptions` fields (``temperature``, ``max_tokens``, ``seed``...)
  and the provider's own spellings of them (``max_completion_tokens``, ``stop_sequences``,
  ``topK``...), used when the request does not set them;
* **body fields**: the provider's known request fields (type-checked), and, where the wire
  format lets them through, unknown ones; merged under the request's ``provider_options``
  (objects one level deep, the request's keys winning).

Refused: a key the codec builds from the request (``model``, ``messages``, ``stream``...), a
sampling option the provider does not have, a value of the wrong type or one that cannot be
sent as JSON, and, where the wire format refuses unknown fields (Gemini), an unknown key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast, final

import msgspec

from .._secrets import redact
from ..errors import ConfigProblem, ConfigurationError, InvalidRequest
from ..types import ModelOptions, Request

__all__ = [
    "ANTHROPIC_RULES",
    "SAMPLING_FIELDS",
    "Check",
    "OptionRules",
    "ProviderOptions",
    "gemini_rules",
    "openai_rules",
]

Check = type | tuple[type, ...]
"""The Python types a value may have (JSON's: str, int, float, bool, list, dict)."""

SAMPLING_FIELDS: Final = (
    "temperature",
    "max_tokens",
    "top_p",
    "top_k",
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "seed",
)
"""The `ModelOptions` fields a provider option may default (not ``provider_options``)."""

_ENCODER: Final = msgspec.json.Encoder()
_MAX_SHOWN: Final = 60


@final
@dataclass(frozen=True, kw_only=True)
class OptionRules:
    """What one codec's ``options`` may hold.

    Attributes:
        provider: the provider's name in messages (``"OpenAI"``).
        settings: keys the codec reads itself, with their types; never sent.
        fields: known body fields, with their types.
        sampling: provider spellings of `ModelOptions` fields (``stop_sequences`` ->
            ``stop``); the `ModelOptions` names themselves are always accepted.
        refused: keys that cannot be options, each with the reason.
        passthrough: unknown keys are sent as body fields; otherwise they are refused.
        unknown_hint: added to the problem of a refused unknown key.
        tools_only: fields sent only with requests that offer tools.
        normalise: the spelling a key is looked up by (Gemini: camelCase).
        nested: a field whose object holds more options of the same kinds (Gemini's
            ``generationConfig``); its unknown keys pass through.
        check: more checks of the sorted options, giving (key path, problem) pairs.
    """

    provider: str
    settings: Mapping[str, Check] = field(default_factory=dict[str, Check])
    fields: Mapping[str, Check | None] = field(default_factory=dict[str, Check | None])
    sampling: Mapping[str, str] = field(default_factory=dict[str, str])
    refused: Mapping[str, str] = field(default_factory=dict[str, str])
    passthrough: bool = True
    unknown_hint: str = ""
    tools_only: frozenset[str] = frozenset()
    normalise: Callable[[str], str] | None = None
    nested: str | None = None
    check: Callable[[ProviderOptions], list[tuple[str, str]]] | None = None


@final
class ProviderOptions:
    """A provider entry's options, sorted (see the module documentation).

    Attributes:
        settings: what the codec reads itself.
        defaults: the sampling defaults (None: none).
        fields: the body fields, by their wire spelling.
    """

    __slots__ = ("_tools_only", "defaults", "fields", "settings")

    def __init__(
        self,
        *,
        settings: dict[str, Any] | None = None,
        defaults: ModelOptions | None = None,
        fields: dict[str, Any] | None = None,
        tools_only: frozenset[str] = frozenset(),
    ) -> None:
        self.settings: dict[str, Any] = settings or {}
        self.defaults = defaults
        self.fields: dict[str, Any] = fields or {}
        self._tools_only = tools_only

    def __repr__(self) -> str:
        return (
            f"ProviderOptions(settings={sorted(self.settings)}, "
            f"defaults={self.defaults!r}, fields={sorted(self.fields)})"
        )

    @classmethod
    def parse(cls, options: Mapping[str, Any], rules: OptionRules, *, name: str) -> ProviderOptions:
        """Sort ``options`` of the provider entry ``name`` by ``rules``.

        Raises:
            ConfigurationError: listing every key that cannot be an option (at
                ``providers.<name>.options.<key>``), with the provider's name.
        """
        parser = _Parser(rules, name)
        for key, value in options.items():
            parser.option(key, value)
        return parser.finish()

    def apply(self, request: Request) -> Request:
        """``request`` with these options under its own: its options set win, its
        ``provider_options`` win over the body fields (objects merged one level deep)."""
        if self.defaults is None and not self.fields:
            return request
        options = request.options
        changes: dict[str, Any] = {}
        if self.defaults is not None:
            for name in SAMPLING_FIELDS:
                value = getattr(self.defaults, name)
                if value is not None and getattr(options, name) is None:
                    changes[name] = value
        fields = self.fields
        if fields and not request.tools and self._tools_only:
            fields = {k: v for k, v in fields.items() if k not in self._tools_only}
        if fields:
            merged = dict(fields)
            for key, value in (options.provider_options or {}).items():
                current = merged.get(key)
                if isinstance(value, dict) and isinstance(current, dict):
                    merged[key] = {**current, **cast("dict[str, Any]", value)}
                else:
                    merged[key] = value
            changes["provider_options"] = merged
        if not changes:
            return request
        return msgspec.structs.replace(request, options=msgspec.structs.replace(options, **changes))


class _Parser:
    """Sorts the options of one entry, collecting every problem."""

    def __init__(self, rules: OptionRules, name: str) -> None:
        self.rules = rules
        self.name = name
        self.problems: list[ConfigProblem] = []
        self.settings: dict[str, Any] = {}
        self.sampling: dict[str, Any] = {}
        self.sampling_keys: dict[str, str] = {}  # ModelOptions field -> the key that set it
        self.fields: dict[str, Any] = {}

    def problem(self, path: str, message: str) -> None:
        self.problems.append(
            ConfigProblem(path=f"providers.{self.name}.options.{path}", message=message)
        )

    def option(self, key: object, value: Any) -> None:
        rules = self.rules
        if not isinstance(key, str) or not key:
            self.problem(_show(key), "an option's name must be a non-empty string")
            return
        if key in rules.settings:
            self.typed(key, key, value, rules.settings[key], into=self.settings)
            return
        wire = rules.normalise(key) if rules.normalise is not None else key
        target = key if key in SAMPLING_FIELDS else rules.sampling.get(wire)
        reason = rules.refused.get(wire) if target is None else rules.refused.get(key)
        if reason is not None:
            self.problem(key, reason)
        elif target is not None:
            self.default(key, target, value)
        elif wire == rules.nested and isinstance(value, dict):
            self.nested(key, wire, cast("dict[Any, Any]", value))
        elif wire in rules.fields:
            self.typed(key, wire, value, rules.fields[wire], into=self.fields)
        elif rules.passthrough:
            self.typed(key, wire, value, None, into=self.fields)
        else:
            hint = f"; {rules.unknown_hint}" if rules.unknown_hint else ""
            self.problem(key, f"is not an option {rules.provider} knows{hint}")

    def nested(self, key: str, wire: str, value: dict[Any, Any]) -> None:
        rules = self.rules
        inner_fields: dict[str, Any] = {}
        for inner, item in value.items():
            path = f"{key}.{inner if isinstance(inner, str) else _show(inner)}"
            if not isinstance(inner, str) or not inner:
                self.problem(path, "an option's name must be a non-empty string")
                continue
            spelled = rules.normalise(inner) if rules.normalise is not None else inner
            target = inner if inner in SAMPLING_FIELDS else rules.sampling.get(spelled)
            reason = rules.refused.get(spelled) if target is None else None
            if reason is not None:
                self.problem(path, reason)
            elif target is not None:
                self.default(path, target, item)
            else:
                self.typed(path, spelled, item, rules.fields.get(spelled), into=inner_fields)
        if inner_fields:
            current: Any = self.fields.get(wire)
            merged: dict[str, Any] = dict(cast("dict[str, Any]", current)) if current else {}
            merged.update(inner_fields)
            self.fields[wire] = merged

    def default(self, path: str, target: str, value: Any) -> None:
        earlier = self.sampling_keys.get(target)
        if earlier is not None:
            self.problem(path, f"sets {target} again (already set by {earlier!r})")
            return
        self.sampling[target] = value
        self.sampling_keys[target] = path

    def typed(
        self, path: str, wire: str, value: Any, check: Check | None, *, into: dict[str, Any]
    ) -> None:
        if check is not None and not _fits(value, check):
            self.problem(path, f"must be {_describe(check)}, got {_show(value)}")
            return
        try:
            _ENCODER.encode(value)
        except (TypeError, ValueError, OverflowError):
            self.problem(path, f"cannot be sent as JSON: {_show(value)}")
            return
        into[wire] = value

    def finish(self) -> ProviderOptions:
        defaults: ModelOptions | None = None
        if self.sampling and not self.problems:
            defaults = self.defaults()
        parsed = ProviderOptions(
            settings=self.settings,
            defaults=defaults,
            fields=self.fields,
            tools_only=self.rules.tools_only,
        )
        if not self.problems and self.rules.check is not None:
            for path, message in self.rules.check(parsed):
                self.problem(path, message)
        if self.problems:
            raise ConfigurationError(problems=self.problems, provider=self.name)
        return parsed

    def defaults(self) -> ModelOptions | None:
        try:
            return msgspec.convert(self.sampling, ModelOptions)
        except msgspec.ValidationError as exc:
            text = str(exc)
            target = text.rpartition("$.")[2].rstrip("`").split("[", 1)[0]
            self.problem(self.sampling_keys.get(target, target), text.partition(" - at")[0])
        except InvalidRequest as exc:
            target = str(exc.details.get("field", ""))
            self.problem(self.sampling_keys.get(target, target), exc.message)
        return None


def _fits(value: Any, check: Check) -> bool:
    kinds = check if isinstance(check, tuple) else (check,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # True is an int to Python, not to the provider
    if isinstance(value, int) and not isinstance(value, bool) and float in kinds:
        return True
    return isinstance(value, kinds)


_NAMES: Final = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    list: "a list",
    dict: "an object",
}


def _describe(check: Check) -> str:
    kinds = check if isinstance(check, tuple) else (check,)
    return " or ".join(_NAMES.get(kind, kind.__name__) for kind in kinds)


def _show(value: object) -> str:
    text = redact(repr(value))
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


# -- the built-in codecs' options -----------------------------------------------------------

_FROM_REQUEST: Final = "is built from the request's {what}; it cannot be a provider option"


def _built(**what: str) -> dict[str, str]:
    return {key: _FROM_REQUEST.format(what=text) for key, text in what.items()}


_OPENAI_FIELDS: Final[Mapping[str, Check | None]] = {
    "user": str,
    "safety_identifier": str,
    "prompt_cache_key": str,
    "service_tier": str,
    "parallel_tool_calls": bool,
    "reasoning_effort": str,
    "verbosity": str,
    "store": bool,
    "metadata": dict,
    "logit_bias": dict,
    "logprobs": bool,
    "top_logprobs": int,
    "n": int,
    "prediction": dict,
    "modalities": list,
    "audio": dict,
    "web_search_options": dict,
}

_OPENAI_REFUSED: Final = _built(
    model="model",
    messages="messages",
    prompt="messages (legacy completions)",
    stream="stream flag",
    stream_options="stream flag (usage is always asked for where the server allows)",
    tools="tools",
    functions="tools",
    tool_choice="tool_choice",
    function_call="tool_choice",
    response_format="response_format",
)


def openai_rules(*, provider: str = "OpenAI", top_k: bool, seed_field: str) -> OptionRules:
    """The options of the OpenAI codec (and of compatible servers and Azure).

    Args:
        provider: the name in messages.
        top_k: the server takes ``top_k`` (otherwise it is refused).
        seed_field: the server's spelling of ``seed`` (Mistral: ``random_seed``).
    """
    refused = dict(_OPENAI_REFUSED)
    if not top_k:
        refused["top_k"] = (
            f"{provider} has no top_k (vLLM, Together and OpenRouter take it: "
            "kind 'vllm', 'together' or 'openrouter')"
        )
    sampling = {"max_completion_tokens": "max_tokens"}
    if seed_field != "seed":
        sampling[seed_field] = "seed"
    return OptionRules(
        provider=provider,
        settings={"use_max_completion_tokens": bool},
        fields=_OPENAI_FIELDS,
        sampling=sampling,
        refused=refused,
        tools_only=frozenset({"parallel_tool_calls"}),
    )


def _anthropic_refused() -> dict[str, str]:
    refused = _built(
        model="model",
        messages="messages",
        system="system and developer messages",
        stream="stream flag",
        tools="tools",
        tool_choice="tool_choice",
    )
    for name in ("seed", "frequency_penalty", "presence_penalty"):
        refused[name] = f"Anthropic's Messages API has no {name}"
    return refused


ANTHROPIC_RULES: Final = OptionRules(
    provider="Anthropic",
    settings={
        "default_max_tokens": int,
        "anthropic_version": str,
        "betas": (str, list),
        "anthropic_beta": (str, list),
    },
    fields={
        "metadata": dict,
        "thinking": dict,
        "service_tier": str,
        "disable_parallel_tool_use": bool,
        "output_config": dict,
        "container": (str, dict),
        "mcp_servers": list,
        "context_management": dict,
    },
    sampling={"stop_sequences": "stop"},
    refused=_anthropic_refused(),
)
"""The options of the Anthropic codec."""


def _gemini_check(options: ProviderOptions) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    defaults = options.defaults
    if defaults is not None and defaults.stop is not None and len(defaults.stop) > _GEMINI_STOPS:
        problems.append(("stop", f"Gemini takes at most {_GEMINI_STOPS} stop sequences"))
    tool_config: Any = options.fields.get("toolConfig")
    if isinstance(tool_config, dict) and "functionCallingConfig" in tool_config:
        problems.append(
            (
                "toolConfig.functionCallingConfig",
                _FROM_REQUEST.format(what="tool_choice"),
            )
        )
    return problems


_GEMINI_STOPS: Final = 5


def gemini_rules(generation_keys: frozenset[str], camel: Callable[[str], str]) -> OptionRules:
    """The options of the Gemini codec: ``generation_keys`` are the ``GenerationConfig``
    fields, ``camel`` the spelling keys are looked up by."""
    sampling = {
        "topP": "top_p",
        "topK": "top_k",
        "maxOutputTokens": "max_tokens",
        "stopSequences": "stop",
        "presencePenalty": "presence_penalty",
        "frequencyPenalty": "frequency_penalty",
    }
    refused = _built(
        model="model (it is in the URL)",
        contents="messages",
        systemInstruction="system and developer messages",
    )
    for name in ("responseMimeType", "responseSchema", "responseJsonSchema"):
        refused[name] = _FROM_REQUEST.format(what="response_format")
    typed: dict[str, Check | None] = {
        "candidateCount": int,
        "thinkingConfig": dict,
        "responseModalities": list,
        "responseLogprobs": bool,
        "logprobs": int,
        "mediaResolution": str,
        "speechConfig": dict,
        "imageConfig": dict,
        "audioTimestamp": bool,
        "enableAffectiveDialog": bool,
        "enableEnhancedCivicAnswers": bool,
        "modelSelectionConfig": dict,
        "routingConfig": dict,
    }
    fields: dict[str, Check | None] = {
        key: typed.get(key)
        for key in generation_keys
        if key not in sampling and key not in refused and key not in ("temperature", "seed")
    }
    fields.update(
        safetySettings=list,
        cachedContent=str,
        labels=dict,
        toolConfig=dict,
        tools=list,
        generationConfig=dict,
    )
    return OptionRules(
        provider="Gemini",
        settings={"stream_format": str},
        fields=fields,
        sampling=sampling,
        refused=refused,
        passthrough=False,
        unknown_hint=(
            "the Gemini API refuses unknown fields; a generation setting this version does "
            "not know can go inside generationConfig, which passes its keys through"
        ),
        normalise=camel,
        nested="generationConfig",
        check=_gemini_check,
    )
