"""What cannot run on Temporal, found before a saga starts. Private to `fsaga.temporal`.

Every action, compensation and ``on_unknown`` of a saga that runs on Temporal must be an
`fsaga.temporal.activity`. The steps a saga holds as a value (its `then` chains, `par` branches,
named sub-sagas, timeouts) are checked here, before the workflow starts, with their paths as the
run will give them; the steps a ``bind`` function builds at run time are checked when the run
reaches them (the step then fails, saying the same).
"""

from __future__ import annotations

from typing import Any

from temporalio.converter import PayloadConverter

from fsaga._signatures import function_name
from fsaga.interpreter._fibers import Scope
from fsaga.saga import (
    BindNode,
    NamedNode,
    ParNode,
    PureNode,
    Saga,
    StepNode,
    TimeoutNode,
    sibling_name,
)
from fsaga.temporal._driver import NotAnActivityError
from fsaga.temporal.activities import Activity

__all__ = ["refuse_what_cannot_run"]


def refuse_what_cannot_run(saga: Saga[Any], name: str, converter: PayloadConverter) -> None:
    """Raise `NotAnActivityError` naming the first step of `saga` (as far as the saga shows its
    steps before it runs) whose effect is not an activity, or `TypeError` if an activity's own
    arguments cannot be encoded by `converter`."""
    # Iterative, in run order: a `then` chain of a million steps is a deep tree.
    pending: list[tuple[Saga[Any], Scope]] = [(saga, Scope(""))]
    while pending:
        node, scope = pending.pop()
        match node:
            case StepNode():
                path = scope.claim(node.name, explicit=False)
                _check_step(node, path, name, converter)
            case BindNode():
                continuation = node.continuation
                if isinstance(continuation, Saga):
                    pending.append((continuation, scope))
                pending.append((node.source, scope))
            case NamedNode():
                pending.append((node.inner, Scope(scope.claim(node.name, explicit=False))))
            case TimeoutNode():
                pending.append((node.inner, scope))
            case ParNode():
                for index in range(len(node.branches) - 1, -1, -1):
                    branch = node.branches[index]
                    inner = scope
                    if sibling_name(branch) is None:
                        inner = Scope(scope.claim(f"#{index}", explicit=False))
                    pending.append((branch, inner))
            case PureNode():
                pass
            case _:
                raise AssertionError(f"not a saga node: {node!r}")


def _check_step(node: StepNode[Any], path: str, name: str, converter: PayloadConverter) -> None:
    for what, effect in (
        ("action", node.action),
        ("compensation", node.compensate),
        ("on_unknown compensation", node.on_unknown),
    ):
        if effect is None:
            continue
        if not isinstance(effect, Activity):
            raise NotAnActivityError(
                f"saga {name!r} cannot run on Temporal: step {path!r}: its {what} "
                f"{_named(effect)} is not an fsaga.temporal.activity; every effect runs as an "
                "activity there: write it as activity(function, *args), with a module-level "
                "function registered with fsaga.temporal.worker(..., activities=[...])"
            )
        try:
            converter.to_payloads(list(effect.args))
        except Exception as error:
            raise TypeError(
                f"saga {name!r} cannot run on Temporal: step {path!r}: the arguments of its "
                f"{what} {effect.activity_name} cannot be encoded by the client's payload "
                f"converter: {error}"
            ) from error


def _named(effect: object) -> str:
    label = function_name(effect)
    return "(a lambda)" if label == "<lambda>" else label
