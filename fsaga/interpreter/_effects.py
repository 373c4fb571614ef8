"""How a driver starts the effect a call stands for: one place for both interpreters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsaga.interpreter._call import ACTION, COMPENSATION, Call

if TYPE_CHECKING:
    from fsaga.interpreter._engine import Engine
    from fsaga.interpreter.protocol import Perform

__all__ = ["start_effect"]


def start_effect(engine: Engine[Any], call: Call, perform: Perform | None) -> object:
    """Call the action, compensation or unknown-outcome compensation `call` stands for (not a
    wait), through `perform` when one is given, and return what it returned: a value, or, for
    an async effect, the awaitable the driver awaits."""
    if perform is not None:
        return perform(engine.effect_of(call))
    kind = call.kind
    if kind is ACTION:
        return call.node.action()
    if kind is COMPENSATION:
        compensate = call.node.compensate
        assert compensate is not None
        return compensate(call.argument)
    on_unknown = call.node.on_unknown
    assert on_unknown is not None
    return on_unknown(engine.context_of(call))
