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

__all__ = ["Straight", "Stretch", "StretchAt", "StretchRun", "plan_of"]


@final
class Stretch:
    """Plain steps joined by `then`, in order; no explicit name appears twice in one.

    `async_undo`: a step of it has an ``async`` compensation, which a sync driver must refuse
    before the step's action runs (the general path does).
    """

    __slots__ = (
        "_local",
        "actions",
        "all_compensable",
        "async_undo",
        "nodes",
        "undo_timeouts",
    )

    def __init__(self, nodes: tuple[StepNode[Any], ...]) -> None:
        self.nodes = nodes
        self.actions: tuple[Callable[[], Any], ...] = tuple(node.action for node in nodes)
        self.async_undo = any(node.options.async_undo for node in nodes)
        # Whether every step has a compensation; whether one has a timeout of its own.
        self.all_compensable = all(node.compensate is not None for node in nodes)
        self.undo_timeouts = any(node.compensation_timeout is not None for node in nodes)
        self._local: _Local | None = None

    def local(self) -> _Local:
        """Each step's name, count and label as if the stretch ran first in a scope of its own:
        what its paths are whenever its scope had counted nothing before it (most runs), so
        they need no counting then (`StretchRun.count_in`). Made on first use, once."""
        local = self._local
        if local is None:
            names = tuple(node.name for node in self.nodes)
            seen: dict[str, int] = {}
            counts: list[int] = []
            for name in names:
                seen[name] = count = seen.get(name, 0) + 1
                counts.append(count)
            labels = tuple(
                name if count == 1 else f"{name}#{count}"
                for name, count in zip(names, counts, strict=True)
            )
            local = self._local = _Local(names, tuple(counts), labels)
        return local


@final
class _Local:
    """A stretch's steps' names, counts and labels within the stretch alone."""

    __slots__ = ("counts", "labels", "names")

    def __init__(
        self, names: tuple[str, ...], counts: tuple[int, ...], labels: tuple[str, ...]
    ) -> None:
        self.names = names
        self.counts = counts
        self.labels = labels


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
        "local",
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
        # Whether its steps were counted into a scope that had counted nothing before: their
        # counts and labels are then the stretch's own (`Stretch.labels`).
        self.local = False

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
        scope = self.scope
        if len(self.results) > self.counted:
            if (
                not self.counted
                and not self.at.start
                and not scope.counts
                and scope.pending is None
            ):
                # The first to run in its scope, and stopped by a failure that ended its line
                # of control (the undo reads its paths): its labels are the stretch's own, and
                # nothing counts in its scope after it.
                self.local = True
            else:
                self.count_in(scope.settle())
        prefix = scope.prefix
        if self.local:
            labels = self.at.stretch.local().labels
            if prefix:
                return [f"{prefix}/{labels[index]}" for index in indexes]
            return [labels[index] for index in indexes]
        nodes = self.nodes
        counts = self.step_counts
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
        if not self.counted:
            if not counts and not self.at.start:
                # The first to count in its scope: its counts are the stretch's own.
                if end:
                    local = self.at.stretch.local()
                    local_counts = local.counts[:end]
                    counts.update(zip(local.names[:end], local_counts, strict=True))
                    self.step_counts = list(local_counts)
                    self.counted = end
                    self.local = True
                return
            self.step_counts = []
        nodes = self.nodes
        step_counts = self.step_counts
        local_counts = self.at.stretch.local().counts if self.local else ()
        for index in range(self.counted, end):
            label = nodes[index].name
            count = counts.get(label, 0) + 1
            counts[label] = count
            step_counts.append(count)
            if self.local and count != local_counts[index]:
                self.local = False  # counted on after other steps of its scope: paths differ
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


@final
class Straight:
    """A straight run's state while its driver runs it before any engine is made (see
    `Engine.straight`): the stretch, what its steps and compensations returned, and what
    `current_context()` reads meanwhile (it stands for both the run and the call)."""

    __slots__ = ("_saga_id", "given_id", "results", "stretch", "undo_order", "undone")

    def __init__(self, stretch: Stretch, saga_id: str | None) -> None:
        self.stretch = stretch
        self.given_id = saga_id
        self._saga_id = saga_id
        self.results: list[object] = []
        self.undo_order: list[int] | None = None
        self.undone: list[object] = []

    @property
    def saga_id(self) -> str:
        """The run's id: the one given, or a fresh random one made on first use (the engine
        made later, if any, takes it over)."""
        if self._saga_id is None:
            import uuid  # here: most runs never need an id, and uuid is slow to import

            self._saga_id = self.given_id = uuid.uuid4().hex
        return self._saga_id

    @property
    def path(self) -> str:
        """The path of the step whose action (or compensation) runs now. The stretch is the
        whole saga, so it runs first in the root scope: its labels are its paths."""
        order = self.undo_order
        if order is None:
            index = min(len(self.results), len(self.stretch.nodes) - 1)
        else:
            index = order[min(len(self.undone), len(order) - 1)]
        return self.stretch.local().labels[index]


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
