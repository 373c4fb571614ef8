"""A saga's static plan: what it will do, read off its tree without running anything.

`plan_of` walks a `fsaga.Saga` into a small tree of plain values (`Plan`): steps with their
options, `then` chains as sequences, `par` branches, named sub-sagas, sub-tree deadlines, and a
`bind` continuation as an opaque `PlanBind`, since the saga it returns is only known once the run
reaches it. `map` functions perform nothing and are left out; `zip`, `sequence` and `traverse`
show as the sequences they run. `plan_as_text` draws the plan as an indented tree;
`fsaga.pictures.plan_as_mermaid` as a Mermaid flowchart.

>>> from fsaga import Retry, par, step
>>> def reserve() -> str: return "R-1"
>>> def release(reservation: str) -> None: pass
>>> order = step(reserve, release, retry=Retry(3)).then(
...     par(step(lambda: 1, name="charge", timeout=2.0), step(lambda: 2, name="email"))
... )
>>> print(plan_as_text(order))
saga
├── reserve  (undo: release; retry: 3 attempts, 0.1s then x2)
└── par, 2 branches
    ├── charge  (no undo; attempt timeout 2s)
    └── email  (no undo)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias, final

from fsaga.pictures._words import name_of, seconds
from fsaga.policy import Retry
from fsaga.saga import (
    BindContinuation,
    BindNode,
    MapContinuation,
    NamedNode,
    ParNode,
    PureNode,
    Saga,
    StepNode,
    TimeoutNode,
    known_continuation,
)

__all__ = [
    "Plan",
    "PlanBind",
    "PlanParallel",
    "PlanSequence",
    "PlanStep",
    "PlanSubSaga",
    "PlanTimeout",
    "PlanValue",
    "describe_bind",
    "describe_retry",
    "describe_step",
    "keeps_its_name",
    "plan_as_text",
    "plan_of",
]


@final
@dataclass(frozen=True, slots=True)
class PlanStep:
    """A step: its name and what it declares.

    Attributes:
        name: the step's label (its explicit name, or the one derived from its action).
        explicit: whether the name was given with ``name=``.
        compensation: the compensation's name, ``None`` for a step with nothing to undo.
        timeout: seconds each attempt may take, if limited.
        retry: how the action is retried.
        compensation_retry: how the compensation is retried.
        compensation_timeout: seconds each attempt of the compensation may take, if limited.
        idempotent: whether the action may run again with the same idempotency key.
        on_unknown: the unknown-outcome compensation's name, if the step has one.
    """

    name: str
    explicit: bool = False
    compensation: str | None = None
    timeout: float | None = None
    retry: Retry | None = None
    compensation_retry: Retry | None = None
    compensation_timeout: float | None = None
    idempotent: bool = False
    on_unknown: str | None = None


@final
@dataclass(frozen=True, slots=True)
class PlanSequence:
    """Parts that run one after another (a `then` chain, `zip`, `sequence`, `traverse`)."""

    parts: tuple[Plan, ...]


@final
@dataclass(frozen=True, slots=True)
class PlanParallel:
    """The branches of a `par`, in argument order."""

    branches: tuple[Plan, ...]


@final
@dataclass(frozen=True, slots=True)
class PlanSubSaga:
    """A named sub-saga: one unit to its parent, the scope of its steps' paths."""

    name: str
    inner: Plan


@final
@dataclass(frozen=True, slots=True)
class PlanTimeout:
    """A sub-tree with a deadline, `seconds` after it starts (`Saga.timeout`)."""

    seconds: float
    inner: Plan


@final
@dataclass(frozen=True, slots=True)
class PlanBind:
    """A `bind` continuation: what runs next is decided at run time, from the result so far.

    `function` is the continuation's name (``"lambda"`` for a lambda).
    """

    function: str


@final
@dataclass(frozen=True, slots=True)
class PlanValue:
    """A part that performs nothing (`pure`): a value, no step."""


Plan: TypeAlias = (
    PlanStep | PlanSequence | PlanParallel | PlanSubSaga | PlanTimeout | PlanBind | PlanValue
)
"""A saga's plan: one of the node kinds above."""


