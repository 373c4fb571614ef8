"""Saga specs: plain-data descriptions of saga trees, and the toy world the built sagas act on.

A spec (`StepSpec`, `ThenSpec`, `BindSpec`, `ParSpec`, ... : a `SagaSpec`) says what a saga
looks like without building it; `build_saga` builds it. The built steps act on a `World`,
which logs every action and compensation, and return distinct `Receipt`s, so a test can tell
which compensation received which step's result, and what a bind continuation saw.

This module does not need hypothesis; `fsaga.testing.strategies` generates specs with it.

>>> from fsaga.interpreter import SyncInterpreter
>>> world = World()
>>> spec = ThenSpec(StepSpec("reserve"), StepSpec("charge", compensable=False))
>>> build_saga(spec, world).run(SyncInterpreter())
Success(value=Receipt(label='charge', serial=2, seen=None))
>>> [(change, receipt.label) for change, receipt in world.log]
[('did', 'reserve'), ('did', 'charge')]
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from itertools import count
from typing import Literal, TypeAlias, final

from fsaga.context import StepContext, current_context
from fsaga.policy import Retry
from fsaga.saga import Saga, par, pure, sequence, step

__all__ = [
    "RETRY_DELAY",
    "STEP_TIMEOUT",
    "SUBTREE_TIMEOUT",
    "BindSpec",
    "ContinuationSpec",
    "MapSpec",
    "NamedSpec",
    "ParSpec",
    "PureSpec",
    "Receipt",
    "SagaSpec",
    "SequenceSpec",
    "StepSpec",
    "ThenSpec",
    "TimeoutSpec",
    "World",
    "WorldChange",
    "build_continuation",
    "build_saga",
]

RETRY_DELAY = 1.0
"""Seconds a built step waits before its second attempt; each further wait doubles (no jitter)."""

STEP_TIMEOUT = 5.0
"""Seconds each attempt of a built step with `StepSpec.timeout` may take."""

SUBTREE_TIMEOUT = 20.0
"""Seconds a `TimeoutSpec` sub-tree may take."""


# -- the world built sagas act on -------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class Receipt:
    """What a built step's action returns: a distinct value per action that ran.

    Attributes:
        label: the step's label (`StepSpec.label`).
        serial: 1 for the first action the world saw, then 2, 3, ...
        seen: the value the nearest enclosing bind continuation received (``None`` outside any).
    """

    label: str
    serial: int
    seen: object


WorldChange: TypeAlias = Literal["did", "undid"]
"""A world log entry's kind: an action ran (``did``) or a compensation ran (``undid``)."""


@final
class World:
    """A toy world that built sagas act on: a log of every action and compensation that ran.

    Attributes:
        log: in order, ``("did", receipt)`` for every action that ran and ``("undid", receipt)``
            for every compensation, with the receipt it received.

    >>> world = World()
    >>> receipt = world.act("reserve", seen=None)
    >>> world.undo(receipt)
    >>> world.log == [("did", receipt), ("undid", receipt)]
    True
    """

    __slots__ = ("_acted", "_compensable", "_serials", "_voidable", "log")

    def __init__(self) -> None:
        self.log: list[tuple[WorldChange, Receipt]] = []
        self._serials = count(1)
        self._acted: dict[str, Receipt] = {}
        self._compensable: set[str] = set()
        self._voidable: set[str] = set()

    def act(
        self,
        label: str,
        seen: object,
        *,
        key: str | None = None,
        idempotent: bool = False,
        compensable: bool = False,
        voidable: bool = False,
    ) -> Receipt:
        """Perform an action: log it and return a receipt no other action got.

        With an idempotency `key`, the receipt is remembered under it (see `void` and
        `left_done`); an `idempotent` action that already ran under `key` only returns that
        run's receipt. `compensable` and `voidable` say how the step can undo it: with a
        compensation, with an unknown-outcome compensation.
        """
        if idempotent and key is not None and key in self._acted:
            return self._acted[key]
        receipt = Receipt(label, next(self._serials), seen)
        self.log.append(("did", receipt))
        if key is not None:
            self._acted[key] = receipt
            if compensable:
                self._compensable.add(key)
            if voidable:
                self._voidable.add(key)
        return receipt

    def left_done(self, unknown: Collection[str] = ()) -> dict[str, Receipt]:
        """Per idempotency key, what an action did that nothing undid though its step could
        have: it has a compensation, or its outcome is `unknown` (a collection of keys) and it
        has an unknown-outcome compensation. After a failed run, exactly what its outcome must
        report as not undone."""
        undone = {id(receipt) for change, receipt in self.log if change == "undid"}
        return {
            key: receipt
            for key, receipt in self._acted.items()
            if id(receipt) not in undone
            and (key in self._compensable or (key in self._voidable and key in unknown))
        }

    def void(self, key: str) -> None:
        """Undo whatever an action did under idempotency `key`, if it did anything (an
        unknown-outcome compensation)."""
        receipt = self._acted.get(key)
        if receipt is not None:
            self.undo(receipt)

    def undo(self, receipt: Receipt) -> None:
        """Perform a compensation: log the receipt it received."""
        self.log.append(("undid", receipt))


