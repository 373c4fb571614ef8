"""Benchmarks of the core: fsaga against a hand-written loop doing the same work.

Run: ``.venv/bin/python tests/benchmarks/bench_core.py`` (add ``--quick`` for a short run).
Not part of the test suite: it measures, it does not assert. Every figure is measured in this one
process; ratios compare fsaga with a plain Python loop with try/except that runs the same no-op
effects, records what it needs to undo them, compensates in reverse on failure and returns a
result value.

Targets: success path <= 3x the loop, failure path <= 2.5x, a 1,000,000-step chain built
and run in under 3 s each, at most 500 bytes per step.

Targets (asyncio): a 10-step saga of async effects at most 3x a hand-written asyncio loop
with try/except awaiting the same effects (measured with effects that return at once, and with
effects that yield to the event loop once, as real I/O does); `par` of 10,000 branches under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import sys
import time
import timeit
import tracemalloc
from collections.abc import Awaitable, Callable

from fsaga import Failure, Saga, Success, par, step
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter


def noop() -> None:
    return None


def undo(_result: object) -> None:
    return None


class Declined(Exception):
    pass


def declined() -> None:
    raise Declined


Effect = tuple[str, Callable[[], object], Callable[[object], object]]


def hand_written(effects: list[Effect]) -> object:
    """What a careful developer writes without a library: the baseline."""
    done: list[tuple[str, Callable[[object], object], object]] = []
    try:
        result: object = None
        for name, action, compensate in effects:
            result = action()
            done.append((name, compensate, result))
    except Exception as error:
        compensated: list[str] = []
        for name, compensate, value in reversed(done):
            compensate(value)
            compensated.append(name)
        return Failure(error, tuple(compensated))
    return Success(result)


def chain(length: int, *, last: Callable[[], object] = noop) -> Saga[object]:
    saga: Saga[object] = step(noop, undo, name="s0")
    for index in range(1, length - 1):
        saga = saga.then(step(noop, undo, name=f"s{index}"))
    return saga.then(step(last, undo, name=f"s{length - 1}"))


def effects(length: int, *, last: Callable[[], object] = noop) -> list[Effect]:
    listed: list[Effect] = [(f"s{index}", noop, undo) for index in range(length - 1)]
    return [*listed, (f"s{length - 1}", last, undo)]


def best_of(function: Callable[[], object], *, number: int, repeat: int) -> float:
    """Seconds per call: the best of `repeat` rounds of `number` calls (least noise)."""
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number


def compare(label: str, saga: Saga[object], baseline: list[Effect], target: float, n: int) -> None:
    interpreter = SyncInterpreter()
    assert type(saga.run(interpreter)) is type(hand_written(baseline))
    ours = best_of(lambda: saga.run(interpreter), number=n, repeat=7)
    theirs = best_of(lambda: hand_written(baseline), number=n, repeat=7)
    ratio = ours / theirs
    verdict = "meets" if ratio <= target else "MISSES"
    print(
        f"{label:<34} fsaga {ours * 1e6:7.2f} us   loop {theirs * 1e6:6.2f} us   "
        f"ratio {ratio:5.2f}x  (target <= {target}x: {verdict})"
    )


def million(steps: int) -> None:
    gc.collect()
    started = time.perf_counter()
    saga = chain(steps)
    built = time.perf_counter()
    outcome = saga.run(SyncInterpreter())
    ran = time.perf_counter()
    assert isinstance(outcome, Success), outcome
    build_s, run_s = built - started, ran - built
    del saga, outcome
    gc.collect()

    tracemalloc.start()
    saga = chain(steps)
    after_build = tracemalloc.get_traced_memory()[1]
    outcome = saga.run(SyncInterpreter())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(outcome, Success)
    del saga, outcome

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    print(
        f"{steps:,}-step chain: build {build_s:.2f} s ({verdict(build_s < 3)}), "
        f"run {run_s:.2f} s ({verdict(run_s < 3)}); target < 3 s each"
    )
    print(
        f"{steps:,}-step chain memory: {after_build / steps:.0f} bytes/step built, "
        f"{peak / steps:.0f} bytes/step peak while running "
        f"({verdict(peak / steps <= 500)}; target <= 500)"
    )


async def async_noop() -> None:
    return None


async def async_yield() -> None:
    await asyncio.sleep(0)


async def async_undo(_result: object) -> None:
    return None


AsyncEffect = tuple[str, Callable[[], Awaitable[object]], Callable[[object], Awaitable[object]]]


async def hand_written_async(effects: list[AsyncEffect]) -> object:
    """The async baseline: the same loop, awaiting each effect."""
    done: list[tuple[str, Callable[[object], Awaitable[object]], object]] = []
    try:
        result: object = None
        for name, action, compensate in effects:
            result = await action()
            done.append((name, compensate, result))
    except Exception as error:
        compensated: list[str] = []
        for name, compensate, value in reversed(done):
            await compensate(value)
            compensated.append(name)
        return Failure(error, tuple(compensated))
    return Success(result)


async def async_best_of(function: Callable[[], Awaitable[object]], *, number: int) -> float:
    """Seconds per call, best of 7 rounds of `number` awaited calls, in the running loop."""
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(number):
            await function()
        best = min(best, time.perf_counter() - started)
    return best / number


async def async_compare(label: str, action: Callable[[], Awaitable[None]], n: int) -> None:
    saga: Saga[object] = step(action, async_undo, name="s0")
    for index in range(1, 10):
        saga = saga.then(step(action, async_undo, name=f"s{index}"))
    baseline: list[AsyncEffect] = [(f"s{index}", action, async_undo) for index in range(10)]
    interpreter = AsyncInterpreter()
    assert isinstance(await saga.run(interpreter), Success)
    ours = await async_best_of(lambda: saga.run(interpreter), number=n)
    theirs = await async_best_of(lambda: hand_written_async(baseline), number=n)
    ratio = ours / theirs
    verdict = "meets" if ratio <= 3.0 else "MISSES"
    print(
        f"{label:<34} fsaga {ours * 1e6:7.2f} us   loop {theirs * 1e6:6.2f} us   "
        f"ratio {ratio:5.2f}x  (target <= 3.0x: {verdict})"
    )


def wide_par(branches: int) -> None:
    saga = par(*(step(async_yield, async_undo) for _ in range(branches)))
    gc.collect()
    started = time.perf_counter()
    outcome = asyncio.run(AsyncInterpreter().run_saga(saga))
    elapsed = time.perf_counter() - started
    assert isinstance(outcome, Success)
    gc.collect()
    tracemalloc.start()
    asyncio.run(AsyncInterpreter().run_saga(saga))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    verdict = "meets" if elapsed < 1.0 else "MISSES"
    print(
        f"par of {branches:,} async branches: {elapsed:.2f} s ({verdict}; target < 1 s), "
        f"peak {peak / 2**20:.1f} MiB ({peak / branches:.0f} bytes/branch)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, a 100,000-step chain")
    args = parser.parse_args(argv)
    n = 2_000 if args.quick else 20_000
    print(f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}")
    compare("10 steps, success", chain(10), effects(10), 3.0, n)
    compare(
        "10 steps, last fails (9 undone)",
        chain(10, last=declined),
        effects(10, last=declined),
        2.5,
        n,
    )
    million(100_000 if args.quick else 1_000_000)
    asyncio.run(async_compare("async, 10 steps returning at once", async_noop, n // 4))
    asyncio.run(async_compare("async, 10 steps yielding once", async_yield, n // 4))
    wide_par(10_000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
