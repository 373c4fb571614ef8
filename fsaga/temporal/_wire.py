"""What the fsaga workflow, its activities and its client say to each other through Temporal:
an effect's header, an effect's error, a run's options and its outcome. Private to
`fsaga.temporal`."""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, cast, final

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadConverter
from temporalio.exceptions import ApplicationError

from fsaga.context import StepContext, StepContextKind
from fsaga.durable.errors import describe_error, revive_error
from fsaga.durable.outcomes import failure_document, failure_from_document
from fsaga.interpreter.settings import BranchFailurePolicy, CompensationPolicy, EngineSettings
from fsaga.outcome import Failure, PartialFailure, describe_failure
from fsaga.saga import Saga

__all__ = [
    "EFFECT_ERROR",
    "OUTCOME_QUERY",
    "RunOptions",
    "decode",
    "effect_error",
    "header",
    "hints_of",
    "input_hint",
    "outcome_error",
    "outcome_of_error",
    "read_header",
    "revived",
    "value_hint",
]

EFFECT_ERROR: Final = "fsaga.EffectError"
"""The type of the `ApplicationError` an activity fails with when its function raised: its one
detail is the error as `fsaga.durable.errors.describe_error` describes it."""

OUTCOME_QUERY: Final = "fsaga.outcome"
"""The query that reads a saga workflow's outcome document (None until it has one)."""

_FAILURE_TYPES: Final = {"failure": "fsaga.Failure", "partial_failure": "fsaga.PartialFailure"}

_KINDS: Final = ("action", "compensation", "unknown")


def header(context: StepContext) -> list[object]:
    """What an activity learns about the effect it performs, as its first argument."""
    return [context.saga_id, context.path, context.attempt, context.kind]


def read_header(value: object) -> StepContext:
    """The `StepContext` an activity's first argument carries."""
    if (
        isinstance(value, list)
        and len(value) == 4
        and isinstance(value[0], str)
        and isinstance(value[1], str)
        and type(value[2]) is int
        and value[3] in _KINDS
    ):
        kind: StepContextKind = value[3]
        return StepContext(value[0], value[1], value[2], kind)
    raise TypeError(
        f"this activity was not scheduled by an fsaga workflow: its first argument {value!r} "
        "is not a step's context"
    )


def effect_error(error: Exception) -> ApplicationError:
    """The failure an activity reports for the error its function raised."""
    return ApplicationError(
        str(error) or type(error).__qualname__,
        describe_error(error),
        type=EFFECT_ERROR,
        non_retryable=True,
    )


def revived(failure: ApplicationError) -> Exception:
    """The error an activity's failure stands for, as the engine sees it: the original type
    when it can be imported (so a `fsaga.Retry` that picks errors by type decides as under any
    other interpreter), else a `fsaga.durable.RecordedError` naming it."""
    if failure.type == EFFECT_ERROR and len(failure.details) == 1:
        return revive_error(failure.details[0])
    kind = failure.type or "ApplicationError"
    return revive_error([f"temporalio.exceptions:{kind}", kind, failure.message])


