"""What the engine asks a driver to do: one `Call` at a time, each in a `Stage` of its own.

Private to the interpreters: the driver protocol (`fsaga.interpreter._engine`) is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, TypeAlias, final

if TYPE_CHECKING:
    from fsaga.interpreter._fibers import Deadline, Fiber, Scope
    from fsaga.interpreter._plan import StretchRun
    from fsaga.saga import StepNode

__all__ = [
    "ACTION",
    "COMPENSATION",
    "NO_DEADLINE",
    "SLEEP",
    "STRETCH",
    "UNDO_STRETCH",
    "UNKNOWN",
    "Call",
    "CallKind",
    "Stage",
]

CallKind: TypeAlias = Literal[
    "action", "compensation", "unknown", "sleep", "stretch", "undo-stretch"
]
"""What the driver does with a call (see `Call`)."""

ACTION: Final = "action"
COMPENSATION: Final = "compensation"
UNKNOWN: Final = "unknown"
SLEEP: Final = "sleep"
STRETCH: Final = "stretch"
UNDO_STRETCH: Final = "undo-stretch"
NO_DEADLINE: Final = float("inf")

Stage: TypeAlias = Literal[
    "attempt",
    "after-unknown",
    "resolving",
    "compensation",
    "unknown",
    "wait",
    "undo-wait",
    "stretch",
    "undo-stretch",
    "completed",
    "outcome-unknown",
    "settled",
]
"""Where a call is in its life, as the engine sees it (the driver only reads `kind`).

Handed to the driver, to be reported once:

- ``"attempt"``: an attempt of a step's action in the forward run;
- ``"after-unknown"``: an attempt retrying one whose outcome is unknown (if it cannot happen,
  that outcome stays unknown);
- ``"resolving"``: the action run again during the undo to learn the result an unknown
  outcome's compensation needs;
- ``"compensation"``: an attempt of a compensation (`argument` is the action's result);
- ``"unknown"``: an attempt of an unknown-outcome compensation;
- ``"wait"`` / ``"undo-wait"``: the wait before the retry `retried` of an action / of a
  compensation;
- ``"stretch"``: a straight run of plain steps (`stretch`), performed by the driver in one loop;
- ``"undo-stretch"``: the compensations of a stretch's steps, newest first, in one loop.

After its report, in the undo log:

- ``"completed"``: the step completed; `argument` is its result;
- ``"outcome-unknown"``: the step's outcome is unknown; the undo settles it (contract rule 3).

Done with:

- ``"settled"``: reported, and not in the undo log; any further report is refused.
"""


@final
class Call:
    """One thing the engine asks its driver to do.

    - ``kind == "action"``: call ``node.action()`` (attempt `attempt` of the step at `path`);
    - ``kind == "compensation"``: call ``node.compensate(argument)``;
    - ``kind == "unknown"``: call ``node.on_unknown(context)`` (the step's outcome is unknown);
    - ``kind == "sleep"``: wait `delay` seconds (a retry's backoff), then report success;
    - ``kind == "stretch"``: call every action of `stretch.actions` in order, appending each
      plain result to `stretch.results`; stop at the first that raises or returns something
      else, and report that step (the one at index ``len(stretch.results)``), or, when every
      action ran, report success (only drivers that asked for stretches get them);
    - ``kind == "undo-stretch"``: for each index in `stretch.undo_order`, call
      ``stretch.nodes[index].compensate(stretch.results[index])``, appending each plain result to
      `stretch.undone`; stop at the first that raises or returns something else, and report
      that compensation, or, when every one ran, report success.

    A driver that can pre-empt an effect cancels the call when the engine's clock reaches
    `deadline` and reports it with `Engine.expire` (`limit` says which deadline it is: a
    sub-tree's or the run's, or ``None`` for the step's own timeout).

    The driver reports every call it was given back to the engine exactly once.
    """

    __slots__ = (
        "_path",
        "argument",
        "attempt",
        "count",
        "deadline",
        "delay",
        "fiber",
        "kind",
        "limit",
        "node",
        "retried",
        "scope",
        "stage",
        "started_at",
        "stretch",
    )

    def __init__(
        self,
        kind: CallKind,
        stage: Stage,
        node: StepNode[object],
        scope: Scope,
        count: int,
        attempt: int,
        fiber: Fiber,
    ) -> None:
        self.kind = kind
        self.stage = stage
        self.node = node
        self.scope = scope
        self.count = count
        self.attempt = attempt
        self.fiber = fiber
        self.argument: object = None
        self.retried: Call | None = None
        self.stretch: StretchRun | None = None
        self.delay = 0.0
        self.started_at = 0.0
        self.deadline = NO_DEADLINE
        self.limit: Deadline | None = None
        self._path: str | None = None

    @property
    def path(self) -> str:
        """The step's path, e.g. ``order/payment/charge`` (made on first use: most runs of a
        step that succeeds never need it). For a stretch: the path of its step running now
        (the last step's, once every step ran)."""
        path = self._path
        if path is None:
            stretch = self.stretch
            if stretch is not None:
                return stretch.path_of(stretch.running(undoing=self.kind != "stretch"))
            label = self.node.name
            path = self.scope.join(label if self.count == 1 else f"{label}#{self.count}")
            self._path = path
        return path

    def derive(self, kind: CallKind, stage: Stage, attempt: int) -> Call:
        """Another call for the same step: a retry, a run-again, or the wait before a retry."""
        call = Call(kind, stage, self.node, self.scope, self.count, attempt, self.fiber)
        call._path = self._path
        call.argument = self.argument
        return call

    def __repr__(self) -> str:
        return f"<Call {self.kind} {self.path!r} attempt {self.attempt} ({self.stage})>"
