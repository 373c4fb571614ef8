"""The activity side: one dynamic Temporal activity that performs every effect of fsaga's sagas
on a worker, by calling the registered function its activity type names. Private to
`fsaga.temporal` (`fsaga.temporal.worker` registers it).

The activity's first argument is the step's context (saga id, path, attempt, kind): it is set
for the function as `fsaga.current_context()` reads it, so the function reads the step's
idempotency key (workflow id + path) as under any other interpreter. The rest are the function's
arguments, decoded by its annotations. A plain function runs in a worker thread, an ``async``
one in the worker's event loop; either way the activity heartbeats while it runs, so a worker
that dies is noticed within the run's heartbeat timeout (the step's outcome is then unknown,
contract rule 3). What the function raises fails the activity once (the engine decides about
retries), described so the workflow can rebuild the error; a result the payload converter cannot
encode would be lost after the effect took place, so the activity says its outcome is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from inspect import isawaitable, iscoroutinefunction
from types import FunctionType

from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from fsaga.context import StepContext, _running_effect
from fsaga.errors import UnknownOutcomeError
from fsaga.interpreter.results import PLAIN_TYPES, unwrap_result
from fsaga.temporal._wire import decode, effect_error, hints_of, read_header

__all__ = ["effect_activity"]

EffectActivity = Callable[[Sequence[RawValue]], Awaitable[RawValue]]


def effect_activity(functions: Mapping[str, FunctionType]) -> EffectActivity:
    """The dynamic activity that calls `functions` by activity type."""

    @activity.defn(dynamic=True)
    async def fsaga_effect(arguments: Sequence[RawValue]) -> RawValue:
        info = activity.info()
        name = info.activity_type
        function = functions.get(name)
        if function is None:
            raise ApplicationError(
                f"no function is registered as activity {name!r} on this worker: pass it to "
                f"fsaga.temporal.worker(..., activities=[...]) (registered: "
                f"{', '.join(sorted(functions)) or 'none'})",
                type="fsaga.UnregisteredActivity",
                non_retryable=True,
            )
        converter = activity.payload_converter()
        try:
            if not arguments:
                raise TypeError("this activity was not scheduled by an fsaga workflow")
            context = read_header(converter.from_payload(arguments[0].payload))
            values = _decoded(function, arguments[1:], context)
        except Exception as error:
            raise effect_error(error) from error
        beat = info.heartbeat_timeout
        heartbeats = None
        if beat is not None and beat.total_seconds() > 0:
            heartbeats = asyncio.create_task(_heartbeat(beat.total_seconds() / 3))
        try:
            result = await _call(function, values, context)
        except Exception as error:
            raise effect_error(error) from error
        finally:
            if heartbeats is not None:
                heartbeats.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeats
        try:
            return RawValue(converter.to_payload(result))
        except Exception as error:
            unknown = UnknownOutcomeError(
                f"step {context.path!r}: {name}() returned a value of type "
                f"{type(result).__qualname__} that the worker's payload converter cannot "
                f"encode ({error}); its effect took place but its result is lost"
            )
            raise effect_error(unknown) from error

    return fsaga_effect


def _decoded(
    function: FunctionType, arguments: Sequence[RawValue], context: StepContext
) -> list[object]:
    """The function's arguments: decoded by its parameters' annotations; an ``on_unknown``
    compensation gets the step's context last."""
    converter = activity.payload_converter()
    hints, _ = hints_of(function)
    values: list[object] = []
    for index, argument in enumerate(arguments):
        hint = hints[index] if index < len(hints) else None
        values.append(decode(converter, argument.payload, hint))
    if context.kind == "unknown":
        values.append(context)
    return values


async def _call(function: FunctionType, values: list[object], context: StepContext) -> object:
    """Call `function` with `values` as the step `context`'s effect, and return its result,
    awaited and unwrapped (a `returns` failure raises its error)."""
    token = _running_effect.set((context, context, context.kind, context.attempt))
    try:
        if iscoroutinefunction(function):
            result = await function(*values)
        else:
            # The context variable goes with the call into the thread.
            result = await asyncio.to_thread(function, *values)
        while isawaitable(result):
            result = await result
    finally:
        _running_effect.reset(token)
    if result is not None and type(result) not in PLAIN_TYPES:
        result, error = unwrap_result(context.path, result)
        if error is not None:
            raise error if isinstance(error, Exception) else RuntimeError(repr(error))
    return result


async def _heartbeat(interval: float) -> None:
    """Tell the server this worker is alive, every `interval` seconds, until cancelled."""
    while True:
        activity.heartbeat()
        await asyncio.sleep(interval)
