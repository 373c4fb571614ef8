"""Benchmarks of fsaga beside other saga libraries: the same 10-step saga, in one process.

Run it in a virtual environment of its own, so that the other libraries never become
dependencies of fsaga (from the repository's root)::

    python -m venv /tmp/peers
    /tmp/peers/bin/pip install -e . saga-py==1.1.0 larzstate==0.1.0 simple-saga==0.1.6 \\
        sagaz==1.5.0 dbos==3.4.0
    /tmp/peers/bin/python tests/benchmarks/bench_peers.py            # --quick for a short run

``--markdown`` prints the tables as Markdown; ``--write docs/performance.md`` puts them in that
page, between its ``<!-- bench_peers -->`` and ``<!-- /bench_peers -->`` lines. A library that
is not installed is skipped, with a line saying how to install it. Not part of the test suite:
it measures, it does not assert (except that every library does the same work, below).

The saga: 10 steps of no-op effects, each with a no-op compensation, built once and run many
times. On the success path all 10 actions run; on the failure path the 10th action raises and
the 9 before it are compensated, newest first. Before timing anything, the script runs each
library's saga once with effects that record their calls and checks the calls: 10 actions,
then (failure path) the compensations in reverse order.

Three tables, each timed in interleaved rounds (every contender once per round, in a rotating
order, so all see the same state of the machine); a figure is the median of the rounds:

- sync: a hand-written loop with try/except (``hand_written`` of ``bench_core.py``: the same
  baseline, so the figures agree), fsaga under ``SyncInterpreter``, saga-py, larzstate
  (in-memory checkpoints), simple-saga's ``SyncSaga``;
- async: a hand-written asyncio loop (``hand_written_async`` of ``bench_core.py``), fsaga under
  ``AsyncInterpreter`` on asyncio, simple-saga's ``Saga``, sagaz (with its default listeners,
  and with none), all with effects that return at once;
- durable: a hand-written loop committing one SQLite row per step and per compensation (WAL,
  ``synchronous=FULL``, as ``bench_durable.py``'s floor), fsaga's ``DurableSagas`` on
  ``SqliteJournal``, larzstate's ``FileStore`` (an fsync'd JSON file per checkpoint), DBOS on
  its SQLite system database. Files in the system's temporary directory.

A figure is the time of one run divided by its 10 steps (the failure path's run includes its 9
compensations), and its ratio to the hand-written loop of its table. The garbage collector is
off while a batch of runs is timed (as ``timeit`` does) and runs between batches. Logging is
off (``logging.disable``) for every library alike: importing sagaz configures the root logger to
print INFO lines, which the script undoes, and simple-saga and sagaz log every step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import importlib.metadata
import itertools
import logging
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal

from bench_core import (
    Declined,
    async_noop,
    async_undo,
    declined,
    hand_written,
    hand_written_async,
    noop,
    undo,
)
from bench_durable import Floor

from fsaga import Saga, Success, step
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter
from fsaga.journal import SqliteJournal

STEPS: Final = 10
PEERS: Final = {  # import name -> (distribution, the version measured)
    "saga": ("saga-py", "1.1.0"),
    "larzstate": ("larzstate", "0.1.0"),
    "simple_saga": ("simple-saga", "0.1.6"),
    "sagaz": ("sagaz", "1.5.0"),
    "dbos": ("dbos", "3.4.0"),
}
BEGIN: Final = "<!-- bench_peers -->"
END: Final = "<!-- /bench_peers -->"

Route = Literal["success", "failure"]
ROUTES: Final[tuple[Route, ...]] = ("success", "failure")
Table = Literal["sync", "async", "durable"]
Runner = Callable[[], Any]
"""Runs the saga once; returns True if it succeeded (an awaitable of it, for async ones)."""


# -- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effects:
    """The 10 actions and 10 compensations of one saga, in a library's calling convention."""

    actions: tuple[Callable[..., Any], ...]
    compensations: tuple[Callable[..., Any], ...]

    def pairs(self) -> list[tuple[Callable[..., Any], Callable[..., Any]]]:
        return list(zip(self.actions, self.compensations, strict=True))


@dataclass(frozen=True)
class NoOps:
    """A library's no-op action, compensation and failing action, in its calling convention."""

    action: Callable[..., Any]
    compensation: Callable[..., Any]
    failing: Callable[..., Any]

    def effects(self, route: Route) -> Effects:
        last = self.failing if route == "failure" else self.action
        return Effects((self.action,) * (STEPS - 1) + (last,), (self.compensation,) * STEPS)


