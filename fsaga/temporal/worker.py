"""The worker side: the workflow that runs registered sagas on Temporal, and a worker for it.

`worker(client, definitions, task_queue=..., activities=[...])` makes a `temporalio` worker
that runs every saga `definitions` registers (the workflow type is the definition's name) and
performs their effects (the `activities` your steps name). `saga_workflow(definitions)` is the
workflow class alone, for a worker of your own or for `temporalio.worker.Replayer`.

The workflow builds the saga from its definition and input and drives fsaga's engine with it,
deterministically (see `fsaga.temporal`). It runs outside Temporal's sandbox: the engine reads
no clock, random number or id of its own (the workflow's replace them), and a definition's
builder and its ``bind``/``map`` functions must be as deterministic as any workflow code: no I/O,
clock or randomness; do those in activities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, cast

from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker, WorkerConfig

from fsaga.durable.definitions import SagaDefinitions
from fsaga.durable.outcomes import failure_document
from fsaga.events import Event, Listener
from fsaga.interpreter._engine import Engine
from fsaga.outcome import Failure, Outcome, PartialFailure, Success
from fsaga.saga import Saga
from fsaga.temporal._driver import WorkflowRun
from fsaga.temporal._effects import effect_activity
from fsaga.temporal._wire import (
    OUTCOME_QUERY,
    RunOptions,
    decode,
    input_hint,
    outcome_error,
)
from fsaga.temporal.activities import activity_functions

__all__ = ["SagaWorkflow", "saga_workflow", "worker"]

_OWN_OPTIONS = ("client", "task_queue")


def worker(
    client: Client,
    definitions: SagaDefinitions,
    *,
    task_queue: str,
    activities: Iterable[Callable[..., object]] = (),
    listeners: Iterable[Listener] = (),
    config: WorkerConfig | None = None,
) -> Worker:
    """A Temporal worker that runs the sagas of `definitions` and performs their effects.

    Run it with ``await worker.run()`` or ``async with worker: ...``.

    Args:
        client: the Temporal client it polls with.
        definitions: the sagas it runs, each a workflow type named as its definition.
        task_queue: the task queue it polls (the one `fsaga.temporal.start` starts sagas on).
        activities: the module-level functions the sagas' steps name with
            `fsaga.temporal.activity`; each becomes an activity type of its own name.
        listeners: called with every event of every saga this worker drives (see
            `fsaga.events`), never for an event a replay of the workflow's history passes
            again: a worker that takes a saga over from one that died goes on from where the
            history ends.
        config: any other option of `temporalio.worker.Worker` (`max_concurrent_activities`,
            `identity`, ...); workflows and activities given there run beside fsaga's.

    Raises:
        TypeError, ValueError: an activity is not a module-level function, two share a name,
            or `config` sets `client` or `task_queue`.
    """
    functions = activity_functions(activities)
    options: dict[str, Any] = dict(config or {})
    for name in _OWN_OPTIONS:
        if name in options:
            raise ValueError(f"fsaga.temporal.worker: pass {name} as itself, not in config")
    options["workflows"] = [*options.get("workflows", ()), saga_workflow(definitions, listeners)]
    options["activities"] = [*options.get("activities", ()), effect_activity(functions)]
    options["client"] = client
    options["task_queue"] = task_queue
    return Worker(**cast(WorkerConfig, options))


def saga_workflow(definitions: SagaDefinitions, listeners: Iterable[Listener] = ()) -> type:
    """The workflow class that runs the sagas of `definitions` (a dynamic workflow: its type
    is the name of the definition it runs), its events going to `listeners`.

    `worker` registers it; register it yourself with a `temporalio.worker.Worker` of your own,
    or give it to `temporalio.worker.Replayer` to check that recorded histories still replay.
    """
    if not isinstance(definitions, SagaDefinitions):
        raise TypeError(f"fsaga.temporal: definitions must be SagaDefinitions, got {definitions!r}")
    attributes = {
        "definitions": definitions,
        "listeners": tuple(_replay_safe(listener) for listener in listeners),
        # Temporal wants the run method and the queries defined on the workflow class itself.
        "run": SagaWorkflow.run,
        "outcome": SagaWorkflow.outcome,
    }
    made = type("SagaWorkflow", (SagaWorkflow,), attributes)
    return workflow.defn(dynamic=True, sandboxed=False)(made)


class SagaWorkflow:
    """Runs one saga: the definition named by the workflow type, on the workflow's input.

    Each `saga_workflow` is a subclass of its own, with its definitions and listeners.
    """

    definitions: ClassVar[SagaDefinitions]
    listeners: ClassVar[tuple[Callable[[Event], None], ...]]

    def __init__(self) -> None:
        self._document: dict[str, object] | None = None
        self._value: RawValue | None = None

    @workflow.run
    async def run(self, arguments: Sequence[RawValue]) -> RawValue:
        """Run the saga; return its value, or fail with its outcome (or end cancelled)."""
        info = workflow.info()
        saga, options = _prepare(self.definitions, info.workflow_type, arguments)
        settings = options.settings(
            listeners=self.listeners, clock=workflow.time, random_unit=workflow.random().random
        )
        engine = Engine(saga.map(self._encoded), settings, saga_id=info.workflow_id)
        run = WorkflowRun(engine, options)
        await run.drive()
        outcome = engine.take_outcome()
        self._document = _document(outcome)
        if run.interruption is not None:
            self._document["cancelled"] = True
            raise run.interruption  # the undo is done: now the workflow ends cancelled
        match outcome:
            case Success():
                assert self._value is not None
                return self._value
            case Failure() | PartialFailure():
                raise outcome_error(outcome)

    @workflow.query(name=OUTCOME_QUERY)
    def outcome(self) -> dict[str, object] | None:
        """The saga's outcome as a document, once it has one."""
        return self._document

    def _encoded(self, value: object) -> object:
        # The saga's last step: a value the client could not be sent fails the run, which
        # compensates, rather than a success nobody can read.
        try:
            self._value = RawValue(workflow.payload_converter().to_payload(value))
        except Exception as error:
            raise TypeError(
                f"saga {workflow.info().workflow_type!r} finished with a value of type "
                f"{type(value).__qualname__} that the workflow's payload converter cannot "
                f"encode: {error}"
            ) from error
        return value