def plan_of(saga: Saga[Any]) -> Plan:
    """The plan of `saga`: its tree as plain values. Nothing runs, no continuation is called.

    A `then` chain of any length becomes one `PlanSequence`, without recursion.

    >>> from fsaga import pure, step
    >>> plan_of(step(lambda: 1, name="a").then(pure(2)).map(str))
    PlanStep(name='a', explicit=True, compensation=None, timeout=None, retry=None, \
compensation_retry=None, compensation_timeout=None, idempotent=False, on_unknown=None)
    >>> plan_of(pure(1).bind(lambda n: pure(n)))
    PlanBind(function='lambda')

    Raises:
        TypeError: `saga` is not a `fsaga.Saga`.
    """
    if not isinstance(saga, Saga):
        raise TypeError(f"plan_of() needs a Saga, got {saga!r}")
    parts = [part for part in _chain(saga) if not isinstance(part, PlanValue)]
    if not parts:
        return PlanValue()
    if len(parts) == 1:
        return parts[0]
    return PlanSequence(tuple(parts))


def _chain(saga: Saga[Any]) -> Iterator[Plan]:
    """The parts `saga` runs one after another, flattening `then` chains with a stack."""
    pending: list[Saga[Any] | Plan] = [saga]
    while pending:
        item = pending.pop()
        match item:
            case BindNode(source=source, continuation=continuation):
                match continuation:
                    case Saga():
                        pending += [continuation, source]
                    case MapContinuation():
                        pending.append(source)
                    case BindContinuation(function=function):
                        known = known_continuation(continuation)
                        after = known if known is not None else PlanBind(name_of(function))
                        pending += [after, source]
            case StepNode():
                yield _step(item)
            case PureNode():
                yield PlanValue()
            case ParNode(branches=branches):
                yield PlanParallel(tuple(plan_of(branch) for branch in branches))
            case NamedNode(name=name, inner=inner):
                yield PlanSubSaga(name, plan_of(inner))
            case TimeoutNode(seconds=seconds, inner=inner):
                yield PlanTimeout(seconds, plan_of(inner))
            case Saga():  # pragma: no cover - the node kinds above are all there are
                raise TypeError(f"plan_of(): unknown saga node {item!r}")
            case _:
                yield item  # a plan already made (a bind's opaque box)


def _step(node: StepNode[Any]) -> PlanStep:
    return PlanStep(
        name=node.name,
        explicit=node.explicit,
        compensation=None if node.compensate is None else name_of(node.compensate),
        timeout=node.attempt_timeout,
        retry=node.retry,
        compensation_retry=node.compensation_retry,
        compensation_timeout=node.compensation_timeout,
        idempotent=node.idempotent,
        on_unknown=None if node.on_unknown is None else name_of(node.on_unknown),
    )


def keeps_its_name(branch: Plan) -> bool:
    """Whether a `par` branch keeps its name in its steps' paths (a named step or sub-saga,
    perhaps under deadlines), rather than being scoped by its position (``#1/...``).

    >>> keeps_its_name(PlanStep("charge", explicit=True)), keeps_its_name(PlanStep("charge"))
    (True, False)
    """
    while isinstance(branch, PlanTimeout):
        branch = branch.inner
    return isinstance(branch, PlanSubSaga) or (isinstance(branch, PlanStep) and branch.explicit)


def describe_retry(policy: Retry) -> str:
    """A retry policy in a few words: attempts, first wait, growth.

    >>> describe_retry(Retry(4, delay=0.5, backoff=2.0))
    '4 attempts, 0.5s then x2'
    >>> describe_retry(Retry(2, delay=1.0, backoff=1.0))
    '2 attempts, 1s apart'
    >>> describe_retry(Retry(1))
    '1 attempt'
    """
    if policy.attempts == 1:
        return "1 attempt"
    waits = (
        f"{seconds(policy.delay)} apart"
        if policy.backoff == 1
        else f"{seconds(policy.delay)} then x{policy.backoff:g}"
    )
    return f"{policy.attempts} attempts, {waits}"