# -- saga specs ---------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class StepSpec:
    """A step leaf.

    Attributes:
        label: the step's explicit name when `explicit`, else its action's ``__name__`` (so it
            is numbered when repeated in a scope: ``a``, ``a#2``).
        compensable: whether the step has a compensation.
        attempts: the action's attempts (``Retry(attempts)``; 1: no retry policy).
        compensation_attempts: the compensation's attempts (more than 1 needs `compensable`).
        explicit: whether `label` is given as ``name=``.
        timeout: whether each attempt has a `STEP_TIMEOUT` deadline.
        idempotent: whether the step is declared idempotent (its action then returns the same
            receipt when run again under the same idempotency key).
        on_unknown: whether the step has an unknown-outcome compensation (it voids, in the
            world, what the action did under the step's idempotency key).

    Retries wait `RETRY_DELAY` seconds before the second attempt, doubling after, without jitter.
    """

    label: str
    compensable: bool = True
    attempts: int = 1
    compensation_attempts: int = 1
    explicit: bool = False
    timeout: bool = False
    idempotent: bool = False
    on_unknown: bool = False

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.compensation_attempts < 1:
            raise ValueError(f"StepSpec {self.label!r}: attempts must be at least 1")
        if self.compensation_attempts > 1 and not self.compensable:
            raise ValueError(f"StepSpec {self.label!r}: compensation attempts without compensation")


@final
@dataclass(frozen=True, slots=True)
class PureSpec:
    """`pure(value)`."""

    value: int


@final
@dataclass(frozen=True, slots=True)
class ThenSpec:
    """`first.then(second)`."""

    first: SagaSpec
    second: SagaSpec


@final
@dataclass(frozen=True, slots=True)
class SequenceSpec:
    """`sequence(items)`: the result is the tuple of the items' results."""

    items: tuple[SagaSpec, ...]


@final
@dataclass(frozen=True, slots=True)
class ContinuationSpec:
    """A bind continuation that depends on the value it receives.

    It picks `on_even` or `on_odd` by the value (see `choose`), and the steps it builds record
    the value in their receipts (`Receipt.seen`).
    """

    on_even: SagaSpec
    on_odd: SagaSpec

    def choose(self, value: object) -> SagaSpec:
        """The spec this continuation builds for `value`."""
        return self.on_even if _weight(value) % 2 == 0 else self.on_odd


@final
@dataclass(frozen=True, slots=True)
class BindSpec:
    """`source.bind(continuation)`."""

    source: SagaSpec
    continuation: ContinuationSpec


@final
@dataclass(frozen=True, slots=True)
class MapSpec:
    """`source.map(...)`: the value becomes the pair ``(tag, value)``."""

    source: SagaSpec
    tag: str


@final
@dataclass(frozen=True, slots=True)
class NamedSpec:
    """`inner.named(name)`: a sub-saga whose steps' paths start with ``name/``."""

    name: str
    inner: SagaSpec


@final
@dataclass(frozen=True, slots=True)
class ParSpec:
    """`par(*branches)`: the result is the tuple of the branches' results."""

    branches: tuple[SagaSpec, ...]


@final
@dataclass(frozen=True, slots=True)
class TimeoutSpec:
    """`inner.timeout(SUBTREE_TIMEOUT)`: a sub-tree with a deadline."""

    inner: SagaSpec


