"""What the engine asks a driver to do: one `Call` at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal, final

if TYPE_CHECKING:
    from fsaga.interpreter._fibers import Deadline, Fiber, Scope
    from fsaga.saga import StepNode

__all__ = ["ACTION", "COMPENSATION", "NO_DEADLINE", "SLEEP", "UNKNOWN", "Call", "CallKind"]

CallKind = Literal["action", "compensation", "unknown", "sleep"]
ACTION: Final = "action"
COMPENSATION: Final = "compensation"
UNKNOWN: Final = "unknown"
SLEEP: Final = "sleep"
NO_DEADLINE: Final = float("inf")


@final
class Call:
    """One thing the engine asks its driver to do.

    - ``kind == "action"``: call ``node.action()`` (attempt `attempt` of the step at `path`);
    - ``kind == "compensation"``: call ``node.compensate(argument)``;
    - ``kind == "unknown"``: call ``node.on_unknown(context)`` (the step's outcome is unknown);
    - ``kind == "sleep"``: wait `delay` seconds (a retry's backoff), then report success.

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
        "scope",
        "started_at",
    )

    def __init__(
        self,
        kind: CallKind,
        node: StepNode[object],
        scope: Scope,
        count: int,
        attempt: int,
        argument: object,
        fiber: Fiber | None,
    ) -> None:
        self.kind = kind
        self.node = node
        self.scope = scope
        self.count = count
        self.attempt = attempt
        self.argument = argument
        self.fiber = fiber
        self.delay = 0.0
        self.started_at = 0.0
        self.deadline = NO_DEADLINE
        self.limit: Deadline | None = None
        self._path: str | None = None

    @property
    def path(self) -> str:
        """The step's path, e.g. ``order/payment/charge`` (made on first use: most runs of a
        step that succeeds never need it)."""
        path = self._path
        if path is None:
            label = self.node.name
            path = self.scope.join(label if self.count == 1 else f"{label}#{self.count}")
            self._path = path
        return path

    def derive(self, kind: CallKind, attempt: int, argument: object) -> Call:
        """Another call for the same step: a retry, a compensation, or the wait before a retry."""
        call = Call(kind, self.node, self.scope, self.count, attempt, argument, self.fiber)
        call._path = self._path
        return call

    def __repr__(self) -> str:
        return f"<Call {self.kind} {self.path!r} attempt {self.attempt}>"