def _prepare(
    definitions: SagaDefinitions, name: str, arguments: Sequence[RawValue]
) -> tuple[Saga[object], RunOptions]:
    """The saga a workflow runs and its options, from its type and arguments.

    What can never succeed fails the workflow (`ApplicationError`): arguments that
    `fsaga.temporal.start` did not make, an input its definition's type cannot decode. What a
    worker with other code could do (a definition this worker lacks, or has in another version,
    or whose builder raises) fails the workflow task, which Temporal retries: the saga waits for
    a worker that can run it, and nothing of it has run yet.
    """
    version, build = definitions.lookup(name)
    converter = workflow.payload_converter()
    try:
        if len(arguments) != 2:
            raise TypeError(f"it has {len(arguments)} arguments, not an input and options")
        options = RunOptions.from_document(converter.from_payload(arguments[1].payload))
    except Exception as error:
        raise ApplicationError(
            f"saga {name!r}: this workflow was not started by fsaga.temporal.start: {error}",
            type="fsaga.NotASaga",
            non_retryable=True,
        ) from error
    if options.version != version:
        raise RuntimeError(
            f"saga {name!r} was started as version {options.version} of its definition, and "
            f"this worker registers version {version}: a worker with version "
            f"{options.version} must run it"
        )
    hint = input_hint(build)
    try:
        value = decode(converter, arguments[0].payload, hint)
    except Exception as error:
        raise ApplicationError(
            f"saga {name!r}: its input cannot be decoded as "
            f"{getattr(hint, '__qualname__', hint)}: {error}",
            type="fsaga.UndecodableInput",
            non_retryable=True,
        ) from error
    try:
        saga = build(value)
    except Exception as error:
        raise RuntimeError(f"saga {name!r}: its definition raised on its input: {error!r}") from (
            error
        )
    if not isinstance(saga, Saga):
        raise RuntimeError(f"saga {name!r}: its definition returned {saga!r}, not a saga")
    return saga, options


def _document(outcome: Outcome[object]) -> dict[str, object]:
    if isinstance(outcome, Success):
        return {"kind": "success", "value": outcome.value}
    return failure_document(outcome)


def _replay_safe(listener: Listener) -> Callable[[Event], None]:
    """`listener`, called only for events that happen now, not for those a replay of the
    workflow's history passes again."""
    if not callable(listener):
        raise TypeError(f"fsaga.temporal: listener {listener!r} is not callable")

    def emit(event: Event) -> None:
        if not workflow.unsafe.is_replaying():
            listener(event)

    return emit
