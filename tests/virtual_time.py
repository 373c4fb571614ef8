"""An asyncio event loop on virtual time, for tests: trio's `MockClock(autojump_threshold=0)`
for asyncio.

When no callback is ready to run, the loop's clock jumps straight to the next timer instead of
sleeping until it, so deadlines and sleeps take no real time and a run's timing is the same on
every machine. Only for tests: it reads two attributes private to `asyncio.BaseEventLoop`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import anyio
from trio.testing import MockClock

__all__ = ["Backend", "VirtualTimeLoop", "run_on_virtual_time"]

_T = TypeVar("_T")

Backend = Literal["asyncio", "trio"]


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `time()` only moves when every task waits on a timer."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 0.0

    def time(self) -> float:
        return self._virtual_now

    def _run_once(self) -> None:
        ready: object = getattr(self, "_ready", None)
        scheduled: object = getattr(self, "_scheduled", None)
        if not ready and isinstance(scheduled, list):
            # The earliest timer still to fire: a cancelled one (a deadline that was lifted in
            # time) stays queued until the loop drops it, and jumping only that far would leave
            # the loop to wait for the next live timer in real time.
            when = min((timer.when() for timer in scheduled if not timer.cancelled()), default=None)
            if when is not None and when > self._virtual_now:
                self._virtual_now = when
        super()._run_once()  # type: ignore[misc]


def run_on_virtual_time(backend: Backend, function: Callable[[], Awaitable[_T]]) -> _T:
    """Run `function` under `backend` on virtual time starting at 0: for a test that needs two
    deadlines to fall on exactly the same instant, which real time never guarantees."""
    if backend == "trio":
        return anyio.run(
            function, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)}
        )
    return anyio.run(function, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop})
