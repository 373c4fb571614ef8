"""Interpreters: the only place a saga's effects run.

`SyncInterpreter` runs a saga in the calling thread; `AsyncInterpreter` runs it on anyio
(asyncio or trio), with `par` branches concurrent and deadlines enforced. Every interpreter
drives the one `Engine`, which holds the semantics of a run; an interpreter only decides how an
effect is performed.
"""

from typing import TYPE_CHECKING

from fsaga import _lazy
from fsaga.interpreter.protocol import AsyncInterpreterProtocol as AsyncInterpreterProtocol
from fsaga.interpreter.protocol import Effect as Effect
from fsaga.interpreter.protocol import EffectKind as EffectKind
from fsaga.interpreter.protocol import Interpreter as Interpreter
from fsaga.interpreter.protocol import Perform as Perform
from fsaga.interpreter.settings import BranchFailurePolicy as BranchFailurePolicy
from fsaga.interpreter.settings import CompensationPolicy as CompensationPolicy

# The interpreters load on first use: the engine with `SyncInterpreter`, anyio with
# `AsyncInterpreter`, so building sagas costs neither, and code that runs sagas only with
# `SyncInterpreter` never pays for anyio. Type checkers see plain re-exports.
if TYPE_CHECKING:
    from fsaga.interpreter.asynchronous import AsyncInterpreter as AsyncInterpreter
    from fsaga.interpreter.asynchronous import in_worker_thread as in_worker_thread
    from fsaga.interpreter.sync import SyncInterpreter as SyncInterpreter
else:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "AsyncInterpreter": "fsaga.interpreter.asynchronous",
            "in_worker_thread": "fsaga.interpreter.asynchronous",
            "SyncInterpreter": "fsaga.interpreter.sync",
            "sync": "fsaga.interpreter.sync",
            "asynchronous": "fsaga.interpreter.asynchronous",
        },
    )

__all__ = [
    "AsyncInterpreter",
    "AsyncInterpreterProtocol",
    "BranchFailurePolicy",
    "CompensationPolicy",
    "Effect",
    "EffectKind",
    "Interpreter",
    "Perform",
    "SyncInterpreter",
    "in_worker_thread",
]
