"""Errors fsaga raises or reports in an outcome."""

from __future__ import annotations

__all__ = ["DuplicateStepNameError", "ReturnedFailure"]


class DuplicateStepNameError(ValueError):
    """Two steps (or sub-sagas) in one scope share an explicit name.

    Raised when the saga is built if both are visible then (siblings of `par` or `sequence`);
    otherwise the run fails with it at the second one, before that step starts, and compensates.
    """

    def __init__(self, path: str, *, where: str | None = None) -> None:
        place = f" in {where}" if where else ""
        super().__init__(
            f"duplicate step name {path!r}{place}: an earlier step or sub-saga in the same scope "
            "already uses it; give one of them another name, or wrap repeated parts with "
            ".named(...)"
        )
        self.path = path


class ReturnedFailure(Exception):
    """A step returned a `returns` failure whose value is not an exception.

    The value is kept as is on `value`. A failure that carries an exception is reported as that
    exception instead, unwrapped.
    """

    def __init__(self, path: str, value: object) -> None:
        super().__init__(f"step {path!r} returned a failure: {value!r}")
        self.path = path
        self.value = value
