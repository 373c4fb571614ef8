"""Benchmark of what tracing costs: nothing when it is off (against a baseline tree), and how much
per step when it is on.

Run: ``.venv/bin/python tests/benchmarks/bench_tracing.py BASELINE`` where BASELINE is the root
of another checkout of fsaga, the code path to compare with (``git worktree add /tmp/fsaga-main
main``); ``--quick`` for a short run. Without BASELINE only the cost of tracing when it is on is
measured. Not part of the test suite: it measures, it does not assert.

Off: the effect scopes that tracing is built on (`fsaga.events.EffectScope`) are checked for on
every effect of the general path, and never on the straight path of a plain chain. Each
workload runs in two long-lived interpreters, one per tree (this one and BASELINE, each first on
its own ``PYTHONPATH``), in interleaved rounds: a round of one tree, then of the other (which
goes first alternates every round), each round as many runs of the workload as take about
`seconds`; a pair's figure is the median of its rounds; and this for several pairs of fresh
interpreters (each pair with a hash seed of its own), a figure being the median of the pairs'
and a ratio the ratio of those. Rounds are
timed in CPU time of the process (`time.process_time`), not wall time: on a shared machine,
time spent waiting for a core is not the code's. Target: at most 1.02x the baseline for every
workload (2%).

The workloads, none of them traced:

- ``sync chain``: a 10-step ``then`` chain under `SyncInterpreter` (the straight path);
- ``sync listener``: the same chain with a listener that is not an effect scope (every step
  goes through the general driver, which looks for effect scopes);
- ``sync retry``: a step that fails once and is retried, then nine more, through a ``perform``
  function;
- ``async listener``: 10 async steps under `AsyncInterpreter` with a listener;
- ``async par``: a ``par`` of 10 async steps, which run in a task group.

On: the ``sync listener`` and ``async listener`` workloads traced (`fsaga.contrib.opentelemetry`)
into the SDK's ``TracerProvider`` with no span processor (the spans are made and ended, and go
nowhere), against the same without tracing, in this tree: the cost per step of the spans and
of making each one current while its effect runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Final

CURRENT_TREE: Final = Path(__file__).resolve().parents[2]
TARGET: Final = 1.02

WORKER: Final = r"""
import asyncio, sys, time
import fsaga
from fsaga import Retry, par, step
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter


def noop():
    return None


def undo(_):
    return None


async def async_noop():
    return None


def listen(event):
    return None


def chain(length, action=noop):
    saga = step(action, undo, name="s0")
    for index in range(1, length):
        saga = saga.then(step(action, undo, name=f"s{index}"))
    return saga


def flaky_chain():
    failures = []

    def flaky():
        if not failures:
            failures.append(1)
            raise ValueError("once")

    def reset():
        failures.clear()

    saga = step(reset, name="reset").then(
        step(flaky, undo, name="flaky", retry=Retry(2, delay=0.0, jitter=0.0))
    )
    return saga.then(chain(9))


def tracer(on):
    if not on:
        return ()
    from opentelemetry.sdk.trace import TracerProvider
    from fsaga.contrib.opentelemetry import tracing

    return (tracing(tracer_provider=TracerProvider()),)


def workloads(traced):
    extra = tracer(traced)
    sync_plain = SyncInterpreter()
    sync_listened = SyncInterpreter(listeners=(listen, *extra))
    sync_perform = SyncInterpreter(perform=lambda effect: effect.run(), sleep=lambda _: None)
    async_listened = AsyncInterpreter(listeners=(listen, *extra))
    async_plain = AsyncInterpreter()
    ten = chain(10)
    flaky = flaky_chain()
    async_ten = chain(10, async_noop)
    wide = par(*(step(async_noop, undo, name=f"b{index}") for index in range(10)))
    loop = asyncio.new_event_loop()

    def in_loop(interpreter, saga):
        return lambda: loop.run_until_complete(interpreter.run_saga(saga))

    return {
        "sync chain": lambda: sync_plain.run_saga(ten),
        "sync listener": lambda: sync_listened.run_saga(ten),
        "sync retry": lambda: sync_perform.run_saga(flaky),
        "async listener": in_loop(async_listened, async_ten),
        "async par": in_loop(async_plain, wide),
    }


table = {False: workloads(False)}
for line in sys.stdin:
    name, number, traced = line.rsplit(" ", 2)
    traced = traced.strip() == "on"
    if traced not in table:
        table[traced] = workloads(True)
    function = table[traced][name]
    number = int(number)
    started = time.process_time()
    for _ in range(number):
        function()
    print((time.process_time() - started) / number, flush=True)
