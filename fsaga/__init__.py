"""fsaga: typed, functional sagas.

A saga is an operation over several stores or services, made safe without a distributed
transaction by pairing every step with a compensation. Build one as a value, run it with an
interpreter, and get back `Success`, `Failure` (everything completed was undone) or
`PartialFailure` (the undo is incomplete, and the outcome says exactly where).

>>> import fsaga
>>> from fsaga.interpreter import SyncInterpreter
>>> saga = fsaga.step(lambda: 1).then(fsaga.step(lambda: 2)).map(lambda n: n * 10)
>>> saga.run(SyncInterpreter())
Success(value=20)
"""

from typing import TYPE_CHECKING

from fsaga import _lazy
from fsaga.context import StepContext as StepContext
from fsaga.context import current_context as current_context
from fsaga.errors import BranchCancelledError as BranchCancelledError
from fsaga.errors import DuplicateStepNameError as DuplicateStepNameError
from fsaga.errors import NonRetryableError as NonRetryableError
from fsaga.errors import ResultRejectedError as ResultRejectedError
from fsaga.errors import ReturnedFailure as ReturnedFailure
from fsaga.errors import StepTimeoutError as StepTimeoutError
from fsaga.errors import UnknownOutcomeError as UnknownOutcomeError
from fsaga.policy import Retry as Retry
from fsaga.policy import RetryOn as RetryOn
from fsaga.saga import Saga as Saga
from fsaga.saga import par as par
from fsaga.saga import pure as pure
from fsaga.saga import sequence as sequence
from fsaga.saga import step as step
from fsaga.saga import traverse as traverse

# What building a saga does not need loads on first use: the engine with `SyncInterpreter`,
# anyio with `AsyncInterpreter` (code that runs sagas only with `SyncInterpreter` never pays for
# it), the outcomes, the events and the interpreter protocols with their names. Type checkers
# see plain re-exports.
if TYPE_CHECKING:
    from fsaga.events import CompensationCompleted as CompensationCompleted
    from fsaga.events import CompensationFailed as CompensationFailed
    from fsaga.events import CompensationRetrying as CompensationRetrying
    from fsaga.events import CompensationStarted as CompensationStarted
    from fsaga.events import Event as Event
    from fsaga.events import Listener as Listener
    from fsaga.events import SagaFinished as SagaFinished
    from fsaga.events import SagaStarted as SagaStarted
    from fsaga.events import SagaStopped as SagaStopped
    from fsaga.events import StepCompleted as StepCompleted
    from fsaga.events import StepFailed as StepFailed
    from fsaga.events import StepRetrying as StepRetrying
    from fsaga.events import StepStarted as StepStarted
    from fsaga.interpreter.asynchronous import AsyncInterpreter as AsyncInterpreter
    from fsaga.interpreter.asynchronous import in_worker_thread as in_worker_thread
    from fsaga.interpreter.protocol import AsyncInterpreterProtocol as AsyncInterpreterProtocol
    from fsaga.interpreter.protocol import Effect as Effect
    from fsaga.interpreter.protocol import Interpreter as Interpreter
    from fsaga.interpreter.protocol import Perform as Perform
    from fsaga.interpreter.sync import SyncInterpreter as SyncInterpreter
    from fsaga.outcome import CompensationFailure as CompensationFailure
    from fsaga.outcome import Failure as Failure
    from fsaga.outcome import Outcome as Outcome
    from fsaga.outcome import PartialFailure as PartialFailure
    from fsaga.outcome import SagaFailed as SagaFailed
    from fsaga.outcome import Success as Success
else:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "AsyncInterpreter": "fsaga.interpreter.asynchronous",
            "in_worker_thread": "fsaga.interpreter.asynchronous",
            "SyncInterpreter": "fsaga.interpreter.sync",
            "CompensationCompleted": "fsaga.events",
            "CompensationFailed": "fsaga.events",
            "CompensationRetrying": "fsaga.events",
            "CompensationStarted": "fsaga.events",
            "Event": "fsaga.events",
            "Listener": "fsaga.events",
            "SagaFinished": "fsaga.events",
            "SagaStarted": "fsaga.events",
            "SagaStopped": "fsaga.events",
            "StepCompleted": "fsaga.events",
            "StepFailed": "fsaga.events",
            "StepRetrying": "fsaga.events",
            "StepStarted": "fsaga.events",
            "AsyncInterpreterProtocol": "fsaga.interpreter.protocol",
            "Effect": "fsaga.interpreter.protocol",
            "Interpreter": "fsaga.interpreter.protocol",
            "Perform": "fsaga.interpreter.protocol",
            "CompensationFailure": "fsaga.outcome",
            "Failure": "fsaga.outcome",
            "Outcome": "fsaga.outcome",
            "PartialFailure": "fsaga.outcome",
            "SagaFailed": "fsaga.outcome",
            "Success": "fsaga.outcome",
        },
    )

__version__ = "0.1.0"
"""fsaga's version: the one place it is written (the build reads it, as `fsaga --version` does)."""

__all__ = [
    "AsyncInterpreter",
    "AsyncInterpreterProtocol",
    "BranchCancelledError",
    "CompensationCompleted",
    "CompensationFailed",
    "CompensationFailure",
    "CompensationRetrying",
    "CompensationStarted",
    "DuplicateStepNameError",
    "Effect",
    "Event",
    "Failure",
    "Interpreter",
    "Listener",
    "NonRetryableError",
    "Outcome",
    "PartialFailure",
    "Perform",
    "ResultRejectedError",
    "Retry",
    "RetryOn",
    "ReturnedFailure",
    "Saga",
    "SagaFailed",
    "SagaFinished",
    "SagaStarted",
    "SagaStopped",
    "StepCompleted",
    "StepContext",
    "StepFailed",
    "StepRetrying",
    "StepStarted",
    "StepTimeoutError",
    "Success",
    "SyncInterpreter",
    "UnknownOutcomeError",
    "current_context",
    "in_worker_thread",
    "par",
    "pure",
    "sequence",
    "step",
    "traverse",
]