def recording(tally: list[str], route: Route, *, asynchronous: bool) -> Effects:
    """Effects that append their calls to `tally`; they take any arguments, so they fit every
    library's calling convention."""

    def action(index: int) -> Callable[..., Any]:
        fails = route == "failure" and index == STEPS - 1

        def act(*_args: object, **_kwargs: object) -> None:
            tally.append(f"do {index}")
            if fails:
                raise Declined

        async def act_async(*args: object, **kwargs: object) -> None:
            act(*args, **kwargs)

        return act_async if asynchronous else act

    def compensation(index: int) -> Callable[..., Any]:
        def compensate(*_args: object, **_kwargs: object) -> None:
            tally.append(f"undo {index}")

        async def compensate_async(*args: object, **kwargs: object) -> None:
            compensate(*args, **kwargs)

        return compensate_async if asynchronous else compensate

    return Effects(
        tuple(action(index) for index in range(STEPS)),
        tuple(compensation(index) for index in range(STEPS)),
    )


def expected_calls(route: Route, *, undoes_failed_step: bool) -> list[str]:
    calls = [f"do {index}" for index in range(STEPS)]
    if route == "failure":
        undone = STEPS if undoes_failed_step else STEPS - 1
        calls += [f"undo {index}" for index in reversed(range(undone))]
    return calls


def with_kwargs(**_kwargs: object) -> None:
    return None


def declined_with_kwargs(**_kwargs: object) -> None:
    raise Declined


def with_context(_context: object) -> None:
    return None


def declined_with_context(_context: object) -> None:
    raise Declined


async def async_declined() -> None:
    raise Declined


async def async_with_context(_context: object) -> None:
    return None


async def async_declined_with_context(_context: object) -> None:
    raise Declined


PLAIN: Final = NoOps(noop, undo, declined)  # bench_core's effects
PLAIN_ASYNC: Final = NoOps(async_noop, async_undo, async_declined)


# -- contenders ---------------------------------------------------------------------------


@dataclass
class Contender:
    """One library (or one configuration of it) in one table."""

    name: str
    distribution: str
    """The package measured (its version is shown), or "" for a hand-written loop."""
    table: Table
    build: Callable[[Effects, Route], Runner]
    no_ops: NoOps
    undoes_failed_step: bool = False
    """The library also calls the failed step's own compensation (saga-py does)."""
    runners: dict[Route, Runner] = field(default_factory=dict)
    checks: dict[Route, tuple[list[str], Runner]] = field(default_factory=dict)

    @property
    def asynchronous(self) -> bool:
        return self.table == "async"

    def prepare(self) -> None:
        """Build the saga of each route: with no-op effects to time, with recording ones to
        check (all before `Durables.start`: DBOS takes its workflows before it launches)."""
        for route in ROUTES:
            self.runners[route] = self.build(self.no_ops.effects(route), route)
            tally: list[str] = []
            effects = recording(tally, route, asynchronous=self.asynchronous)
            self.checks[route] = (tally, self.build(effects, route))

    @property
    def version(self) -> str:
        return importlib.metadata.version(self.distribution) if self.distribution else ""


def fsaga_chain(effects: Effects) -> Saga[object]:
    """The saga of ``bench_core.chain``, from the given effects."""
    pairs = effects.pairs()
    saga: Saga[object] = step(pairs[0][0], pairs[0][1], name="s0")
    for index, (action, compensate) in enumerate(pairs[1:], start=1):
        saga = saga.then(step(action, compensate, name=f"s{index}"))
    return saga


def hand_sync(effects: Effects, _route: Route) -> Runner:
    listed = [(f"s{index}", a, c) for index, (a, c) in enumerate(effects.pairs())]
    return lambda: isinstance(hand_written(listed), Success)


def fsaga_sync(effects: Effects, _route: Route) -> Runner:
    saga, interpreter = fsaga_chain(effects), SyncInterpreter()
    return lambda: isinstance(saga.run(interpreter), Success)


def hand_async(effects: Effects, _route: Route) -> Runner:
    listed = [(f"s{index}", a, c) for index, (a, c) in enumerate(effects.pairs())]

    async def run() -> bool:
        return isinstance(await hand_written_async(listed), Success)

    return run