def describe_step(step: PlanStep) -> list[str]:
    """What a step declares, one short phrase each: its undo, retries, timeouts, unknowns.

    >>> describe_step(PlanStep("charge", compensation="refund", timeout=2.0, idempotent=True))
    ['undo: refund', 'attempt timeout 2s', 'idempotent']
    """
    phrases = ["no undo" if step.compensation is None else f"undo: {step.compensation}"]
    if step.retry is not None:
        phrases.append(f"retry: {describe_retry(step.retry)}")
    if step.timeout is not None:
        phrases.append(f"attempt timeout {seconds(step.timeout)}")
    if step.idempotent:
        phrases.append("idempotent")
    if step.on_unknown is not None:
        phrases.append(f"on unknown: {step.on_unknown}")
    if step.compensation_retry is not None:
        phrases.append(f"undo retry: {describe_retry(step.compensation_retry)}")
    if step.compensation_timeout is not None:
        phrases.append(f"undo timeout {seconds(step.compensation_timeout)}")
    return phrases


def describe_bind(bind: PlanBind) -> str:
    """An opaque bind box's label."""
    return f"bind {bind.function}: the rest is decided at run time"


def plan_as_text(saga: Saga[Any] | Plan) -> str:
    """A saga's plan (or a plan) as an indented tree, one line per part.

    Steps show their options; ``par`` its branches; a named sub-saga and a deadline the parts
    inside them; a ``bind`` continuation one opaque line, since what it runs is only known at
    run time. A long chain draws without recursion.

    >>> from fsaga import pure, step
    >>> print(plan_as_text(step(lambda: 1, name="a").bind(lambda n: pure(n)).timeout(5)))
    saga
    └── timeout 5s
        ├── a  (no undo)
        └── bind lambda: the rest is decided at run time
    """
    plan = plan_of(saga) if isinstance(saga, Saga) else saga
    lines = ["saga"]
    # (part, prefix of its own line, prefix of its children's lines), walked with a stack.
    pending: list[tuple[_Drawn, str, str]] = []
    _push_children(pending, list(plan.parts) if isinstance(plan, PlanSequence) else [plan], "")
    while pending:
        part, lead, indent = pending.pop()
        lines.append(lead + _line(part))
        _push_children(pending, _children(part), indent)
    return "\n".join(lines)


@final
@dataclass(frozen=True, slots=True)
class _Branch:
    """A `par` branch that is not a single step or named sub-saga: drawn under its position."""

    index: int
    inner: Plan


_Drawn: TypeAlias = Plan | _Branch


def _push_children(
    pending: list[tuple[_Drawn, str, str]], children: list[_Drawn], indent: str
) -> None:
    for index in reversed(range(len(children))):
        last = index == len(children) - 1
        lead = indent + ("└── " if last else "├── ")
        pending.append((children[index], lead, indent + ("    " if last else "│   ")))


def _children(part: _Drawn) -> list[_Drawn]:
    """The parts drawn under `part`: a sequence's parts, a par's branches, what a sub-saga,
    a deadline or a branch holds."""
    match part:
        case PlanSequence(parts=parts):
            return list(parts)
        case PlanParallel(branches=branches):
            return [
                branch if keeps_its_name(branch) else _Branch(index, branch)
                for index, branch in enumerate(branches)
            ]
        case PlanSubSaga(inner=inner) | PlanTimeout(inner=inner) | _Branch(inner=inner):
            return _children(inner) if isinstance(inner, PlanSequence) else [inner]
        case PlanStep() | PlanBind() | PlanValue():
            return []


def _line(part: _Drawn) -> str:
    match part:
        case PlanStep(name=name):
            return f"{name}  ({'; '.join(describe_step(part))})"
        case PlanSequence():
            return "sequence"
        case PlanParallel(branches=branches):
            return f"par, {len(branches)} branch{'' if len(branches) == 1 else 'es'}"
        case PlanSubSaga(name=name):
            return f"sub-saga {name}"
        case _Branch(index=index):
            return f"branch {index}"
        case PlanTimeout(seconds=limit):
            return f"timeout {seconds(limit)}"
        case PlanBind():
            return describe_bind(part)
        case PlanValue():
            return "value (nothing to run)"
