"""The errors of durable runs, and errors as the journal records them."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import ClassVar

from fsaga.errors import NonRetryableError, UnknownOutcomeError

__all__ = [
    "DefinitionConflictError",
    "NonDeterminismError",
    "RecordedError",
    "SagaBusyError",
    "SagaParkedError",
    "UnknownDefinitionError",
    "describe_error",
    "revive_error",
]


class UnknownDefinitionError(LookupError):
    """No saga definition is registered under this name.

    Attributes:
        name: the name asked for.
        registered: the names that are registered.

    >>> UnknownDefinitionError("refund", registered=["order"])
    UnknownDefinitionError("no saga definition is registered as 'refund' (registered: 'order')")
    """

    def __init__(self, name: str, *, registered: Iterable[str] = ()) -> None:
        self.name = name
        self.registered = tuple(registered)
        known = ", ".join(map(repr, self.registered)) or "none"
        super().__init__(f"no saga definition is registered as {name!r} (registered: {known})")


class DefinitionConflictError(ValueError):
    """A saga id already belongs to a run of another definition, version or input."""


class NonDeterminismError(RuntimeError):
    """A replay asked for other effects than the journal recorded: the definition changed.

    Nothing was performed and nothing was written once the divergence showed.
    """


class SagaBusyError(RuntimeError):
    """The saga is running (or being recovered) elsewhere: it is not run a second time."""


class SagaParkedError(RuntimeError):
    """The saga is parked as dead: too many recoveries claimed it and did not finish it.

    Nothing runs it until it is released: `DurableSagas.parked` (or ``fsaga journal show``)
    says why it was parked, `DurableSagas.release` (or ``fsaga journal release``) gives it
    back to `DurableSagas.recover`.

    Attributes:
        saga_id: the saga.
    """

    def __init__(self, saga_id: str) -> None:
        super().__init__(
            f"saga {saga_id!r} is parked as dead: its recoveries kept stopping before they "
            "finished it; see why with `fsaga journal show`, fix the cause, then release it "
            "for recovery (DurableSagas.release, or `fsaga journal release`)"
        )
        self.saga_id = saga_id

    def __reduce__(self) -> tuple[object, ...]:
        return (SagaParkedError, (self.saga_id,))


class RecordedError(Exception):
    """An error as an earlier run recorded it: its type's name and its message.

    Outcomes read back from the journal, and failures a replay feeds to the engine, carry
    these instead of the original exceptions, which do not survive a process. When the
    original type can still be imported, the recorded error is also an instance of it (a
    subclass made on the fly), so a retry policy that chooses errors by type decides on a
    replay as it did in the first run.
    """

    def __init__(self, type_name: str, message: str, *, origin: str = "builtins:Exception") -> None:
        # Not `super().__init__`: in a subclass made for an original type, that would call
        # the original's constructor, whose signature is unknown.
        Exception.__init__(self, message)
        self.type_name = type_name
        self.message = message
        self.origin = origin
        """The original type as ``module:qualname``, as the journal recorded it."""

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name

    # The original type a subclass made for a recorded error also is (`revive_error`), when it
    # could be imported again.
    _original: ClassVar[type | None] = None

    def __repr__(self) -> str:
        if self._original is None:
            return f"RecordedError({self.type_name!r}, {self.message!r})"
        return f"{type(self).__name__}({self.message!r})"  # reads like the original

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedError):
            return NotImplemented
        return (self.type_name, self.message) == (other.type_name, other.message)

    def __hash__(self) -> int:
        return hash((self.type_name, self.message))

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_recorded, (self.type_name, self.message, self.origin))


def _rebuild_recorded(type_name: str, message: str, origin: str) -> RecordedError:
    return RecordedError(type_name, message, origin=origin)


_RECORDED_TYPES: dict[tuple[str, bool, bool], type[RecordedError]] = {}


def _recorded_type(origin: str, *, final: bool, unknown: bool) -> type[RecordedError]:
    """A `RecordedError` subclass that is also the type named ``module:qualname``, if that type
    can be imported and combined (`RecordedError` otherwise); with `final`, also a
    `NonRetryableError`; with `unknown`, also an `UnknownOutcomeError`."""
    known = _RECORDED_TYPES.get((origin, final, unknown))
    if known is not None:
        return known
    # The marks before the original type: they all derive from Exception, which must come after
    # them all in the method resolution order.
    bases: tuple[type, ...] = (RecordedError, NonRetryableError) if final else (RecordedError,)
    if unknown:
        bases = (*bases, UnknownOutcomeError)
    original: type | None = None
    module_name, _, qualname = origin.partition(":")
    try:
        found: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
        if (
            isinstance(found, type)
            and issubclass(found, Exception)
            and not issubclass(found, RecordedError)
            and not issubclass(NonRetryableError, found)  # Exception itself adds nothing
            # A group is made from its sub-exceptions, which the journal does not keep.
            and not issubclass(found, BaseExceptionGroup)
        ):
            if issubclass(found, UnknownOutcomeError):
                bases = tuple(base for base in bases if base is not UnknownOutcomeError)
            original = found
            bases = (*bases, found)
    except Exception:
        pass  # not importable: a plain RecordedError
    made: type[RecordedError] = RecordedError
    if len(bases) > 1:
        name = RecordedError.__name__ if original is None else original.__name__
        try:
            made = type(name, bases, {"__module__": __name__, "_original": original})
        except TypeError:
            made = RecordedError  # the layouts cannot be combined
    _RECORDED_TYPES[origin, final, unknown] = made
    return made


def describe_error(error: BaseException) -> list[str]:
    """An error as the journal keeps it: ``[module:qualname, name, message]``."""
    if isinstance(error, RecordedError):
        return [error.origin, error.type_name, error.message]
    kind = type(error)
    return [f"{kind.__module__}:{kind.__qualname__}", kind.__qualname__, str(error)]


def revive_error(described: object, *, final: bool = False, unknown: bool = False) -> RecordedError:
    """The error `describe_error` recorded, back as a `RecordedError`.

    With `final`, it is also a `NonRetryableError`: the run that recorded it did not retry it,
    and a replay must not either. With `unknown`, it is also an `UnknownOutcomeError`: the run
    recorded the attempt it ended as one whose outcome is unknown (a deadline cut it off, say),
    and a replay must treat it so, whatever its type.

    >>> cut_off = ["fsaga.errors:StepTimeoutError", "StepTimeoutError", "it ran past its timeout"]
    >>> error = revive_error(cut_off, unknown=True)
    >>> error
    StepTimeoutError('it ran past its timeout')
    >>> isinstance(error, TimeoutError), isinstance(error, UnknownOutcomeError)
    (True, True)
    """
    if isinstance(described, list) and len(described) == 3:
        origin, name, message = (str(part) for part in described)
        return _recorded_type(origin, final=final, unknown=unknown)(name, message, origin=origin)
    return _recorded_type("", final=final, unknown=unknown)("Exception", str(described))