def fsaga_async(effects: Effects, _route: Route) -> Runner:
    saga, interpreter = fsaga_chain(effects), AsyncInterpreter()

    async def run() -> bool:
        return isinstance(await saga.run(interpreter), Success)

    return run


def saga_py(module: ModuleType) -> Callable[[Effects, Route], Runner]:
    def build(effects: Effects, _route: Route) -> Runner:
        builder = module.SagaBuilder.create()
        for action, compensate in effects.pairs():
            builder = builder.action(action, compensate)
        saga = builder.build()

        def run() -> bool:
            try:
                saga.execute()
            except module.SagaError:
                return False
            return True

        return run

    return build


def larzstate(module: ModuleType, store: Callable[[], Any]) -> Callable[[Effects, Route], Runner]:
    def build(effects: Effects, _route: Route) -> Runner:
        workflow = module.Workflow("ten", store=store())
        for index, (action, compensate) in enumerate(effects.pairs()):
            workflow.step(action, name=f"s{index}").compensate(compensate)
        run_ids = itertools.count()

        def run() -> bool:
            try:
                workflow.run(f"run-{next(run_ids)}", {})
            except module.WorkflowFailed:
                return False
            return True

        return run

    return build


def simple_saga_sync(module: ModuleType) -> Callable[[Effects, Route], Runner]:
    def build(effects: Effects, _route: Route) -> Runner:
        pairs = effects.pairs()
        sync_saga = module.SyncSaga

        def run() -> bool:
            try:
                with sync_saga() as saga:
                    for action, compensate in pairs:
                        saga.step(action=action, compensation=compensate)
            except Declined:
                return False
            return True

        return run

    return build


def simple_saga_async(module: ModuleType) -> Callable[[Effects, Route], Runner]:
    def build(effects: Effects, _route: Route) -> Runner:
        pairs = effects.pairs()
        async_saga = module.Saga

        async def run() -> bool:
            try:
                async with async_saga() as saga:
                    for action, compensate in pairs:
                        await saga.step(action=action, compensation=compensate)
            except Declined:
                return False
            return True

        return run

    return build


def sagaz(module: ModuleType, *, listeners: bool) -> Callable[[Effects, Route], Runner]:
    def build(effects: Effects, _route: Route) -> Runner:
        config = (
            module.SagaConfig() if listeners else module.SagaConfig(logging=False, metrics=False)
        )
        saga = module.Saga(name="ten", config=config)
        previous: list[str] | None = None
        for index, (action, compensate) in enumerate(effects.pairs()):
            saga.add_step(f"s{index}", action, compensate, depends_on=previous)
            previous = [f"s{index}"]

        async def run() -> bool:
            try:
                await saga.run({})
            except Declined:
                return False
            return True

        return run

    return build


# -- durable contenders -------------------------------------------------------------------