SagaSpec: TypeAlias = (
    StepSpec
    | PureSpec
    | ThenSpec
    | SequenceSpec
    | BindSpec
    | MapSpec
    | NamedSpec
    | ParSpec
    | TimeoutSpec
)
"""A plain-data description of a saga tree; `build_saga` makes the saga."""


def _weight(value: object) -> int:
    """A number derived from a built saga's value, so continuations can depend on it."""
    if isinstance(value, Receipt):
        return value.serial
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return len(value)
    if isinstance(value, tuple):
        return sum(_weight(item) for item in value)
    return 0


# -- building sagas -----------------------------------------------------------------------------


def build_saga(spec: SagaSpec, world: World, *, seen: object = None) -> Saga[object]:
    """The saga `spec` describes; its steps act on `world`.

    Args:
        spec: what to build.
        world: where the actions and compensations leave their trace.
        seen: what the steps' receipts record as seen (the value a continuation received).

    >>> from fsaga.interpreter import SyncInterpreter
    >>> choice = ContinuationSpec(PureSpec(0), StepSpec("odd"))
    >>> build_saga(BindSpec(PureSpec(3), choice), World()).run(SyncInterpreter())
    Success(value=Receipt(label='odd', serial=1, seen=3))
    """
    match spec:
        case StepSpec():
            return _build_step(spec, world, seen)
        case PureSpec(value=value):
            return pure(value)
        case ThenSpec(first=first, second=second):
            return build_saga(first, world, seen=seen).then(build_saga(second, world, seen=seen))
        case SequenceSpec(items=items):
            return sequence(build_saga(item, world, seen=seen) for item in items)
        case BindSpec(source=source, continuation=continuation):
            return build_saga(source, world, seen=seen).bind(
                build_continuation(continuation, world)
            )
        case MapSpec(source=source, tag=tag):
            return build_saga(source, world, seen=seen).map(partial(_tagged, tag))
        case NamedSpec(name=name, inner=inner):
            return build_saga(inner, world, seen=seen).named(name)
        case ParSpec(branches=branches):
            return par(*(build_saga(branch, world, seen=seen) for branch in branches))
        case TimeoutSpec(inner=inner):
            return build_saga(inner, world, seen=seen).timeout(SUBTREE_TIMEOUT)


def build_continuation(
    continuation: ContinuationSpec, world: World
) -> Callable[[object], Saga[object]]:
    """The bind continuation `continuation` describes: value -> the saga it chooses.

    >>> from fsaga.interpreter import SyncInterpreter
    >>> then_step = build_continuation(ContinuationSpec(StepSpec("even"), PureSpec(1)), World())
    >>> then_step(2).run(SyncInterpreter())
    Success(value=Receipt(label='even', serial=1, seen=2))
    """
    return partial(_continue, continuation, world)


def _continue(continuation: ContinuationSpec, world: World, value: object) -> Saga[object]:
    return build_saga(continuation.choose(value), world, seen=value)


def _tagged(tag: str, value: object) -> tuple[str, object]:
    return (tag, value)


def _build_step(spec: StepSpec, world: World, seen: object) -> Saga[object]:
    def act() -> Receipt:
        key = current_context().idempotency_key
        return world.act(
            spec.label,
            seen,
            key=key,
            idempotent=spec.idempotent,
            compensable=spec.compensable,
            voidable=spec.on_unknown,
        )

    act.__name__ = spec.label
    retry = _retry(spec.attempts)
    undoable = spec.compensable or spec.on_unknown
    return step(
        act,
        world.undo if spec.compensable else None,
        name=spec.label if spec.explicit else None,
        retry=retry,
        compensation_retry=_retry(spec.compensation_attempts) if undoable else None,
        timeout=STEP_TIMEOUT if spec.timeout else None,
        idempotent=spec.idempotent,
        on_unknown=_void_in(world) if spec.on_unknown else None,
    )


def _void_in(world: World) -> Callable[[StepContext], None]:
    def void(context: StepContext) -> None:
        world.void(context.idempotency_key)

    return void


def _retry(attempts: int) -> Retry | None:
    if attempts == 1:
        return None
    return Retry(attempts, delay=RETRY_DELAY, backoff=2.0, max_delay=1e6, jitter=0.0)
