"""Interpreters: the only place a saga's effects run.

`SyncInterpreter` runs a saga in the calling thread; `AsyncInterpreter` runs it on anyio
(asyncio or trio), with `par` branches concurrent and deadlines enforced. Every interpreter
drives the one `Engine`, which holds the semantics of a run; an interpreter only decides how an
effect is performed.
"""

from fsaga.interpreter.asynchronous import AsyncInterpreter as AsyncInterpreter
from fsaga.interpreter.asynchronous import in_worker_thread as in_worker_thread
from fsaga.interpreter.engine import BranchFailurePolicy as BranchFailurePolicy
from fsaga.interpreter.engine import CompensationPolicy as CompensationPolicy
from fsaga.interpreter.protocol import AsyncInterpreterProtocol as AsyncInterpreterProtocol
from fsaga.interpreter.protocol import Effect as Effect
from fsaga.interpreter.protocol import EffectKind as EffectKind
from fsaga.interpreter.protocol import Interpreter as Interpreter
from fsaga.interpreter.protocol import Perform as Perform
from fsaga.interpreter.sync import SyncInterpreter as SyncInterpreter

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