class Durables:
    """What the durable contenders share: a folder for their files, and DBOS's start."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names = itertools.count()
        self.closers: list[Callable[[], None]] = []
        self.dbos: ModuleType | None = None

    def path(self, prefix: str) -> Path:
        return self.folder / f"{prefix}-{next(self.names)}"

    def hand(self, effects: Effects, _route: Route) -> Runner:
        """A loop with try/except committing one row after each step and each compensation,
        with the journal's pragmas (``bench_durable.py``'s floor)."""
        floor = Floor(self.path("hand"), "FULL")
        self.closers.append(floor.close)
        execute = floor.connection.execute
        insert = (
            "INSERT INTO entries (saga_id, seq, kind, path, attempt, payload)"
            " VALUES (?, ?, ?, ?, 1, NULL)"
        )
        listed = [(f"s{index}", a, c) for index, (a, c) in enumerate(effects.pairs())]
        runs = itertools.count()

        def record(saga_id: str, seq: int, kind: str, path: str) -> None:
            execute("BEGIN IMMEDIATE")
            execute(insert, (saga_id, seq, kind, path))
            execute("COMMIT")

        def run() -> bool:
            saga_id = f"run-{next(runs)}"
            seq = itertools.count()
            done: list[tuple[str, Callable[..., Any], object]] = []
            try:
                for path, action, compensate in listed:
                    result = action()
                    record(saga_id, next(seq), "done", path)
                    done.append((path, compensate, result))
            except Exception:
                for path, compensate, result in reversed(done):
                    compensate(result)
                    record(saga_id, next(seq), "undone", path)
                return False
            return True

        return run

    def fsaga(self, effects: Effects, _route: Route) -> Runner:
        journal = SqliteJournal(self.path("fsaga"))
        self.closers.append(journal.close)
        definitions = SagaDefinitions()
        definitions.saga("ten")(lambda _input: fsaga_chain(effects))
        start = DurableSagas(journal, definitions).start
        runs = itertools.count()
        return lambda: isinstance(start("ten", None, saga_id=f"run-{next(runs)}"), Success)

    def larzstate_files(self, module: ModuleType) -> Callable[[Effects, Route], Runner]:
        return larzstate(module, lambda: module.FileStore(str(self.path("larzstate"))))

    def dbos_build(self, module: ModuleType) -> Callable[[Effects, Route], Runner]:
        """A DBOS workflow that runs each effect as a DBOS step and, in an ``except``, each
        compensation as a step too. Registered before `DBOS.launch`."""
        if self.dbos is None:
            self.dbos = module
            module.DBOS(
                config={
                    "name": "bench-peers",
                    "system_database_url": f"sqlite:///{self.folder / 'dbos.sqlite'}",
                    "log_level": "WARNING",
                }
            )

        def build(effects: Effects, route: Route) -> Runner:
            tag = next(self.names)
            actions = [
                module.DBOS.step(name=f"do-{tag}-{index}")(as_step(action))
                for index, action in enumerate(effects.actions)
            ]
            compensations = [
                module.DBOS.step(name=f"undo-{tag}-{index}")(as_compensation(compensation))
                for index, compensation in enumerate(effects.compensations)
            ]

            def ten() -> None:
                done: list[tuple[Callable[[object], None], object]] = []
                try:
                    for action, compensate in zip(actions, compensations, strict=True):
                        done.append((compensate, action()))
                except Exception:
                    for compensate, result in reversed(done):
                        compensate(result)
                    raise

            workflow = module.DBOS.workflow(name=f"ten-{route}-{tag}")(ten)
            set_id = module.SetWorkflowID
            runs = itertools.count()

            def run() -> bool:
                try:
                    with set_id(f"{route}-{tag}-{next(runs)}"):
                        workflow()
                except Declined:
                    return False
                return True

            return run

        return build

    def start(self) -> None:
        if self.dbos is not None:
            self.dbos.DBOS.launch()

    def close(self) -> None:
        for close in self.closers:
            close()
        if self.dbos is not None:
            self.dbos.DBOS.destroy()


def as_step(action: Callable[[], object]) -> Callable[[], object]:
    """`action` as a function object of its own (the no-op effects are one shared function),
    for DBOS to wrap as a step."""

    def do() -> object:
        return action()

    return do


def as_compensation(compensation: Callable[[object], object]) -> Callable[[object], None]:
    def undo_it(result: object) -> None:
        compensation(result)

    return undo_it


# -- the peers ----------------------------------------------------------------------------


def optional(module_name: str) -> ModuleType | None:
    distribution, version = PEERS[module_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        print(
            f"skipped {distribution}: not installed (pip install {distribution}=={version}, "
            "in a virtual environment of its own: see this script's docstring)"
        )
        return None
    installed = importlib.metadata.version(distribution)
    if installed != version:
        print(f"note: {distribution} {installed} is installed; the docs quote {version}")
    return module


def contenders(durables: Durables) -> list[Contender]:
    """Every contender whose library is installed, in table order."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saga, larz, simple, sagaz_module, dbos = (optional(name) for name in PEERS)
    # Importing sagaz calls logging.basicConfig (an INFO handler on the root logger): undo it.
    for handler in [handler for handler in root.handlers if handler not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.disable(logging.CRITICAL)

    with_kwargs_no_ops = NoOps(with_kwargs, with_kwargs, declined_with_kwargs)
    with_context_no_ops = NoOps(with_context, with_context, declined_with_context)
    found = [
        Contender("hand-written loop", "", "sync", hand_sync, PLAIN),
        Contender("fsaga, SyncInterpreter", "fsaga", "sync", fsaga_sync, PLAIN),
    ]
    if saga is not None:
        found.append(
            Contender("saga-py", "saga-py", "sync", saga_py(saga), with_kwargs_no_ops, True)
        )
    if larz is not None:
        in_memory = larzstate(larz, larz.MemoryStore)
        found.append(
            Contender("larzstate, MemoryStore", "larzstate", "sync", in_memory, with_context_no_ops)
        )
    if simple is not None:
        sync_saga = simple_saga_sync(simple)
        found.append(Contender("simple-saga, SyncSaga", "simple-saga", "sync", sync_saga, PLAIN))
    found += [
        Contender("hand-written asyncio loop", "", "async", hand_async, PLAIN_ASYNC),
        Contender("fsaga, AsyncInterpreter (asyncio)", "fsaga", "async", fsaga_async, PLAIN_ASYNC),
    ]
    if simple is not None:
        async_saga = simple_saga_async(simple)
        found.append(
            Contender("simple-saga, Saga", "simple-saga", "async", async_saga, PLAIN_ASYNC)
        )
    if sagaz_module is not None:
        with_context_async = NoOps(
            async_with_context, async_with_context, async_declined_with_context
        )
        for name, listeners in (
            ("sagaz, default config (listeners: logging, metrics)", True),
            ("sagaz, listeners off", False),
        ):
            build = sagaz(sagaz_module, listeners=listeners)
            found.append(Contender(name, "sagaz", "async", build, with_context_async))
    found += [
        Contender("hand-written loop, a commit per step", "", "durable", durables.hand, PLAIN),
        Contender(
            "fsaga, DurableSagas on SqliteJournal", "fsaga", "durable", durables.fsaga, PLAIN
        ),
    ]
    if larz is not None:
        files = durables.larzstate_files(larz)
        found.append(
            Contender("larzstate, FileStore", "larzstate", "durable", files, with_context_no_ops)
        )
    if dbos is not None:
        workflows = durables.dbos_build(dbos)
        found.append(Contender("DBOS, SQLite system database", "dbos", "durable", workflows, PLAIN))
    return found


# -- measuring ----------------------------------------------------------------------------


class Clock:
    """Times batches of runs, sync or async (in one event loop kept for the whole process)."""

    def __init__(self) -> None:
        self.loop = asyncio.Runner()

    def once(self, contender: Contender, runner: Runner) -> bool:
        if contender.asynchronous:
            return bool(self.loop.run(runner()))
        return bool(runner())

    def batch(self, contender: Contender, runner: Runner, number: int) -> float:
        """Seconds per run over `number` runs, the garbage collector off."""
        gc.collect()
        gc.disable()
        try:
            if contender.asynchronous:
                elapsed = self.loop.run(timed_async(runner, number))
            else:
                began = time.perf_counter()
                for _ in range(number):
                    runner()
                elapsed = time.perf_counter() - began
        finally:
            gc.enable()
        return elapsed / number

    def close(self) -> None:
        self.loop.close()


async def timed_async(runner: Callable[[], Awaitable[object]], number: int) -> float:
    began = time.perf_counter()
    for _ in range(number):
        await runner()
    return time.perf_counter() - began


def check(clock: Clock, table: list[Contender]) -> None:
    """Run each contender's saga once per route with recording effects; check the calls."""
    for contender in table:
        for route in ROUTES:
            tally, runner = contender.checks[route]
            succeeded = clock.once(contender, runner)
            expected = expected_calls(route, undoes_failed_step=contender.undoes_failed_step)
            assert succeeded == (route == "success"), (contender.name, route, succeeded)
            assert tally == expected, (contender.name, route, tally)
    print(f"checked: {len(table)} contenders make the same calls, in the same order")


def calibrate(clock: Clock, contender: Contender, runner: Runner, target: float) -> int:
    """How many runs make a batch of at least `target` seconds (the first batches warm up)."""
    number = 1
    while True:
        per_run = clock.batch(contender, runner, number)
        if per_run * number >= target / 2:
            return max(1, round(target / per_run))
        number *= 4


def measure(
    clock: Clock, table: list[Contender], rounds: int, target: float
) -> dict[tuple[str, Route], list[float]]:
    """Seconds per run of each contender and route, one figure per round."""
    cells = [(contender, route) for contender in table for route in ROUTES]
    numbers = {
        (contender.name, route): calibrate(clock, contender, contender.runners[route], target)
        for contender, route in cells
    }
    times: dict[tuple[str, Route], list[float]] = {key: [] for key in numbers}
    for round_number in range(rounds):
        shift = round_number % len(cells)
        for contender, route in cells[shift:] + cells[:shift]:
            key = (contender.name, route)
            times[key].append(clock.batch(contender, contender.runners[route], numbers[key]))
    return times


# -- reporting ----------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    system = platform.platform(terse=True)
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                system = line.split("=", 1)[1].strip('"')
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()} "
        f"({platform.python_implementation()}); {system}, {platform.machine()}; "
        f"SQLite {sqlite3.sqlite_version}"
    )


