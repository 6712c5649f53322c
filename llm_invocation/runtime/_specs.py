"""Specifications of supervised children and supervisors."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, final

from ._actor import Actor
from ._errors import UsageError

__all__ = ["Backoff", "ChildKind", "ChildSpec", "RestartType", "Strategy", "SupervisorSpec"]

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]
ChildKind = Literal["actor", "supervisor", "service"]

_STRATEGIES: tuple[Strategy, ...] = ("one_for_one", "one_for_all", "rest_for_one")
_RESTARTS: tuple[RestartType, ...] = ("permanent", "transient", "temporary")


@final
@dataclass(frozen=True, kw_only=True, slots=True)
class Backoff:
    """Delay before a restart: ``initial * multiplier**n`` capped at ``maximum``.

    ``n`` counts the restarts already made in the supervisor's intensity window. With
    ``jitter`` (a fraction in [0, 1]) the delay is drawn uniformly from
    ``[delay * (1 - jitter), delay]``; 1.0 is "full jitter".
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise UsageError("backoff delays must be >= 0")
        if self.multiplier < 1:
            raise UsageError("backoff multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise UsageError("backoff jitter must be within [0, 1]")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before restart number ``attempt`` (0-based) in the current window."""
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        if self.jitter == 0 or base == 0:
            return base
        draw = (rng or random).random()
        return base * (1 - self.jitter * draw)


ServiceFn = Callable[..., Awaitable[object]]
"""A service child: ``async def serve(*, task_status=trio.TASK_STATUS_IGNORED) -> None``."""


@final
@dataclass(frozen=True, kw_only=True, slots=True)
class ChildSpec:
    """How to start, restart and stop one child of a supervisor.

    Build one with `ChildSpec.actor`, `ChildSpec.supervisor` or `ChildSpec.service`.

    Attributes:
        name: unique among its siblings (and runtime-wide for actors: refs look it up).
        kind: "actor", "supervisor" or "service".
        restart: "permanent" (always restarted), "transient" (restarted only after a crash)
            or "temporary" (never restarted).
        shutdown: grace in seconds for a graceful stop before the child is cancelled.
        init_timeout: seconds the child may take to start (its lifespan to open).
        mailbox: capacity of an actor's mailbox (``math.inf`` for unbounded).
    """

    name: str
    kind: ChildKind
    factory: Callable[[], Actor[Any]] | None = None
    supervisor_spec: SupervisorSpec | None = None
    service_fn: ServiceFn | None = None
    restart: RestartType = "permanent"
    shutdown: float = 5.0
    init_timeout: float = 10.0
    mailbox: float = 1024

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise UsageError(f"child name must be non-empty without '/': {self.name!r}")
        if self.restart not in _RESTARTS:
            raise UsageError(f"restart must be one of {_RESTARTS}, got {self.restart!r}")
        if self.shutdown < 0 or self.init_timeout <= 0:
            raise UsageError("shutdown must be >= 0 and init_timeout > 0")
        if self.mailbox < 1:
            raise UsageError("mailbox capacity must be >= 1")
        given = {
            "actor": self.factory,
            "supervisor": self.supervisor_spec,
            "service": self.service_fn,
        }
        if self.kind not in given or given[self.kind] is None:
            raise UsageError(f"child {self.name!r} of kind {self.kind!r} needs its {self.kind}")

    @classmethod
    def actor(
        cls,
        name: str,
        factory: Callable[[], Actor[Any]],
        *,
        restart: RestartType = "permanent",
        shutdown: float = 5.0,
        init_timeout: float = 10.0,
        mailbox: float = 1024,
    ) -> ChildSpec:
        """An actor child; ``factory`` makes a fresh instance for every incarnation."""
        return cls(
            name=name,
            kind="actor",
            factory=factory,
            restart=restart,
            shutdown=shutdown,
            init_timeout=init_timeout,
            mailbox=mailbox,
        )

    @classmethod
    def supervisor(
        cls,
        spec: SupervisorSpec,
        *,
        restart: RestartType = "permanent",
        shutdown: float = math.inf,
        init_timeout: float = 60.0,
    ) -> ChildSpec:
        """A nested supervisor; its children stop with their own grace periods."""
        return cls(
            name=spec.name,
            kind="supervisor",
            supervisor_spec=spec,
            restart=restart,
            shutdown=shutdown,
            init_timeout=init_timeout,
        )

    @classmethod
    def service(
        cls,
        name: str,
        fn: ServiceFn,
        *,
        restart: RestartType = "permanent",
        shutdown: float = 5.0,
        init_timeout: float = 10.0,
    ) -> ChildSpec:
        """A plain task: ``await fn(task_status=...)``, stopped by cancellation."""
        return cls(
            name=name,
            kind="service",
            service_fn=fn,
            restart=restart,
            shutdown=shutdown,
            init_timeout=init_timeout,
        )


@final
@dataclass(frozen=True, kw_only=True, slots=True)
class SupervisorSpec:
    """A supervisor: its children (started in order), strategy and restart intensity.

    Attributes:
        strategy: on a child's exit, restart just it ("one_for_one"), all children
            ("one_for_all") or it and those started after it ("rest_for_one").
        max_restarts, within: more than ``max_restarts`` restarts within ``within`` seconds
            make the supervisor stop its children and fail with `MaxRestartsExceeded`, which
            its own parent handles like any child crash (escalation).
        backoff: optional delay before each restart.
    """

    name: str = "root"
    children: Sequence[ChildSpec] = field(default_factory=tuple[ChildSpec, ...])
    strategy: Strategy = "one_for_one"
    max_restarts: int = 3
    within: float = 5.0
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise UsageError(f"supervisor name must be non-empty without '/': {self.name!r}")
        if self.strategy not in _STRATEGIES:
            raise UsageError(f"strategy must be one of {_STRATEGIES}, got {self.strategy!r}")
        if self.max_restarts < 0 or self.within <= 0:
            raise UsageError("max_restarts must be >= 0 and within > 0")
        names = [child.name for child in self.children]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"duplicate child names in {self.name!r}: {duplicates}")
