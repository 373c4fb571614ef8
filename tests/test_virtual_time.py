"""The asyncio event loop on virtual time (`tests/virtual_time.py`) the async tests run on."""

from __future__ import annotations

import selectors

import anyio
from virtual_time import VirtualTimeLoop


class WatchedLoop(VirtualTimeLoop):
    """A `VirtualTimeLoop` that notes every wait it asks of its selector: a positive one is
    real time spent."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        select = self._selector.select  # type: ignore[attr-defined]

        def watched(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            self.waits.append(timeout)
            return select(timeout)  # type: ignore[no-any-return]

        self._selector.select = watched  # type: ignore[attr-defined]


def test_a_cancelled_timer_does_not_make_the_loop_wait_for_real() -> None:
    """A deadline that was cancelled before it passed (an attempt that finished in time) leaves
    a cancelled timer in the loop's queue. The clock must jump past it to the next live timer
    at once: a jump to the cancelled one only would leave the loop to wait the rest for real."""
    loops: list[WatchedLoop] = []

    def make_loop() -> WatchedLoop:
        loops.append(WatchedLoop())
        return loops[-1]

    async def finish_in_time_then_sleep() -> float:
        with anyio.move_on_after(0.5):
            await anyio.sleep(0)
        await anyio.sleep(1.0)
        return anyio.current_time()

    now = anyio.run(
        finish_in_time_then_sleep, backend="asyncio", backend_options={"loop_factory": make_loop}
    )

    assert now == 1.0
    (loop,) = loops
    assert all(wait is None or wait <= 0 for wait in loop.waits), loop.waits