TITLES: Final[dict[Table, str]] = {
    "sync": "In memory, synchronous",
    "async": "In memory, asyncio (effects that return at once)",
    "durable": "Durable, on SQLite files (synchronous=FULL, or the library's default)",
}


def microseconds(seconds: float) -> str:
    figure = seconds * 1e6
    return f"{figure:,.2f}" if figure < 100 else f"{figure:,.0f}"


def rows(table: list[Contender], times: dict[tuple[str, Route], list[float]]) -> list[list[str]]:
    baseline = {route: statistics.median(times[(table[0].name, route)]) for route in ROUTES}
    result: list[list[str]] = []
    for contender in table:
        cells = [contender.name, contender.version or "-"]
        for route in ROUTES:
            per_run = statistics.median(times[(contender.name, route)])
            cells += [microseconds(per_run / STEPS), f"{per_run / baseline[route]:.2f}x"]
        result.append(cells)
    return result


HEADER: Final = [
    "library",
    "version",
    "success, µs/step",
    "ratio",
    "last step fails, µs/step",
    "ratio",
]


def plain(title: str, body: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in [HEADER, *body]) for column in range(len(HEADER))]
    lines = [title]
    for row in [HEADER, *body]:
        lines.append(
            "  "
            + "  ".join(
                cell.ljust(width) if column < 2 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def markdown(title: str, body: list[list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(HEADER) + " |", "|---|---|--:|--:|--:|--:|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def report(
    found: list[Contender],
    times: dict[tuple[str, Route], list[float]],
    rounds: dict[Table, int],
    *,
    as_markdown: bool,
) -> str:
    parts = [
        f"Measured on: {machine()}.",
        "Per step: the median over rounds of one run's time divided by its 10 steps; ratio: to "
        "the first row of its table ("
        + ", ".join(f"{table} {count} rounds" for table, count in rounds.items())
        + ").",
    ]
    for table in TITLES:
        members = [contender for contender in found if contender.table == table]
        body = rows(members, times)
        parts.append(markdown(TITLES[table], body) if as_markdown else plain(TITLES[table], body))
    return "\n\n".join(parts)


def write(page: Path, text: str) -> None:
    """Put `text` between the page's BEGIN and END lines."""
    content = page.read_text(encoding="utf-8")
    before, found_begin, rest = content.partition(BEGIN + "\n")
    _, found_end, after = rest.partition(END + "\n")
    if not found_begin or not found_end:
        raise SystemExit(f"{page} has no {BEGIN} ... {END} lines to write between")
    page.write_text(f"{before}{BEGIN}\n{text}\n{END}\n{after}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    parser.add_argument("--write", type=Path, help="write the Markdown tables into this page")
    args = parser.parse_args(argv)
    in_memory_rounds, durable_rounds = (5, 3) if args.quick else (15, 5)
    in_memory_target, durable_target = (0.02, 0.2) if args.quick else (0.1, 0.5)

    clock = Clock()
    with tempfile.TemporaryDirectory() as folder:
        durables = Durables(Path(folder))
        found = contenders(durables)
        for contender in found:
            contender.prepare()
        in_memory = [contender for contender in found if contender.table != "durable"]
        durable = [contender for contender in found if contender.table == "durable"]
        times: dict[tuple[str, Route], list[float]] = {}
        try:
            check(clock, in_memory)
            times |= measure(clock, in_memory, in_memory_rounds, in_memory_target)
            durables.start()  # after the in-memory tables: DBOS runs threads of its own
            check(clock, durable)
            times |= measure(clock, durable, durable_rounds, durable_target)
        finally:
            durables.close()
            clock.close()
    rounds: dict[Table, int] = {
        "sync": in_memory_rounds,
        "async": in_memory_rounds,
        "durable": durable_rounds,
    }
    as_markdown = args.markdown or args.write is not None
    text = report(found, times, rounds, as_markdown=as_markdown)
    if args.write is not None:
        write(args.write, text)
        print(f"wrote the tables into {args.write}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
