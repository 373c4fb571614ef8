"""The client side: start a registered saga as a Temporal workflow and get its outcome back.

`start` checks that the saga can run on Temporal (every effect an activity), starts the
workflow under the id you give (the saga id: with a step's path, its idempotency key), and
returns a `SagaHandle`; `execute` also waits for the outcome. The outcome comes back as the
same `Success`, `Failure` or `PartialFailure` any interpreter returns: a failed saga is a
failed workflow in Temporal's terms, and its outcome travels in that failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, final, overload

from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import RawValue, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError

from fsaga.durable.definitions import SagaDefinitions
from fsaga.durable.errors import DefinitionConflictError
from fsaga.durable.outcomes import failure_from_document
from fsaga.interpreter.settings import BranchFailurePolicy, CompensationPolicy
from fsaga.outcome import Outcome, Success
from fsaga.saga import Saga
from fsaga.temporal._check import refuse_what_cannot_run
from fsaga.temporal._wire import (
    OUTCOME_QUERY,
    RunOptions,
    decode,
    outcome_of_error,
    value_hint,
)

__all__ = ["SagaCancelledError", "SagaHandle", "execute", "start"]

_I = TypeVar("_I")
_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class SagaCancelledError(Exception):
    """The saga's workflow was cancelled: it compensated what had completed, then ended as
    cancelled (contract rule 8).

    Attributes:
        saga_id: the saga (its workflow id).
        outcome: the outcome of the undo, read from the workflow (None if no worker answered
            the query for it).
    """

    def __init__(self, saga_id: str, outcome: Outcome[object] | None) -> None:
        undo = "" if outcome is None else f": {outcome}"
        super().__init__(f"saga {saga_id!r} was cancelled and compensated{undo}")
        self.saga_id = saga_id
        self.outcome = outcome


@final
class SagaHandle(Generic[_T_co]):
    """A saga started on Temporal: its id, its workflow handle, and its outcome to wait for."""

    __slots__ = ("_client", "_hint", "workflow")

    def __init__(
        self, client: Client, workflow: WorkflowHandle[Any, RawValue], hint: type | None
    ) -> None:
        self._client = client
        self._hint = hint
        self.workflow = workflow
        """The `temporalio.client.WorkflowHandle` of the saga's workflow (to cancel it, query
        it, fetch its history)."""

    @property
    def saga_id(self) -> str:
        """The saga's id: its workflow id."""
        return self.workflow.id

    async def outcome(self) -> Outcome[_T_co]:
        """Wait for the saga's outcome.

        Raises:
            SagaCancelledError: the workflow was cancelled (and compensated).
            temporalio.client.WorkflowFailureError: the workflow ended some other way than by
                finishing its saga (terminated, timed out).
        """
        try:
            raw = await self.workflow.result()
        except WorkflowFailureError as error:
            cause = error.cause
            if isinstance(cause, ApplicationError):
                failed = outcome_of_error(cause)
                if failed is not None:
                    return failed
            if isinstance(cause, CancelledError):
                raise SagaCancelledError(self.saga_id, await self._undone()) from error
            raise
        converter = self._client.data_converter.payload_converter
        value = decode(converter, raw.payload, self._hint)
        return Success(value)  # type: ignore[arg-type]  # decoded as the saga's _T_co

    async def _undone(self) -> Outcome[object] | None:
        """The outcome the cancelled workflow reached, asked of a worker."""
        try:
            document = await self.workflow.query(OUTCOME_QUERY)
            if not isinstance(document, dict) or document.get("kind") == "success":
                return None if not isinstance(document, dict) else Success(document.get("value"))
            return failure_from_document(document)
        except Exception:
            return None


