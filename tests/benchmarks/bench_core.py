"""Benchmarks of the core: fsaga against a hand-written loop doing the same work.

Run: ``.venv/bin/python tests/benchmarks/bench_core.py`` (add ``--quick`` for a short run: fewer
rounds, a 100,000-step chain). Not part of the test suite: it measures, it does not assert.

Every comparison is measured in this one process, in interleaved rounds: a round of fsaga and a
round of the baseline, of about the same length, alternate (which of the two goes first
alternates too), so both see the same state of the machine; a figure is the median of its
rounds, and a ratio is the ratio of the medians. The garbage collector runs as it does in a
program. The baseline is a plain Python loop
with try/except that runs the same no-op effects, records what it needs to undo them,
compensates in reverse on failure and returns a result value (`hand_written`).

Targets:

- a 10-step saga, on success and when its last step fails (9 undone): at most 3x the loop
  (stretch: 2x);
- a 1,000,000-step `then` chain, built and run with `SyncInterpreter`: at most 3x the loop making
  the same million calls (building its list of a million ``(name, action, compensate)`` entries,
  with the same names, then running it), and at most 300 bytes per step at the peak of the
  build and the run (tracemalloc);
- asyncio: a 10-step saga of async effects that return at once at most 3x a hand-written
  asyncio loop with try/except awaiting the same effects (measured too with effects that yield
  to the event loop once, as real I/O does, with the same target); `par` of 10,000 branches
  under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Final

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


TARGET: Final = 3.0
STRETCH: Final = 2.0
BYTES_PER_STEP: Final = 300


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def interleaved(
    ours: Callable[[], object], theirs: Callable[[], object], *, seconds: float, rounds: int
) -> tuple[float, float]:
    """Median seconds per call of `ours` and of `theirs`, over `rounds` rounds of each lasting
    about `seconds`, the two alternating (and which goes first alternating too).

    Rounds of the same length, not of the same number of calls: under a load that comes and
    goes, short rounds would more often miss it than long ones, which would favour the faster.
    """
    functions = (ours, theirs)
    numbers = [calls_lasting(function, seconds) for function in functions]
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(rounds):
        for which in (0, 1) if round_ % 2 == 0 else (1, 0):
            function, number = functions[which], numbers[which]
            started = time.perf_counter()
            for _ in range(number):
                function()
            times[which].append((time.perf_counter() - started) / number)
    return statistics.median(times[0]), statistics.median(times[1])


def calls_lasting(function: Callable[[], object], seconds: float) -> int:
    """About how many calls of `function` take `seconds`."""
    number = 1
    while True:
        started = time.perf_counter()
        for _ in range(number):
            function()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds / 10:
            return max(1, round(number * seconds / elapsed))
        number *= 2


def ratio_line(label: str, ours: float, theirs: float, *, stretch: float | None = None) -> str:
    ratio = ours / theirs
    goal = f"target <= {TARGET}x: {verdict(ratio <= TARGET)}"
    if stretch is not None:
        goal += f"; stretch <= {stretch}x: {verdict(ratio <= stretch)}"
    return (
        f"{label:<34} fsaga {ours * 1e6:7.2f} us   loop {theirs * 1e6:6.2f} us   "
        f"ratio {ratio:5.2f}x  ({goal})"
    )


def compare(
    label: str, saga: Saga[object], baseline: list[Effect], seconds: float, rounds: int
) -> None:
    interpreter = SyncInterpreter()
    assert type(saga.run(interpreter)) is type(hand_written(baseline))
    ours, theirs = interleaved(
        lambda: saga.run(interpreter),
        lambda: hand_written(baseline),
        seconds=seconds,
        rounds=rounds,
    )
    print(ratio_line(label, ours, theirs, stretch=STRETCH))


def build_and_run(steps: int) -> tuple[float, float]:
    """Seconds to build `chain(steps)`, and to run it with `SyncInterpreter`."""
    started = time.perf_counter()
    saga = chain(steps)
    built = time.perf_counter()
    outcome = saga.run(SyncInterpreter())
    ran = time.perf_counter()
    assert isinstance(outcome, Success), outcome
    return built - started, ran - built


def list_and_loop(steps: int) -> tuple[float, float]:
    """Seconds to build the list of `steps` effects, and to run `hand_written` over it."""
    started = time.perf_counter()
    listed = effects(steps)
    built = time.perf_counter()
    outcome = hand_written(listed)
    ran = time.perf_counter()
    assert isinstance(outcome, Success), outcome
    return built - started, ran - built


def million(steps: int, rounds: int) -> None:
    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    for round_ in range(rounds):
        for which in (0, 1) if round_ % 2 == 0 else (1, 0):
            gc.collect()  # the garbage of the other's round, out of this round's time
            if which == 0:
                ours.append(build_and_run(steps))
            else:
                theirs.append(list_and_loop(steps))
    gc.collect()

    tracemalloc.start()
    saga = chain(steps)
    built_bytes = tracemalloc.get_traced_memory()[0]
    outcome = saga.run(SyncInterpreter())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(outcome, Success)
    del saga, outcome
    gc.collect()

    def median(pairs: list[tuple[float, float]], index: int | None = None) -> float:
        return statistics.median(sum(pair) if index is None else pair[index] for pair in pairs)

    total, baseline = median(ours), median(theirs)
    ratio = total / baseline
    print(
        f"{steps:,}-step chain, built and run: fsaga {total:.2f} s "
        f"(build {median(ours, 0):.2f} + run {median(ours, 1):.2f})   "
        f"loop {baseline:.2f} s (list {median(theirs, 0):.2f} + run {median(theirs, 1):.2f})   "
        f"ratio {ratio:.2f}x  (target <= {TARGET}x: {verdict(ratio <= TARGET)})"
    )
    print(
        f"{steps:,}-step chain memory: {built_bytes / steps:.0f} bytes/step built, "
        f"{peak / steps:.0f} bytes/step at the peak of build and run "
        f"(target <= {BYTES_PER_STEP}: {verdict(peak / steps <= BYTES_PER_STEP)})"
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


async def async_interleaved(
    ours: Callable[[], Awaitable[object]],
    theirs: Callable[[], Awaitable[object]],
    *,
    seconds: float,
    rounds: int,
) -> tuple[float, float]:
    """`interleaved`, awaiting each call, in the running loop."""
    functions = (ours, theirs)
    numbers = [await async_calls_lasting(function, seconds) for function in functions]
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(rounds):
        for which in (0, 1) if round_ % 2 == 0 else (1, 0):
            function, number = functions[which], numbers[which]
            started = time.perf_counter()
            for _ in range(number):
                await function()
            times[which].append((time.perf_counter() - started) / number)
    return statistics.median(times[0]), statistics.median(times[1])


async def async_calls_lasting(function: Callable[[], Awaitable[object]], seconds: float) -> int:
    """`calls_lasting`, awaiting each call."""
    number = 1
    while True:
        started = time.perf_counter()
        for _ in range(number):
            await function()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds / 10:
            return max(1, round(number * seconds / elapsed))
        number *= 2


async def async_compare(
    label: str, action: Callable[[], Awaitable[None]], seconds: float, rounds: int
) -> None:
    saga: Saga[object] = step(action, async_undo, name="s0")
    for index in range(1, 10):
        saga = saga.then(step(action, async_undo, name=f"s{index}"))
    baseline: list[AsyncEffect] = [(f"s{index}", action, async_undo) for index in range(10)]
    interpreter = AsyncInterpreter()
    assert isinstance(await saga.run(interpreter), Success)
    ours, theirs = await async_interleaved(
        lambda: saga.run(interpreter),
        lambda: hand_written_async(baseline),
        seconds=seconds,
        rounds=rounds,
    )
    print(ratio_line(label, ours, theirs))


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
    seconds, rounds = (0.025, 7) if args.quick else (0.1, 15)
    steps, chain_rounds = (100_000, 3) if args.quick else (1_000_000, 5)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}; "
        f"medians of {rounds} interleaved rounds of {seconds * 1000:g} ms "
        f"({chain_rounds} rounds of one build and run for the chain)"
    )
    compare("10 steps, success", chain(10), effects(10), seconds, rounds)
    compare(
        "10 steps, last fails (9 undone)",
        chain(10, last=declined),
        effects(10, last=declined),
        seconds,
        rounds,
    )
    million(steps, chain_rounds)
    asyncio.run(async_compare("async, 10 steps returning at once", async_noop, seconds, rounds))
    asyncio.run(async_compare("async, 10 steps yielding once", async_yield, seconds, rounds))
    wide_par(10_000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
