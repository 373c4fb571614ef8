"""What the engine compiles a `then` chain into: stretches of plain steps, run in one loop.

Private to the engine. A saga is immutable, so the first run that meets a `then` chain flattens
it once (iteratively: a chain a million steps long is fine) and caches the result on the chain's
`BindNode`. Consecutive plain steps (no timeout of their own, nothing async to undo them) become
one `Stretch`: the engine hands the whole stretch to its driver as one call, the driver calls the
actions in a tight loop, and the engine makes paths, contexts and undo-log records only when
someone looks (a failure, `current_context()`, another step of the same scope). It is one of
the engine's instructions, not a second engine: the engine decides when a stretch may run
(nothing else in flight, no deadline, nobody listening to events), and every step that does
anything but return a plain value is handed back to the general path, which decides what
follows exactly as if the steps had run one at a time. A differential property
(tests/test_stretches.py) holds the two paths to the same outcomes and effects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from fsaga.saga import BindNode, Saga, StepNode

if TYPE_CHECKING:
    from fsaga.interpreter._fibers import Fiber, Scope

__all__ = ["Stretch", "StretchAt", "StretchRun", "plan_of"]


@final
class Stretch:
    """Plain steps joined by `then`, in order; no explicit name appears twice in one.

    `async_undo`: a step of it has an ``async`` compensation, which a sync driver must refuse
    before the step's action runs (the general path does).
    """

    __slots__ = ("actions", "all_compensable", "async_undo", "nodes", "undo_timeouts")

    def __init__(self, nodes: tuple[StepNode[Any], ...]) -> None:
        self.nodes = nodes
        self.actions: tuple[Callable[[], Any], ...] = tuple(node.action for node in nodes)
        self.async_undo = any(node.options.async_undo for node in nodes)
        # Whether every step has a compensation; whether one has a timeout of its own.
        self.all_compensable = all(node.compensate is not None for node in nodes)
        self.undo_timeouts = any(node.compensation_timeout is not None for node in nodes)


@final
class StretchAt:
    """A frame on a fiber's stack: `stretch`, from its step `start` on."""

    __slots__ = ("start", "stretch")

    def __init__(self, stretch: Stretch, start: int) -> None:
        self.stretch = stretch
        self.start = start


@final
class StretchRun:
    """One run of (the rest of) a stretch: what its driver filled in, and the steps' counts.

    `results` holds the result of each step that completed, in order (the driver appends them);
    the step at index ``len(results)`` is the one the driver reports if it stops early. Steps are
    counted into their scope lazily (`count_in`, `count`), only when a path is needed.
    """

    __slots__ = (
        "actions",
        "at",
        "counted",
        "fiber",
        "nodes",
        "results",
        "scope",
        "step_counts",
        "undo_order",
        "undone",
    )

    def __init__(self, at: StretchAt, scope: Scope, fiber: Fiber) -> None:
        self.at = at
        stretch = at.stretch
        start = at.start
        if start:
            self.nodes = stretch.nodes[start:]
            self.actions = stretch.actions[start:]
        else:
            self.nodes = stretch.nodes
            self.actions = stretch.actions
        self.scope = scope
        self.fiber = fiber
        self.results: list[object] = []
        # How many steps are counted into the scope; each one's count (its path's #n) is in
        # `step_counts`, made with the first.
        self.counted = 0

    step_counts: list[int]
    undo_order: list[int]
    """Its undo, once it runs as one call: the indexes of the steps to compensate, newest
    first (set by the engine then, with `undone`)."""
    undone: list[object]
    """The results of the compensations of its undo that returned, in order."""

    def running(self, *, undoing: bool) -> int:
        """The index of the step whose action (or, `undoing`, compensation) runs now: the
        last one's, once every one ran."""
        if undoing:
            order = self.undo_order
            return order[min(len(self.undone), len(order) - 1)]
        return min(len(self.results), len(self.nodes) - 1)

    def compensable(self) -> list[int]:
        """The indexes of the completed steps that have a compensation, newest first."""
        newest_first = range(len(self.results) - 1, -1, -1)
        if self.at.stretch.all_compensable:
            return list(newest_first)
        nodes = self.nodes
        return [index for index in newest_first if nodes[index].compensate is not None]

    def paths_of(self, indexes: list[int]) -> list[str]:
        """The paths of the completed steps at `indexes`."""
        if len(self.results) > self.counted:
            self.count_in(self.scope.settle())
        nodes = self.nodes
        counts = self.step_counts
        prefix = self.scope.prefix
        paths: list[str] = []
        for index in indexes:
            count = counts[index]
            label = nodes[index].name if count == 1 else f"{nodes[index].name}#{count}"
            paths.append(f"{prefix}/{label}" if prefix else label)
        return paths

    def count_in(self, counts: dict[str, int], upto: int | None = None) -> None:
        """Count this run's steps before `upto` (default: every step that completed) into
        `counts`, the scope's."""
        end = len(self.results) if upto is None else upto
        nodes = self.nodes
        if not self.counted:
            self.step_counts = []
        step_counts = self.step_counts
        for index in range(self.counted, end):
            label = nodes[index].name
            count = counts.get(label, 0) + 1
            counts[label] = count
            step_counts.append(count)
        if end > self.counted:
            self.counted = end

    def count(self, index: int) -> int:
        """The count of step `index` (it is running, or has), counting it in if need be."""
        if index >= self.counted:
            self.count_in(self.scope.settle(), index + 1)
        return self.step_counts[index]

    def path_of(self, index: int) -> str:
        """The path of step `index`."""
        label = self.nodes[index].name
        count = self.count(index)
        return self.scope.join(label if count == 1 else f"{label}#{count}")


def is_plain(node: Saga[Any]) -> bool:
    """Whether `node` is a step a stretch may hold: one with no timeout of its own (a driver
    running a stretch enforces no deadline)."""
    return type(node) is StepNode and node.attempt_timeout is None


def plan_of(chain: BindNode[Any]) -> tuple[Saga[Any] | StretchAt, ...]:
    """What `chain` (a `then`) runs, in order: its sagas, with plain steps made stretches."""
    plan = chain._plan
    if plan is None:
        plan = _compile(chain)
        object.__setattr__(chain, "_plan", plan)
    assert isinstance(plan, tuple)
    return plan


def _compile(chain: BindNode[Any]) -> tuple[Saga[Any] | StretchAt, ...]:
    flat: list[Saga[Any]] = []
    todo: list[Saga[Any]] = [chain]
    while todo:
        node = todo.pop()
        if type(node) is BindNode and isinstance(node.continuation, Saga):
            todo.append(node.continuation)
            todo.append(node.source)
        else:
            flat.append(node)
    plan: list[Saga[Any] | StretchAt] = []
    run: list[StepNode[Any]] = []
    # The labels in `run`, and whether any of their steps is explicitly named.
    seen: dict[str, bool] = {}

    def close() -> None:
        if len(run) > 1:
            plan.append(StretchAt(Stretch(tuple(run)), 0))
        else:
            plan.extend(run)
        run.clear()
        seen.clear()

    for node in flat:
        if not is_plain(node):
            close()
            plan.append(node)
            continue
        assert isinstance(node, StepNode)
        label = node.name
        earlier = seen.get(label)
        if earlier is not None and (earlier or node.explicit):
            # A name claimed twice, explicitly: the general path raises at the second claim.
            close()
        seen[label] = bool(earlier) or node.explicit
        run.append(node)
    close()
    return tuple(plan)