"""

WORKLOADS: Final = ("sync chain", "sync listener", "sync retry", "async listener", "async par")


class Tree:
    """A long-lived interpreter running the workloads with one tree's fsaga."""

    def __init__(self, label: str, root: Path, *, seed: int) -> None:
        self.label = label
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env["PYTHONPATH"] = str(root)
        env["PYTHONHASHSEED"] = str(seed)
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            env=env,
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        where = subprocess.run(
            [sys.executable, "-c", "import fsaga; print(fsaga.__file__)"],
            env=env,
            cwd="/",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(where).resolve().is_relative_to(root.resolve()):
            raise SystemExit(f"{label}: fsaga was imported from {where}, not from {root}")

    def seconds_per_run(self, name: str, number: int, *, traced: bool = False) -> float:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{name} {number} {'on' if traced else 'off'}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def runs_lasting(self, name: str, seconds: float, *, traced: bool = False) -> int:
        number = 1
        while True:
            elapsed = self.seconds_per_run(name, number, traced=traced) * number
            if elapsed >= seconds / 10:
                return max(1, round(number * seconds / elapsed))
            number *= 2

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def interleaved(
    contenders: list[tuple[Tree, bool]], name: str, *, seconds: float, rounds: int
) -> list[float]:
    """Median seconds per run of workload `name` for each (tree, traced) contender."""
    numbers = [tree.runs_lasting(name, seconds, traced=traced) for tree, traced in contenders]
    for (tree, traced), number in zip(contenders, numbers, strict=True):  # warm-up
        tree.seconds_per_run(name, number, traced=traced)
    times: list[list[float]] = [[] for _ in contenders]
    order = list(range(len(contenders)))
    for round_ in range(rounds):
        for which in order if round_ % 2 == 0 else order[::-1]:
            tree, traced = contenders[which]
            times[which].append(tree.seconds_per_run(name, numbers[which], traced=traced))
    return [statistics.median(samples) for samples in times]


def compared(
    trees: tuple[Path, Path],
    traced: tuple[bool, bool],
    name: str,
    *,
    seconds: float,
    rounds: int,
    pairs: int,
) -> tuple[float, float]:
    """Seconds per run of workload `name` for two contenders (a tree, traced or not): the
    median, over `pairs` pairs of fresh interpreters, of each pair's interleaved medians.

    A process keeps whatever its memory layout and hash seed make of the code for as long as
    it lives, so one pair alone can favour either side by a percent or two; fresh pairs (each
    pair sharing a hash seed) spread that out instead of repeating it."""
    first: list[float] = []
    second: list[float] = []
    for seed in range(pairs):
        contenders = [Tree(f"tree {index}", tree, seed=seed) for index, tree in enumerate(trees)]
        try:
            ours, theirs = interleaved(
                list(zip(contenders, traced, strict=True)), name, seconds=seconds, rounds=rounds
            )
        finally:
            for contender in contenders:
                contender.close()
        first.append(ours)
        second.append(theirs)
    return statistics.median(first), statistics.median(second)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("baseline", nargs="?", type=Path, help="root of the tree to compare with")
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument(
        "--only", action="append", choices=WORKLOADS, help="measure this workload (repeatable)"
    )
    parser.add_argument("--off-only", action="store_true", help="skip the figures of tracing on")
    parser.add_argument("--pairs", type=int, help="pairs of processes per figure (default 11)")
    args = parser.parse_args(argv)
    seconds, rounds, pairs = (0.02, 9, 1) if args.quick else (0.03, 41, 11)
    pairs = args.pairs or pairs
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}; medians "
        f"over {pairs} pairs of processes of their medians of {rounds} interleaved rounds of "
        f"about {seconds * 1000:g} ms"
    )
    if args.baseline is not None:
        print(f"\nTracing off, against {args.baseline} (target <= {TARGET}x):")
        for name in args.only or WORKLOADS:
            ours, theirs = compared(
                (CURRENT_TREE, args.baseline),
                (False, False),
                name,
                seconds=seconds,
                rounds=rounds,
                pairs=pairs,
            )
            ratio = ours / theirs
            verdict = "meets" if round(ratio, 3) <= TARGET else "MISSES"
            print(
                f"  {name:<15} {ours * 1e6:8.2f} µs  baseline {theirs * 1e6:8.2f} µs  "
                f"ratio {ratio:.3f}x  ({verdict})"
            )
    if args.off_only:
        return 0
    print("\nTracing on (SDK, no span processor), against off, in this tree, per step:")
    for name in ("sync listener", "async listener"):
        on, off = compared(
            (CURRENT_TREE, CURRENT_TREE),
            (True, False),
            name,
            seconds=seconds,
            rounds=rounds,
            pairs=pairs,
        )
        print(
            f"  {name:<15} on {on * 1e5:6.2f} µs  off {off * 1e5:6.2f} µs  "
            f"+{(on - off) * 1e5:.2f} µs per step"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
