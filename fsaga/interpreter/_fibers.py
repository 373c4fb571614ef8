"""How the engine keeps its place in a tree: fibers, their stacks, scopes and par joins.

Private to the engine. A fiber is one thread of control (the root, or a branch of a `par`); its
stack holds the continuations still to apply; a scope makes step paths unique; a join waits for
a `par`'s branches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias, final

from fsaga.errors import DuplicateStepNameError

if TYPE_CHECKING:
    from fsaga.interpreter._plan import StretchAt, StretchRun
    from fsaga.saga import BindContinuation, MapContinuation, Saga

__all__ = [
    "Deadline",
    "DeadlineExit",
    "Fiber",
    "Frame",
    "Join",
    "Scope",
    "ScopeExit",
    "stopping",
]


@final
class Scope:
    """Where step paths are made unique: the root, a named sub-saga, or an unnamed par branch."""

    __slots__ = ("counts", "pending", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.counts: dict[str, int] = {}
        # Stretches that ran in this scope and whose steps are not counted yet: counted when
        # someone next reads `counts` (`settle`), which a run that succeeds may never do.
        self.pending: list[StretchRun] | None = None

    def settle(self) -> dict[str, int]:
        """`counts`, with every stretch that ran here counted in."""
        pending = self.pending
        counts = self.counts
        if pending is not None:
            self.pending = None
            for run in pending:
                run.count_in(counts)
        return counts

    def claim(self, label: str, *, explicit: bool) -> str:
        """The path of the next step (or sub-saga) labelled `label` in this scope.

        Explicit names are unique in their scope; implicit ones (derived from the action) are
        numbered in the order they run: ``charge``, ``charge#2``, ``charge#3``.
        """
        counts = self.settle()
        count = counts.get(label, 0) + 1
        if count > 1 and explicit:
            raise DuplicateStepNameError(self.join(label))
        counts[label] = count
        return self.join(label if count == 1 else f"{label}#{count}")

    def join(self, segment: str) -> str:
        return f"{self.prefix}/{segment}" if self.prefix else segment


@final
class ScopeExit:
    """A frame on a fiber's stack: leaving a named sub-saga restores the enclosing scope."""

    __slots__ = ("scope",)

    def __init__(self, scope: Scope) -> None:
        self.scope = scope


@final
class Deadline:
    """A sub-tree's (or the run's) deadline: the engine's clock reading `at` which it passes.

    `scope` is the path of the named sub-saga the timeout wraps (`named`), or of the scope it
    was set in; ``None`` for the run's own timeout.
    """

    __slots__ = ("at", "named", "scope", "seconds")

    def __init__(
        self, at: float, seconds: float, scope: str | None, *, named: bool = False
    ) -> None:
        self.at = at
        self.seconds = seconds
        self.scope = scope
        self.named = named


@final
class DeadlineExit:
    """A frame on a fiber's stack: leaving a timed sub-tree restores the enclosing deadline."""

    __slots__ = ("deadline",)

    def __init__(self, deadline: Deadline | None) -> None:
        self.deadline = deadline


@final
class Fiber:
    """One thread of control through the tree: the root, or a branch of a `par`."""

    __slots__ = ("branch", "deadline", "index", "join", "scope", "stack")

    def __init__(
        self,
        scope: Scope,
        join: Join | None,
        index: int,
        deadline: Deadline | None = None,
        branch: str = "",
    ) -> None:
        self.scope = scope
        self.join = join
        self.index = index
        self.deadline = deadline
        # Which line of control this is, as events report it (`fsaga.events.StepStarted`).
        self.branch = branch
        self.stack: list[Frame] = []


Frame: TypeAlias = (
    "Saga[Any] | StretchAt | MapContinuation | BindContinuation | ScopeExit | DeadlineExit"
)
"""What a fiber's stack holds: what to do with the value in hand when the fiber resumes (run the
next saga or stretch of a `then`, map the value, build the next saga from it, or leave a scope
or a deadline)."""


@final
class Join:
    """A running `par`: waits for every branch fiber, then resumes (or fails) the parent."""

    __slots__ = ("errors", "failing", "parent", "pending", "results")

    def __init__(self, parent: Fiber, width: int) -> None:
        self.parent = parent
        self.pending = width
        self.results: list[object] = [None] * width
        self.errors: list[BaseException] = []
        self.failing = False


def stopping(fiber: Fiber) -> bool:
    """Whether a `par` enclosing `fiber` has a failed branch, so `fiber` must start nothing."""
    join = fiber.join
    while join is not None:
        if join.failing:
            return True
        join = join.parent.join
    return False