# -- options of a run ----------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """How a saga runs on Temporal, fixed when it starts (every replay decides the same)."""

    version: int
    timeout: float | None = None
    activity_timeout: float = 3600.0
    heartbeat_timeout: float | None = 30.0
    on_branch_failure: BranchFailurePolicy = "settle"
    concurrent_compensation: bool = False
    on_compensation_failure: CompensationPolicy = "continue"

    def __post_init__(self) -> None:
        for label, seconds, optional in (
            ("timeout", self.timeout, True),
            ("activity_timeout", self.activity_timeout, False),
            ("heartbeat_timeout", self.heartbeat_timeout, True),
        ):
            given: object = seconds
            if given is None and optional:
                continue
            if isinstance(given, bool) or not isinstance(given, int | float):
                raise TypeError(f"{label} must be a number of seconds, got {seconds!r}")
            if not 0 < given < float("inf"):
                raise ValueError(f"{label} must be a positive number of seconds, got {seconds!r}")
        # The policies are checked where the engine checks them.
        self.settings(listeners=(), clock=_zero, random_unit=_zero)

    def settings(
        self,
        *,
        listeners: tuple[Callable[[Any], object], ...],
        clock: Callable[[], float],
        random_unit: Callable[[], float],
    ) -> EngineSettings:
        """The engine's settings for a run with these options, on the given clock."""
        return EngineSettings(
            listeners,
            clock,
            random_unit,
            self.on_compensation_failure,
            clock,
            self.timeout,
            self.on_branch_failure,
            self.concurrent_compensation,
        )

    def document(self) -> dict[str, object]:
        """The options as the workflow's second argument carries them."""
        return {
            "version": self.version,
            "timeout": self.timeout,
            "activity_timeout": self.activity_timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "on_branch_failure": self.on_branch_failure,
            "concurrent_compensation": self.concurrent_compensation,
            "on_compensation_failure": self.on_compensation_failure,
        }

    @classmethod
    def from_document(cls, document: object) -> RunOptions:
        """The options `document` carries; TypeError or ValueError if it carries none."""
        if not isinstance(document, dict) or set(document) != set(_OPTION_NAMES):
            raise TypeError(f"not the options of an fsaga saga: {document!r}")
        version = document["version"]
        if type(version) is not int or version < 1:
            raise ValueError(f"not a definition's version: {version!r}")
        return cls(**document)


def _zero() -> float:
    return 0.0


_OPTION_NAMES: Final = (
    "version",
    "timeout",
    "activity_timeout",
    "heartbeat_timeout",
    "on_branch_failure",
    "concurrent_compensation",
    "on_compensation_failure",
)


# -- outcomes --------------------------------------------------------------------------------------


def outcome_error(outcome: Failure | PartialFailure) -> ApplicationError:
    """What a saga workflow fails with: the failed outcome, described, its document the one
    detail."""
    document = failure_document(outcome)
    kind = document["kind"]
    assert isinstance(kind, str)
    return ApplicationError(
        describe_failure(outcome), document, type=_FAILURE_TYPES[kind], non_retryable=True
    )


def outcome_of_error(failure: ApplicationError) -> Failure | PartialFailure | None:
    """The failed outcome a saga workflow's failure carries, or None if it carries none."""
    if failure.type not in _FAILURE_TYPES.values() or len(failure.details) != 1:
        return None
    document = failure.details[0]
    if not isinstance(document, dict):
        return None
    return failure_from_document(document)


# -- type hints ----------------------------------------------------------------------------------


def decode(converter: PayloadConverter, payload: Payload, hint: type | None) -> object:
    """`payload` decoded by `converter`, into `hint` when there is one (``object`` and ``Any``
    say nothing about the value: it is decoded as it comes)."""
    if hint is None or hint is object or hint is Any:
        return converter.from_payload(payload)
    value: object = converter.from_payload(payload, cast("type[object]", hint))
    return value


@cache
def hints_of(function: Callable[..., object]) -> tuple[list[type | None], type | None]:
    """The annotations of `function`'s positional parameters (None where there is none) and of
    its result, resolved, for a Temporal payload converter to decode into."""
    try:
        resolved = typing.get_type_hints(function)
    except Exception:
        resolved = {}
    code = getattr(function, "__code__", None)
    names = [] if code is None else list(code.co_varnames[: code.co_argcount])
    return [resolved.get(name) for name in names], resolved.get("return")


def input_hint(build: Callable[[Any], Saga[object]]) -> type | None:
    """What a saga definition's builder takes, as a type hint (None if not annotated)."""
    parameters, _ = hints_of(build)
    return parameters[0] if parameters else None


def value_hint(build: Callable[[Any], Saga[object]]) -> type | None:
    """The type of a saga definition's value, read off its builder's ``-> Saga[T]``."""
    _, result = hints_of(build)
    arguments = typing.get_args(result)
    if typing.get_origin(result) is Saga and len(arguments) == 1:
        hint: type | None = arguments[0]
        return hint
    return None