@overload
async def start(
    client: Client,
    definitions: SagaDefinitions,
    saga: Callable[[_I], Saga[_T]],
    input: _I,
    *,
    id: str,
    task_queue: str,
    timeout: float | None = None,
    activity_timeout: float = 3600.0,
    heartbeat_timeout: float | None = 30.0,
    on_branch_failure: BranchFailurePolicy = "settle",
    concurrent_compensation: bool = False,
    on_compensation_failure: CompensationPolicy = "continue",
) -> SagaHandle[_T]: ...
@overload
async def start(
    client: Client,
    definitions: SagaDefinitions,
    saga: str,
    input: object,
    *,
    id: str,
    task_queue: str,
    timeout: float | None = None,
    activity_timeout: float = 3600.0,
    heartbeat_timeout: float | None = 30.0,
    on_branch_failure: BranchFailurePolicy = "settle",
    concurrent_compensation: bool = False,
    on_compensation_failure: CompensationPolicy = "continue",
) -> SagaHandle[object]: ...
async def start(
    client: Client,
    definitions: SagaDefinitions,
    saga: Callable[[Any], Saga[Any]] | str,
    input: object,
    *,
    id: str,
    task_queue: str,
    timeout: float | None = None,
    activity_timeout: float = 3600.0,
    heartbeat_timeout: float | None = 30.0,
    on_branch_failure: BranchFailurePolicy = "settle",
    concurrent_compensation: bool = False,
    on_compensation_failure: CompensationPolicy = "continue",
) -> SagaHandle[Any]:
    """Start the saga `definitions` registers (by its builder, or its name) on `input`, as the
    Temporal workflow `id`, on `task_queue`, and return its handle.

    The saga is built here first, and refused if it cannot run on Temporal: a step whose
    action, compensation or ``on_unknown`` is not an `fsaga.temporal.activity`, or whose
    activity arguments the client's data converter cannot encode (`TypeError` naming the
    step). An id that was started before is never run twice (contract rule 13): its handle is
    returned, and waits for that run's outcome.

    Args:
        client: the Temporal client.
        definitions: where the saga is registered (the workers must register it too, in the
            same version).
        saga: the registered builder (its ``-> Saga[T]`` types the outcome), or its name.
        input: what the builder is called with; the client's data converter encodes it.
        id: the saga id, which is the workflow id.
        task_queue: the task queue `fsaga.temporal.worker` polls.
        timeout: seconds the saga's forward steps may take in all (the run's deadline).
        activity_timeout: seconds an attempt of a step without a timeout of its own may run
            before its outcome counts as unknown.
        heartbeat_timeout: seconds without a heartbeat from the worker running an effect (it
            sends them while the effect runs) before the attempt's outcome counts as unknown:
            how soon a worker that died is noticed. ``None``: no heartbeats.
        on_branch_failure: as for `fsaga.interpreter.AsyncInterpreter`: when a `par` branch
            fails, its siblings' activities in flight settle, or are cancelled.
        concurrent_compensation: as for `fsaga.interpreter.AsyncInterpreter`: undo
            independent branches side by side, in reverse causal order.
        on_compensation_failure: as for `fsaga.interpreter.AsyncInterpreter`: the undo goes
            on, or stops, after a compensation fails for good.

    Raises:
        fsaga.durable.UnknownDefinitionError: `saga` is not registered in `definitions`.
        fsaga.durable.DefinitionConflictError: `id` belongs to a workflow of another type.
        TypeError: the saga cannot run on Temporal (the message names the step and says what
            to do).
    """
    name, build = _definition(definitions, saga)
    version, _ = definitions.lookup(name)
    options = RunOptions(
        version=version,
        timeout=timeout,
        activity_timeout=activity_timeout,
        heartbeat_timeout=heartbeat_timeout,
        on_branch_failure=on_branch_failure,
        concurrent_compensation=concurrent_compensation,
        on_compensation_failure=on_compensation_failure,
    )
    built = build(input)
    if not isinstance(built, Saga):
        raise TypeError(f"saga definition {name!r} returned {built!r}, not a saga")
    refuse_what_cannot_run(built, name, client.data_converter.payload_converter)
    hint = value_hint(build)
    handle: WorkflowHandle[Any, RawValue]
    try:
        handle = await client.start_workflow(
            name,
            args=[input, options.document()],
            id=id,
            task_queue=task_queue,
            result_type=RawValue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError as started:
        if started.workflow_type != name:
            raise DefinitionConflictError(
                f"saga id {id!r} belongs to a workflow of type {started.workflow_type!r}, not "
                f"to saga {name!r}"
            ) from started
        handle = client.get_workflow_handle(id, result_type=RawValue)
    return SagaHandle(client, handle, hint)


@overload
async def execute(
    client: Client,
    definitions: SagaDefinitions,
    saga: Callable[[_I], Saga[_T]],
    input: _I,
    *,
    id: str,
    task_queue: str,
    timeout: float | None = None,
    activity_timeout: float = 3600.0,
    heartbeat_timeout: float | None = 30.0,
    on_branch_failure: BranchFailurePolicy = "settle",
    concurrent_compensation: bool = False,
    on_compensation_failure: CompensationPolicy = "continue",
) -> Outcome[_T]: ...
@overload
async def execute(
    client: Client,
    definitions: SagaDefinitions,
    saga: str,
    input: object,
    *,
    id: str,
    task_queue: str,
    timeout: float | None = None,
    activity_timeout: float = 3600.0,
    heartbeat_timeout: float | None = 30.0,
    on_branch_failure: BranchFailurePolicy = "settle",
    concurrent_compensation: bool = False,
    on_compensation_failure: CompensationPolicy = "continue",
) -> Outcome[object]: ...
async def execute(
    client: Client,
    definitions: SagaDefinitions,
    saga: Callable[[Any], Saga[Any]] | str,
    input: object,
    *,
    id: str,
    task_queue: str,
    timeout: float | None = None,
    activity_timeout: float = 3600.0,
    heartbeat_timeout: float | None = 30.0,
    on_branch_failure: BranchFailurePolicy = "settle",
    concurrent_compensation: bool = False,
    on_compensation_failure: CompensationPolicy = "continue",
) -> Outcome[Any]:
    """`start`, then wait for the outcome (`SagaHandle.outcome`): it raises what both raise."""
    handle = await start(
        client,
        definitions,
        saga,
        input,
        id=id,
        task_queue=task_queue,
        timeout=timeout,
        activity_timeout=activity_timeout,
        heartbeat_timeout=heartbeat_timeout,
        on_branch_failure=on_branch_failure,
        concurrent_compensation=concurrent_compensation,
        on_compensation_failure=on_compensation_failure,
    )
    return await handle.outcome()


def _definition(
    definitions: SagaDefinitions, saga: Callable[[Any], Saga[Any]] | str
) -> tuple[str, Callable[[Any], Saga[object]]]:
    if isinstance(saga, str):
        _, build = definitions.lookup(saga)
        return saga, build
    return definitions.name_of(saga), saga
