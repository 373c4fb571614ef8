"""Durable sagas: runs recorded in a `Journal`, started once, recovered by replay after a crash.

Register how a saga is built from its input under a name, then start runs through
`DurableSagas`. Every effect is journaled before it runs (its intent) and after (its result or
error); a run that a crash cut short is rebuilt from its definition and input by `recover`,
which feeds the recorded results back (a completed step never runs again), settles the step
that was in flight as an unknown outcome (contract rule 3), and finishes forward or
compensates. A run reports exactly the outcome it recorded; a recovery refused before it
touched anything writes nothing; a saga whose recoveries keep stopping is parked as dead
(`DurableSagas.parked`) until it is released (`DurableSagas.release`).

`start` and `recover` drive `SyncInterpreter`; `start_async` and `recover_async` drive
`AsyncInterpreter`, whose `par` branches run concurrently and interleave their entries in the
journal. A replay finds each effect's entries by its step path, and hands the recorded results
back in the order they were recorded.

>>> from fsaga import Saga, step
>>> from fsaga.journal import MemoryJournal
>>> definitions = SagaDefinitions()
>>> @definitions.saga("greet")
... def greet(name: str) -> Saga[str]:
...     return step(lambda: f"hello {name}", name="say")
>>> runs = DurableSagas(MemoryJournal(), definitions)
>>> runs.start("greet", "ada", saga_id="greet-1")
Success(value='hello ada')
>>> runs.start("greet", "ada", saga_id="greet-1")  # the same id: the recorded outcome
Success(value='hello ada')
"""

from fsaga.durable.carrier import ContextCarrier as ContextCarrier
from fsaga.durable.definitions import SagaDefinitions as SagaDefinitions
from fsaga.durable.errors import DefinitionConflictError as DefinitionConflictError
from fsaga.durable.errors import NonDeterminismError as NonDeterminismError
from fsaga.durable.errors import RecordedError as RecordedError
from fsaga.durable.errors import SagaBusyError as SagaBusyError
from fsaga.durable.errors import SagaParkedError as SagaParkedError
from fsaga.durable.errors import UnknownDefinitionError as UnknownDefinitionError
from fsaga.durable.parked import ParkedSaga as ParkedSaga
from fsaga.durable.runs import DurableSagas as DurableSagas
from fsaga.durable.worker import WorkerReport as WorkerReport

__all__ = [
    "ContextCarrier",
    "DefinitionConflictError",
    "DurableSagas",
    "NonDeterminismError",
    "ParkedSaga",
    "RecordedError",
    "SagaBusyError",
    "SagaDefinitions",
    "SagaParkedError",
    "UnknownDefinitionError",
    "WorkerReport",
]
