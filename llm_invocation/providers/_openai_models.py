"""What OpenAI's chat models can do, guessed from their ids, and a static list of current ones.

OpenAI's ``GET /models`` returns ids only, so features are guessed from the id's family
(the first matching prefix below). An id of no known family gets every chat feature: a new
model must not be refused before the provider has had its say.
"""

from __future__ import annotations

from typing import Final

from ..types import Feature, ModelInfo

__all__ = [
    "CHAT_FEATURES",
    "guess_features",
    "is_reasoning_model",
    "known_context_window",
    "known_openai_models",
]

_V: Final = Feature.VISION
_F: Final = (Feature.FUNCTION_CALLING, Feature.PARALLEL_TOOLS)
_J: Final = Feature.JSON_MODE
_S: Final = Feature.STRUCTURED_OUTPUT
_R: Final = Feature.REASONING
_STREAM: Final = Feature.STREAMING


def _features(*items: Feature | tuple[Feature, ...]) -> frozenset[Feature]:
    out: set[Feature] = {_STREAM}
    for item in items:
        if isinstance(item, tuple):
            out.update(item)
        else:
            out.add(item)
    return frozenset(out)


CHAT_FEATURES: Final = _features(_V, _F, _J, _S, _R)
"""Every feature a Chat Completions model can have (what an unknown id is assumed to have)."""

_NONE: Final[frozenset[Feature]] = frozenset()

# First matching prefix wins: specific ids before their families.
_FAMILIES: Final[tuple[tuple[str, frozenset[Feature]], ...]] = (
    # Not chat models.
    ("text-embedding", _NONE),
    ("omni-moderation", _NONE),
    ("text-moderation", _NONE),
    ("whisper", _NONE),
    ("tts", _NONE),
    ("dall-e", _NONE),
    ("gpt-image", _NONE),
    ("davinci", _NONE),
    ("babbage", _NONE),
    ("gpt-3.5-turbo-instruct", _NONE),
    # o-series: the first minis and o1-preview had no vision, no tools (o1) or no images (o3).
    ("o1-mini", _features(_R)),
    ("o1-preview", _features(_R)),
    ("o3-mini", _features(_F, _J, _S, _R)),
    ("o1", _features(_V, _F, _J, _S, _R)),
    ("o3", _features(_V, _F, _J, _S, _R)),
    ("o4", _features(_V, _F, _J, _S, _R)),
    # GPT-5: the chat snapshot does not reason.
    ("gpt-5-chat", _features(_V, _F, _J, _S)),
    ("gpt-5", _features(_V, _F, _J, _S, _R)),
    ("gpt-4.1", _features(_V, _F, _J, _S)),
    ("gpt-4.5", _features(_V, _F, _J, _S)),
    ("gpt-4o", _features(_V, _F, _J, _S)),
    ("chatgpt-4o", _features(_V, _J)),
    ("gpt-4-turbo", _features(_V, _F, _J)),
    ("gpt-4-vision", _features(_V)),
    ("gpt-4", _features(_F)),
    ("gpt-3.5-turbo", _features(_F, _J)),
)

_REASONING_PREFIXES: Final = ("o1", "o3", "o4", "gpt-5")


def _family_id(model: str) -> str:
    model = model.lower()
    if model.startswith("ft:"):  # fine-tunes: ft:<base model>:<org>::<id>
        model = model[3:]
    _, _, model = model.rpartition("/")  # "openai/gpt-4o" on routers
    return model


def guess_features(model: str) -> frozenset[Feature] | None:
    """The features of ``model`` by its family, or None for an id of no known family."""
    family = _family_id(model)
    for prefix, features in _FAMILIES:
        if family.startswith(prefix):
            return features
    return None


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` is an o-series or GPT-5 model (which want ``max_completion_tokens``)."""
    family = _family_id(model)
    return family.startswith(_REASONING_PREFIXES)


# (id, context window, max output tokens), from OpenAI's model pages.
_KNOWN: Final[tuple[tuple[str, int, int], ...]] = (
    ("gpt-5", 400_000, 128_000),
    ("gpt-5-mini", 400_000, 128_000),
    ("gpt-5-nano", 400_000, 128_000),
    ("gpt-4.1", 1_047_576, 32_768),
    ("gpt-4.1-mini", 1_047_576, 32_768),
    ("gpt-4.1-nano", 1_047_576, 32_768),
    ("gpt-4o", 128_000, 16_384),
    ("gpt-4o-mini", 128_000, 16_384),
    ("o3", 200_000, 100_000),
    ("o3-mini", 200_000, 100_000),
    ("o4-mini", 200_000, 100_000),
    ("o1", 200_000, 100_000),
)


def known_openai_models(provider: str) -> list[ModelInfo]:
    """Current OpenAI chat models with their context windows, attributed to ``provider``."""
    return [
        ModelInfo(
            id=model,
            provider=provider,
            context_window=window,
            max_output_tokens=output,
            features=guess_features(model) or CHAT_FEATURES,
        )
        for model, window, output in _KNOWN
    ]


def known_context_window(model: str) -> tuple[int, int] | None:
    """(context window, max output) of a known model id or dated snapshot of one."""
    family = _family_id(model)
    best: tuple[str, int, int] | None = None
    for entry in _KNOWN:
        name = entry[0]
        if (family == name or family.startswith(name + "-20")) and (
            best is None or len(name) > len(best[0])
        ):
            best = entry
    return None if best is None else (best[1], best[2])
