"""The API keys of one provider: where they come from, rotation, and setting a rejected one aside.

A `KeyRing` holds a provider's keys for every incarnation of its session (it outlives
restarts). Keys come from the configuration (``api_key``, ``api_keys``), from a file
(``api_key_file``: re-read when it changes), or from a function (sync or async, called when
a key is first needed and again after a 401), and can be replaced at run time
(`KeyRing.replace`, behind ``client.set_api_keys``).

* **429:** with several keys, the next attempt moves on to the next key.
* **401:** only that key is set aside, and only for the model family it failed on
  (`model_family`): for ``initial`` seconds, doubling with each consecutive rejection up to
  ``maximum``; a success with that key for that family resets the count. A key set aside
  for every family is tried again when its time is up.
* **Labels:** a key is named by its place in the list (``#0``), never by its value.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, TypeAlias, final

import msgspec
import trio

from .._secrets import Secret
from ..errors import AuthenticationError, ConfigurationError, LLMError

__all__ = [
    "ApiKeys",
    "KeyBackoff",
    "KeyFunction",
    "KeyRing",
    "KeyStatistics",
    "Rejection",
    "checked_keys",
    "model_family",
]

log = logging.getLogger("llm_invocation.providers")

KeyValues: TypeAlias = "str | Secret | Sequence[str | Secret] | None"
"""What a key function returns: one key, several, or None (no key now)."""
KeyFunction: TypeAlias = "Callable[[], KeyValues | Awaitable[KeyValues]]"
"""A function giving the current keys, sync or async (called when needed and after a 401)."""
ApiKeys: TypeAlias = "Sequence[str | Secret] | KeyFunction"
"""What ``client.set_api_keys`` takes: the keys, or a function that gives them."""

FILE_CHECK_INTERVAL: Final = 1.0
"""A key file is looked at (its modification time, size and inode) at most once a second."""
SOURCE_TIMEOUT: Final = 10.0
"""How long a key function may take before the call that needed it fails."""
_KEPT_STRIKES: Final = 1024


class KeyBackoff(msgspec.Struct, frozen=True, kw_only=True):
    """How long a rejected key is set aside: ``initial`` seconds after the first 401,
    ``multiplier`` times longer after each consecutive one, at most ``maximum``."""

    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0

    def delay(self, strikes: int) -> float:
        """The set-aside time after ``strikes`` consecutive rejections (from 1)."""
        exponent = max(0, min(strikes - 1, 64))
        return min(self.maximum, self.initial * self.multiplier**exponent)


class KeyStatistics(msgspec.Struct, frozen=True, kw_only=True):
    keys: int
    """Keys known now."""
    usable: int
    """Keys not set aside for any model family."""
    rotations: int
    """Moves to another key after a 429 or a 401."""
    set_aside: int = 0
    """(key, model family) pairs set aside now."""
    refreshes: int = 0
    """Times the keys were read again from their file or function."""


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """What setting a key aside after a 401 did (see `KeyRing.reject`)."""

    label: str
    """The rejected key's place in the list (``#0``), or ``"replaced"`` when it was no
    longer in it (a call in flight while the keys were replaced)."""
    family: str
    seconds: float
    """How long it is set aside (0 when it is no longer in the list)."""
    until: datetime | None
    """When it is tried again, wall-clock UTC (None when it is no longer in the list)."""
    replaced: bool = False
    """The key is no longer among the keys (replaced, or gone when they were read again)."""
    usable: bool
    """Whether another key may be tried for this family now."""
    next_label: str | None = None
    """The key the next attempt would use, when there is one."""

    def explain(self, error: LLMError, provider: str) -> AuthenticationError:
        """``error`` (the provider's 401) told the caller's way: which key, for which
        family, until when, and what happens next. Never shows a key's value."""
        if self.replaced or self.until is None:
            which = "a replaced API key" if self.label == "replaced" else f"API key {self.label}"
            what = f"{which} of {provider} was rejected; it is no longer among its keys"
        else:
            when = self.until.strftime("%H:%M:%S UTC")
            what = (
                f"API key {self.label} of {provider} was rejected for {self.family!r} models "
                f"and is set aside for them for {self.seconds:g}s (until {when})"
            )
        if self.usable:
            then = f"key {self.next_label} is tried next" if self.next_label else "another key"
        else:
            then = f"calls to {self.family!r} models fail at once until then"
        details = {
            **error.details,
            "reason": "key_rejected",
            "key": self.label,
            "family": self.family,
            "set_aside_seconds": self.seconds,
        }
        if self.until is not None:
            details["set_aside_until"] = self.until.isoformat(timespec="seconds")
        explained = AuthenticationError(
            f"{error.message}: {what}; {then}",
            provider=error.provider or provider,
            status=error.status,
            request_id=error.request_id,
            retry_after=None if self.usable or self.replaced else self.seconds,
            details=details,
        )
        explained.__cause__ = error
        return explained


@functools.lru_cache(maxsize=1024)
def model_family(model: str) -> str:
    """The family of a model id, for setting a rejected key aside: its first word.

    The id after its last ``/`` and without an ``ft:`` prefix, lower-cased, up to the first
    ``-``, ``_``, ``.``, ``:`` or ``@``: ``gpt-4o-mini`` and ``gpt-5`` are ``gpt``,
    ``o3-mini`` is ``o3``, ``claude-sonnet-4-5`` is ``claude``, ``models/gemini-2.5-flash``
    is ``gemini``, ``llama3:8b`` is ``llama3``.
    """
    name = model.rsplit("/", 1)[-1].lower()
    name = name.removeprefix("ft:")
    end = len(name)
    for separator in "-_.:@":
        found = name.find(separator)
        if 0 < found < end:
            end = found
    return name[:end] or name


def _key_problem(value: object) -> str | None:
    if isinstance(value, Secret):
        value = value.reveal()
    if not isinstance(value, str):
        return f"is not a string (got {type(value).__name__})"
    if not value.strip():
        return "is empty"
    if value != value.strip():
        return "has leading or trailing whitespace"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return "contains a control character"
    return None


def checked_keys(values: object, *, where: str) -> list[Secret]:
    """``values`` (a key or a sequence of keys) as secrets, without duplicates.

    Raises:
        ConfigurationError: there is no key, or one is not a non-empty string without
            control characters (the problem names the key's index, never its value).
    """
    items: list[object]
    if isinstance(values, str | Secret):
        items = [values]
    elif isinstance(values, Sequence):
        items = list(values)  # pyright: ignore[reportUnknownArgumentType]
    else:
        raise ConfigurationError(
            f"{where}: expected a key, a list of keys or a function, got {type(values).__name__}"
        )
    if not items:
        raise ConfigurationError(f"{where}: the list of keys is empty")
    problems = [
        f"{where}[{index}] {problem}"
        for index, item in enumerate(items)
        if (problem := _key_problem(item)) is not None
    ]
    if problems:
        raise ConfigurationError("; ".join(problems))
    keys = [item if isinstance(item, Secret) else Secret(str(item)) for item in items]
    return list(dict.fromkeys(keys))


def _read_key_file(path: str) -> list[Secret]:
    """The keys of a key file: one a line; blank lines and ``#`` comments are skipped."""
    with open(path, encoding="utf-8") as file:
        text = file.read(1 << 20)
    lines = [line.strip() for line in text.splitlines()]
    values = [line for line in lines if line and not line.startswith("#")]
    if not values:
        return []
    return checked_keys(values, where="the key file's keys")


@final
class KeyRing:
    """The keys of one provider: see the module documentation.

    Args:
        keys: the configured keys, in order.
        provider: the provider's name (for messages).
        file: a file of keys (one a line), re-read when it changes; its keys come first.
        source: a function giving the keys; it replaces ``keys`` and ``file``.
        backoff: how long a rejected key is set aside.
    """

    __slots__ = (
        "_aside",
        "_backoff",
        "_failed_until",
        "_file",
        "_file_checked",
        "_file_keys",
        "_file_stamp",
        "_generation",
        "_index",
        "_keys",
        "_lock",
        "_source",
        "_source_keys",
        "_static",
        "_warned",
        "provider",
        "refreshes",
        "rotations",
    )

    def __init__(
        self,
        keys: Sequence[Secret] = (),
        *,
        provider: str = "",
        file: str | None = None,
        source: KeyFunction | None = None,
        backoff: KeyBackoff | None = None,
    ) -> None:
        self.provider = provider
        self._backoff = backoff or KeyBackoff()
        self._static = list(dict.fromkeys(keys))
        self._file = file
        self._file_keys: list[Secret] = []
        self._file_stamp: tuple[int, int, int] | None = None
        self._file_checked = -float("inf")
        self._source = source
        self._source_keys: list[Secret] | None = None
        self._keys: list[Secret] = []
        self._index = 0
        self._aside: dict[tuple[Secret, str], tuple[float, int]] = {}  # until, strikes
        self._lock = trio.Lock()
        self._generation = 0
        self._failed_until = -float("inf")
        self._warned = False
        self.rotations = 0
        self.refreshes = 0
        self._rebuild()

    def __repr__(self) -> str:
        where = "function" if self._source else "file" if self._file else "configuration"
        return f"<KeyRing {self.provider!r}: {len(self._keys)} keys from the {where}>"

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def has_source(self) -> bool:
        """Whether keys come from a file or a function (so none now is not 'no key')."""
        return self._source is not None or self._file is not None

    @property
    def ready(self) -> bool:
        """Whether `pick_nowait` can answer: no key function waits to be asked first."""
        return self._source is None or self._source_keys is not None

    def label(self, key: Secret | None) -> str:
        """``key``'s place in the list (``#0``), never its value."""
        if key is None:
            return "none"
        try:
            return f"#{self._keys.index(key)}"
        except ValueError:
            return "replaced"

    # -- changing the keys ---------------------------------------------------------------------

    def replace(self, keys: Sequence[Secret] | KeyFunction) -> None:
        """Use ``keys`` (or the function giving them) from now on, instead of every current
        source. Calls in flight finish with the key they have; a removed key's set-aside
        state is dropped, a kept key's is kept."""
        if callable(keys):
            self._source = keys
            self._source_keys = None
            self._static = []
        else:
            self._source = None
            self._source_keys = None
            self._static = list(dict.fromkeys(keys))
        self._file = None
        self._file_keys = []
        self._file_stamp = None
        self._failed_until = -float("inf")
        self._generation += 1
        self._rebuild()

    def _rebuild(self) -> None:
        if self._source is not None:
            keys = list(self._source_keys or [])
        else:
            keys = list(dict.fromkeys([*self._file_keys, *self._static]))
        current = self._keys[self._index] if self._keys else None
        self._keys = keys
        self._index = keys.index(current) if current is not None and current in keys else 0
        kept = set(keys)
        self._aside = {pair: state for pair, state in self._aside.items() if pair[0] in kept}

    # -- where keys come from ------------------------------------------------------------------

    def _check_file(self, *, force: bool) -> None:
        """Read the key file again when it changed (looked at once a second, or ``force``).

        Raises:
            AuthenticationError: the file cannot be read or holds no key, and there is no
                key to go on with (otherwise the keys stay, and it is logged once).
        """
        path = self._file
        if path is None:
            return
        now = trio.current_time()
        if not force and now - self._file_checked < FILE_CHECK_INTERVAL:
            return
        self._file_checked = now
        try:
            status = os.stat(path)
            stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
            if stamp == self._file_stamp:
                return
            keys = _read_key_file(path)
        except (OSError, UnicodeError, LLMError) as exc:
            if isinstance(exc, OSError) and exc.strerror:
                why = exc.strerror
            elif isinstance(exc, LLMError):
                why = exc.message
            else:
                why = type(exc).__name__
            self._file_failed(path, why, exc)
            return
        if not keys:
            self._file_failed(path, "it holds no key", None)
            return
        if self._file_stamp is not None:
            self.refreshes += 1
            log.info("%s: API keys read again from %s (%d keys)", self.provider, path, len(keys))
        self._warned = False
        self._file_stamp = stamp
        self._file_keys = keys
        self._rebuild()

    def _file_failed(self, path: str, why: str, cause: BaseException | None) -> None:
        if not self._keys:
            raise AuthenticationError(
                f"no API key of {self.provider} could be read from its key file: {why}",
                provider=self.provider,
                details={"reason": "key_file", "file": path},
            ) from cause
        if not self._warned:
            self._warned = True
            log.warning(
                "%s: the key file %s could not be read (%s); keeping the keys there are",
                self.provider,
                path,
                why,
            )

    async def _fetch(self, *, seen: int) -> None:
        """Call the key function, once for every caller that saw generation ``seen``.

        Raises:
            AuthenticationError: it failed, took too long or gave no valid key, and there
                is no key from it to go on with (otherwise the keys stay).
        """
        source = self._source
        if source is None:
            return
        async with self._lock:
            if self._generation != seen or self._source is not source:
                return  # another caller fetched (or the keys were replaced) meanwhile
            now = trio.current_time()
            if now < self._failed_until:
                if self._source_keys:
                    return
                raise AuthenticationError(
                    f"the API key function of {self.provider} failed just now; "
                    f"it is called again in {self._failed_until - now:.3g}s",
                    provider=self.provider,
                    retry_after=self._failed_until - now,
                    details={"reason": "key_function"},
                )
            try:
                keys = await self._call(source)
            except AuthenticationError:
                self._failed_until = trio.current_time() + self._backoff.initial
                if self._source_keys:
                    return  # logged by _call: the keys stay what they were
                raise
            if self._source is not source:
                return  # replaced while it ran
            self._failed_until = -float("inf")
            if self._source_keys is not None:
                self.refreshes += 1
            self._source_keys = keys
            self._generation += 1
            self._rebuild()

    async def _call(self, source: KeyFunction) -> list[Secret]:
        """What ``source`` gives, checked.

        Raises:
            AuthenticationError: it raised, took longer than `SOURCE_TIMEOUT`, or gave no
                valid key (the message names the problem, never a value).
        """
        result: object = None
        with trio.move_on_after(SOURCE_TIMEOUT) as scope:
            try:
                result = source()
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                # Made while ``exc`` is handled: its text is scrubbed of secrets, as a cause.
                raise self._source_failed(f"raised {type(exc).__name__}") from exc
        if scope.cancelled_caught:
            raise self._source_failed(f"did not answer within {SOURCE_TIMEOUT:g}s")
        if result is None or (isinstance(result, Sequence) and not result):
            raise self._source_failed("gave no key")
        try:
            return checked_keys(result, where="keys")
        except ConfigurationError as exc:
            raise self._source_failed(f"gave an unusable result ({exc.message})") from None

    def _source_failed(self, problem: str) -> AuthenticationError:
        log.warning("%s: the API key function %s", self.provider, problem)
        return AuthenticationError(
            f"the API key function of {self.provider} {problem}",
            provider=self.provider,
            details={"reason": "key_function"},
        )

    async def refresh(self, *, seen: int | None = None) -> None:
        """Read the keys again from their file or function (after a 401). A failure keeps
        the current keys and is logged once. With ``seen``, the function is not called
        again when the keys changed since generation ``seen`` was read."""
        if self._file is not None:
            try:
                self._check_file(force=True)
            except AuthenticationError:
                pass  # no key before either: the next pick says so
        elif self._source is not None:
            try:
                await self._fetch(seen=self._generation if seen is None else seen)
            except AuthenticationError:
                pass  # no key before either: the next pick says so

    # -- choosing, rotating, setting aside -----------------------------------------------------

    async def pick(self, family: str) -> Secret | None:
        """The key to use for a model of ``family`` (None when the provider has no key).

        Raises:
            AuthenticationError: every key is set aside for ``family`` (``retry_after`` says
                for how long), or the keys' file or function gave none.
        """
        if self._file is not None:
            self._check_file(force=False)
        if self._source is not None and self._source_keys is None:
            await self._fetch(seen=self._generation)
        return self._pick(family)

    def pick_nowait(self, family: str) -> Secret | None:
        """`pick` without waiting: `trio.WouldBlock` (nothing changed) when the keys must
        first be asked of their function.

        Raises:
            trio.WouldBlock: the key source has not given keys yet.
            AuthenticationError: as `pick`.
        """
        if not self.ready:
            raise trio.WouldBlock
        if self._file is not None:
            self._check_file(force=False)
        return self._pick(family)

    def _pick(self, family: str) -> Secret | None:
        """The key for ``family`` among the keys known now (see `pick`).

        Raises:
            AuthenticationError: as `pick`.
        """
        keys = self._keys
        if not keys:
            if self.has_source:
                raise AuthenticationError(
                    f"no API key of {self.provider} is available from its key source",
                    provider=self.provider,
                    details={"reason": "no_key"},
                )
            return None
        now = trio.current_time()
        count = len(keys)
        for step in range(count):
            index = (self._index + step) % count
            state = self._aside.get((keys[index], family))
            if state is None or state[0] <= now:
                self._index = index
                return keys[index]
        raise self._all_set_aside(family, now)

    def _all_set_aside(self, family: str, now: float) -> AuthenticationError:
        waits = sorted(
            (self._aside[(key, family)][0] - now, index) for index, key in enumerate(self._keys)
        )
        wait, first = waits[0]
        until = datetime.now(UTC) + timedelta(seconds=wait)
        labels = [f"#{index}" for _, index in sorted(waits, key=lambda item: item[1])]
        which = f"API key {labels[0]}" if len(labels) == 1 else f"all {len(labels)} API keys"
        return AuthenticationError(
            f"{which} of {self.provider} {'was' if len(labels) == 1 else 'were'} rejected "
            f"(HTTP 401) for {family!r} models and {'is' if len(labels) == 1 else 'are'} set "
            f"aside for them: key #{first} is tried again in {wait:.3g}s "
            f"(at {until.strftime('%H:%M:%S UTC')})",
            provider=self.provider,
            retry_after=wait,
            details={
                "reason": "key_set_aside",
                "family": family,
                "keys": labels,
                "retry_at": until.isoformat(timespec="seconds"),
            },
        )

    def rotate(self, key: Secret | None) -> bool:
        """Move past ``key`` (after a 429); return whether another key is available."""
        if key is None or len(self._keys) < 2:
            return False
        if self._keys[self._index] == key:
            self._index = (self._index + 1) % len(self._keys)
            self.rotations += 1
        return True

    async def reject(self, key: Secret, family: str) -> Rejection:
        """Set ``key`` aside for ``family`` after a 401, read the keys again from their file
        or function, and say whether another key may be tried now."""
        label = self.label(key)
        seen = self._generation
        now = trio.current_time()
        seconds = 0.0
        until: datetime | None = None
        if key in self._keys:
            _, strikes = self._aside.get((key, family), (0.0, 0))
            strikes += 1
            seconds = self._backoff.delay(strikes)
            self._aside[(key, family)] = (now + seconds, strikes)
            until = datetime.now(UTC) + timedelta(seconds=seconds)
            self.rotations += 1
            if len(self._aside) > _KEPT_STRIKES:
                self._aside = {pair: state for pair, state in self._aside.items() if state[0] > now}
        await self.refresh(seen=seen)
        replaced = key not in self._keys
        if replaced:  # replaced meanwhile, or gone from the keys just read again
            seconds, until = 0.0, None
        now = trio.current_time()
        following: str | None = None
        count = len(self._keys)
        for step in range(count):
            index = (self._index + step) % count
            state = self._aside.get((self._keys[index], family))
            if state is None or state[0] <= now:
                following = f"#{index}"
                break
        return Rejection(
            label=label,
            family=family,
            seconds=seconds,
            until=until,
            usable=following is not None,
            next_label=following,
            replaced=replaced,
        )

    def accept(self, key: Secret | None, family: str) -> None:
        """``key`` worked for ``family``: the next rejection starts the backoff again."""
        if key is not None and self._aside:
            state = self._aside.get((key, family))
            if state is not None and state[0] <= trio.current_time():
                del self._aside[(key, family)]

    def statistics(self) -> KeyStatistics:
        now = trio.current_time()
        active = {pair for pair, state in self._aside.items() if state[0] > now}
        aside_keys = {key for key, _ in active}
        return KeyStatistics(
            keys=len(self._keys),
            usable=sum(key not in aside_keys for key in self._keys),
            rotations=self.rotations,
            set_aside=len(active),
            refreshes=self.refreshes,
        )
