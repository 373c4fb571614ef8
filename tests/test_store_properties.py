"""The promise of `fsaga.stores`, as hypothesis properties: after a saga fails, every store holds
exactly what it held before (contract rule 14), and a write someone else made meanwhile
survives and is reported.

Each example opens 1 to 4 stores, each a `MemoryStore`, a `SqliteStore` (in files of one
temporary directory; stores may share a file), a `PostgresStore` (in one of two schemas on the
session's server; stores may share a schema) or a `RedisStore` (under one of two key prefixes
on the session's server), filled over a small key alphabet so that writes
collide, with JSON-shaped values, some of them deleted again (so that a key may start in state
`Deleted`). It generates up to 12 operations (saves, some of them conditional; updates;
deletes; reads; ordinary steps), builds them with `transaction` (named or not; alone, inside an
outer saga, or as a `par` branch) and runs them under the sync or the async interpreter,
sometimes a recording one whose trace `check_run` checks, and whose receipts (what each store
step records) are checked against the model.

A small model (`simulate`, then `predict`) says what must happen: each step's path, result,
`Change` and receipt, the error that ends the run, the compensations in order, the conflicts,
and every key's final state. A key's state is a `Versioned` value, `Deleted(version)` (a
delete of a key that held a value takes the next version of the store's counter) or nothing (it
never held a value); a delete of a key without a value changes nothing and takes no version.
The stores are compared with it row by row, versions included: a `SqliteStore` or a
`PostgresStore` through a connection of its own (``SELECT key, value, version``, the value as
raw bytes, and its rows of ``fsaga_store_deletions``), a `RedisStore` through a client of its
own (its hashes of values and versions), a `MemoryStore` through `snapshot` (its deletions,
which it does not show, through what a delete of each key without a value reports:
``Change(s, s)``). Without the servers' binaries the examples draw no database stores (under
``CI=true`` the properties fail instead, as every test needing a server does).

- Restore: one failure (a step that raises, a `FaultPlan` failing a step, a conditional write
  that conflicts, an update of a missing or deleted key, an update whose function fails, a
  failure after the transaction): the outcome is `Failure`, it lists the completed writes in
  reverse, and every store holds its old rows and deletion records, byte for byte.
- Success: without a failure, the stores hold what the operations wrote, and the saga returns
  what each one did.
- Concurrent writer: a plain step writes one key outside the saga (for a database store through
  another connection), then the saga fails. That key keeps the other write (its value, or its
  deletion); each saga write of it made before that changed it is reported as a
  `VersionConflictError`, but one that found no value, when the other write was a delete (no
  value either way: its undo has nothing to do); everything else is restored. The explicit
  examples `_DELETED_RECREATED_THEN_DELETED` and `_CREATED_DELETED_RECREATED_THEN_DELETED`
  are the regressions of the bug deletion versions fixed (see there).
- Durable: the restore and success cases run by `DurableSagas`, the process killed at a
  journal write and recovered: the stores end exactly as after a run without a crash (rows,
  deletion records and version counters), so no write was applied twice and none was lost.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal, NoReturn, TypeAlias, TypeVar

import anyio
import psycopg
import psycopg_pool
import pytest
import redis
from crashing_journal import Crash, CrashingJournal
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from psycopg import sql
from servers import PostgresServer
from store_backends import unique

from fsaga import Failure, Outcome, PartialFailure, Saga, Success, par, sequence, step
from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.durable.errors import describe_error
from fsaga.interpreter import AsyncInterpreter, SyncInterpreter
from fsaga.journal import Journal, JsonCodec, MemoryJournal, SqliteJournal
from fsaga.stores import (
    ABSENT,
    Change,
    Deleted,
    Expected,
    MemoryStore,
    MissingKeyError,
    PostgresStore,
    RedisStore,
    SqliteStore,
    Store,
    Transaction,
    VersionConflictError,
    Versioned,
    transaction,
)
from fsaga.testing import (
    AsyncFaultInjectingInterpreter,
    FaultInjectingInterpreter,
    FaultPlan,
    InjectedFault,
    RecordedEffect,
    check_run,
)

_T = TypeVar("_T")

Json: TypeAlias = "int | str | list[Json] | dict[str, Json] | None"
AnyStore: TypeAlias = (
    "MemoryStore[str, Json] | SqliteStore[str, Json] | PostgresStore[str, Json] "
    "| RedisStore[str, Json]"
)
State: TypeAlias = "Versioned[Json] | Deleted | None"
"""A key's state: its value and version, the version of the deletion that left it without a
value, or ``None`` (it never held a value)."""
Row: TypeAlias = tuple[str, object, int]
"""A store's row as the test reads it: key, value (its raw bytes, for SQLite), version."""
Deletion: TypeAlias = tuple[str, int]
"""A store's deletion record as the test reads it: key, version of the deletion."""

StoreKind: TypeAlias = Literal["memory", "sqlite", "postgres", "redis"]
ShapeKind: TypeAlias = Literal["alone", "nested", "par"]
Runner: TypeAlias = Literal["sync", "async"]
JournalKind: TypeAlias = Literal["memory", "sqlite"]

KEYS = ("a", "b", "c", "d", "e")
LOCAL_KINDS: tuple[StoreKind, ...] = ("memory", "sqlite")
DATABASE_KINDS: tuple[StoreKind, ...] = ("postgres", "redis")
SHAPE_KINDS: tuple[ShapeKind, ...] = ("alone", "nested", "par")
RUNNERS: tuple[Runner, ...] = ("sync", "sync", "async")  # a third of the runs are async
JOURNAL_KINDS: tuple[JournalKind, ...] = ("memory", "sqlite")
CODEC = JsonCodec()


# -- values and the functions updates apply -------------------------------------------------


class Boom(Exception):
    """The failure an ordinary step raises."""


class NotANumber(Exception):
    """`Add` was given something else than an int."""


@dataclass(frozen=True)
class Add:
    amount: int

    def __call__(self, value: Json) -> Json:
        if not isinstance(value, int):
            raise NotANumber(f"cannot add {self.amount} to {value!r}")
        return value + self.amount


@dataclass(frozen=True)
class Wrap:
    def __call__(self, value: Json) -> Json:
        return [value]


@dataclass(frozen=True)
class Tag:
    label: str

    def __call__(self, value: Json) -> Json:
        return {"tag": self.label, "was": value}


Function: TypeAlias = Add | Wrap | Tag

SCALARS: st.SearchStrategy[Json] = st.one_of(
    st.integers(-20, 20), st.integers(-20, 20), st.text("xyé", max_size=3), st.none()
)


def containers(items: st.SearchStrategy[Json]) -> st.SearchStrategy[Json]:
    return st.one_of(
        st.lists(items, max_size=3), st.dictionaries(st.sampled_from(("p", "q")), items, max_size=2)
    )


JSON_VALUES: st.SearchStrategy[Json] = st.one_of(
    SCALARS, SCALARS, containers(st.one_of(SCALARS, containers(SCALARS)))
)
"""Small JSON values: often ints (which `Add` can update), sometimes nested two deep."""


def functions(value: Json) -> st.SearchStrategy[Function]:
    """Update functions that succeed on `value`."""
    total: st.SearchStrategy[Function] = st.one_of(
        st.just(Wrap()), st.builds(Tag, st.sampled_from(("t", "u")))
    )
    if isinstance(value, int):
        return st.one_of(st.builds(Add, st.integers(-5, 5)), total)
    return total


# -- what a case is -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSpec:
    """One store: its kind, the database it shares (an SQLite file, a PostgreSQL schema, a
    Redis prefix), what it holds at first (in order), and which of those keys are deleted again
    then (in order), each deletion with a version."""

    kind: StoreKind
    initial: tuple[tuple[str, Json], ...] = ()
    database: int = 0
    deleted: tuple[str, ...] = ()


Condition: TypeAlias = Literal["none", "absent", "current", "wrong"]
"""What a conditional write expects, resolved by the model when the saga is built: nothing,
`ABSENT`, the key's version at that point (`ABSENT` when it holds nothing), or another one."""


@dataclass(frozen=True)
class Save:
    store: int
    key: str
    value: Json
    condition: Condition = "none"
    named: bool = False


@dataclass(frozen=True)
class Delete:
    store: int
    key: str
    condition: Condition = "none"
    named: bool = False


@dataclass(frozen=True)
class Update:
    store: int
    key: str
    function: Function
    named: bool = False


@dataclass(frozen=True)
class Read:
    store: int
    key: str
    named: bool = False


@dataclass(frozen=True)
class Note:
    """An ordinary step (no compensation) that returns its tag."""

    tag: str
    named: bool = False


@dataclass(frozen=True)
class Fail:
    """An ordinary step that raises `Boom`."""

    message: str = "declined"


@dataclass(frozen=True)
class Meanwhile:
    """A plain step that writes outside the saga: ``store.put`` (or ``store.delete``) without a
    write id, through another connection for SQLite."""

    store: int
    key: str
    value: Json = None
    delete: bool = False


Op: TypeAlias = Save | Delete | Update | Read | Note | Fail | Meanwhile
WRITES = (Save, Delete, Update)


@dataclass(frozen=True)
class Shape:
    """Where the transaction sits: alone, inside an outer saga (``prelude``, the transaction,
    ``finale``; the outer saga possibly a named sub-saga), or as a `par` branch beside a
    ``side`` step."""

    kind: ShapeKind = "alone"
    tx_named: bool = False
    outer_named: bool = False
    finale_fails: bool = False

    @property
    def prefix(self) -> str:
        """The path prefix of the transaction's steps."""
        outer = "outer/" if self.kind == "nested" and self.outer_named else ""
        if self.tx_named:
            return f"{outer}tx/"
        return "#0/" if self.kind == "par" else outer

    def result(self, results: tuple[object, ...]) -> object:
        """The saga's result, given the transaction's."""
        match self.kind:
            case "alone":
                return results
            case "nested":
                return ("prelude", results, "finale")
            case "par":
                return (results, "side")


@dataclass(frozen=True)
class Case:
    """A saga over generated stores, and how it runs.

    Attributes:
        fault: the op whose action a `FaultPlan` fails (the run is then recorded).
        runner: the sync interpreter, or the async one under asyncio.
        recorded: run under a fault-injecting interpreter and check its trace with `check_run`.
    """

    stores: tuple[StoreSpec, ...]
    ops: tuple[Op, ...]
    shape: Shape = Shape()
    fault: int | None = None
    runner: Runner = "sync"
    recorded: bool = False


# -- the model ------------------------------------------------------------------------------


@dataclass
class ModelStore:
    """A store as the model sees it: rows, deletion records and the version counter."""

    name: str
    rows: dict[str, Versioned[Json]] = field(default_factory=dict)
    deletions: dict[str, int] = field(default_factory=dict)
    last_version: int = 0

    @staticmethod
    def of(index: int, spec: StoreSpec) -> ModelStore:
        model = ModelStore(store_name(index))
        for key, value in spec.initial:
            model.put(key, value)
        for key in spec.deleted:
            model.delete(key)
        return model

    def version(self, key: str) -> int | None:
        """The version of the key's value (a deleted value is none: what a condition sees)."""
        current = self.rows.get(key)
        return None if current is None else current.version

    def state(self, key: str) -> State:
        if key in self.rows:
            return self.rows[key]
        return Deleted(self.deletions[key]) if key in self.deletions else None

    def states(self) -> dict[str, Versioned[Json] | Deleted]:
        """Every key's state but those that never held a value."""
        return {**{key: Deleted(version) for key, version in self.deletions.items()}, **self.rows}

    def put(self, key: str, value: Json) -> Change[Json]:
        """A new version; a deletion record the key had is gone."""
        before = self.state(key)
        self.last_version += 1
        after = Versioned(value, self.last_version)
        self.rows[key] = after
        self.deletions.pop(key, None)
        return Change(before, after)

    def delete(self, key: str) -> Change[Json]:
        """A deletion with a new version, if the key holds a value; else nothing at all."""
        before = self.state(key)
        if not isinstance(before, Versioned):
            return Change(before, before)
        self.last_version += 1
        del self.rows[key]
        self.deletions[key] = self.last_version
        return Change(before, Deleted(self.last_version))

    def resolve(self, key: str, condition: Condition) -> Expected:
        version = self.version(key)
        match condition:
            case "none":
                return None
            case "absent":
                return ABSENT
            case "current":
                return ABSENT if version is None else version
            case "wrong":
                if version is None:
                    return max(1, self.last_version)
                return version - 1 if version > 1 else version + 1


def store_name(index: int) -> str:
    return f"s{index}"


def admits(found: int | None, expected: Expected) -> bool:
    if expected is None:
        return True
    if expected is ABSENT:
        return found is None
    return found == expected


@dataclass(frozen=True)
class Raised:
    """An error the model expects: its type and some of its attributes."""

    kind: type[BaseException]
    attributes: tuple[tuple[str, object], ...] = ()

    @staticmethod
    def of(kind: type[BaseException], /, **attributes: object) -> Raised:
        return Raised(kind, tuple(attributes.items()))

    def check(self, error: BaseException, where: str) -> None:
        assert type(error) is self.kind, f"{where}: expected {self}, got {error!r}"
        for name, value in self.attributes:
            found = getattr(error, name)
            assert found == value, f"{where}: {error!r} has {name}={found!r}, expected {value!r}"

    def __str__(self) -> str:
        attributes = ", ".join(f"{name}={value!r}" for name, value in self.attributes)
        return f"{self.kind.__name__}({attributes})"


@dataclass(frozen=True)
class Write:
    """A completed write: the op, its step's path, where, and the change it made."""

    index: int
    path: str
    store: int
    key: str
    change: Change[Json]

    @property
    def changed(self) -> bool:
        """Whether it changed the key (a delete of a key without a value does not)."""
        return self.change.before != self.change.after


def version_of(state: State) -> int:
    """A state's version: its value's, its deletion's, 0 when the key never held a value."""
    return 0 if state is None else state.version


def state_json(state: State) -> object:
    """A state as a store step records it."""
    if isinstance(state, Versioned):
        return {"value": state.value, "version": state.version}
    if isinstance(state, Deleted):
        return {"deleted": state.version}
    return None


def receipt(change: Change[Json]) -> object:
    """What a write step records: its change, as JSON."""
    return {"before": state_json(change.before), "after": state_json(change.after)}


@dataclass
class Run:
    """What the model says a run does, up to its failure (before any undo).

    Attributes:
        stores: the stores as the run leaves them.
        paths: each started op's step path.
        expected: each conditional write's condition, resolved.
        results: each completed op's result, in order.
        recorded: what each completed store step records (a write's receipt, the state a read
            found), by path.
        writes: the saga's completed writes, in completion order.
        concurrent: the write made outside the saga, if it ran.
        error: what failed the run (``None``: it succeeds).
    """

    stores: list[ModelStore]
    paths: dict[int, str] = field(default_factory=dict)
    expected: dict[int, Expected] = field(default_factory=dict)
    results: list[object] = field(default_factory=list)
    recorded: dict[str, object] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    concurrent: Write | None = None
    error: Raised | None = None


def label_of(index: int, op: Op) -> tuple[str, bool]:
    """The op's step name, and whether it is explicit (else numbered when it repeats)."""
    match op:
        case Save(store=store, key=key, named=named):
            return (f"op{index}", True) if named else (f"save:{store_name(store)}:{key}", False)
        case Delete(store=store, key=key, named=named):
            return (f"op{index}", True) if named else (f"delete:{store_name(store)}:{key}", False)
        case Update(store=store, key=key, named=named):
            return (f"op{index}", True) if named else (f"update:{store_name(store)}:{key}", False)
        case Read(store=store, key=key, named=named):
            return (f"op{index}", True) if named else (f"read:{store_name(store)}:{key}", False)
        case Note(named=named):
            return (f"op{index}", True) if named else ("note", False)
        case Fail():
            return ("boom", False)
        case Meanwhile():
            return ("meanwhile", False)


def simulate(
    specs: Sequence[StoreSpec], ops: Sequence[Op], shape: Shape, fault: int | None = None
) -> Run:
    """Run `ops` on the model, up to the first failure."""
    run = Run([ModelStore.of(index, spec) for index, spec in enumerate(specs)])
    counts: dict[str, int] = {}
    for index, op in enumerate(ops):
        label, explicit = label_of(index, op)
        count = counts.get(label, 0) + 1
        counts[label] = count
        assert not (explicit and count > 1), f"generated a duplicate name {label!r}"
        path = shape.prefix + (label if count == 1 else f"{label}#{count}")
        run.paths[index] = path
        if index == fault:
            run.error = Raised.of(InjectedFault, kind="action", path=path)
            return run
        run.error = apply(run, index, path, op)
        if run.error is not None:
            return run
    if shape.finale_fails:
        run.error = Raised.of(Boom, args=("finale",))
    return run


def apply(run: Run, index: int, path: str, op: Op) -> Raised | None:
    """Apply one op to the model: the error it fails with, or None."""
    match op:
        case Save(store=store, key=key, value=value, condition=condition):
            model = run.stores[store]
            expected = run.expected[index] = model.resolve(key, condition)
            found = model.version(key)
            if not admits(found, expected):
                return conflict(model.name, key, expected, found)
            change = model.put(key, value)
            run.writes.append(Write(index, path, store, key, change))
            run.recorded[path] = receipt(change)
            run.results.append(change.after)
        case Delete(store=store, key=key, condition=condition):
            model = run.stores[store]
            expected = run.expected[index] = model.resolve(key, condition)
            found = model.version(key)
            if not admits(found, expected):
                return conflict(model.name, key, expected, found)
            change = model.delete(key)
            run.writes.append(Write(index, path, store, key, change))
            run.recorded[path] = receipt(change)
            run.results.append(change.before if isinstance(change.before, Versioned) else None)
        case Update(store=store, key=key, function=function):
            model = run.stores[store]
            current = model.rows.get(key)
            if current is None:
                return Raised.of(MissingKeyError, store=model.name, key=key)
            try:
                value = function(current.value)
            except NotANumber:
                return Raised(NotANumber)
            change = model.put(key, value)
            run.writes.append(Write(index, path, store, key, change))
            run.recorded[path] = receipt(change)
            run.results.append(change.after)
        case Read(store=store, key=key):
            held = run.stores[store].rows.get(key)
            run.recorded[path] = state_json(held)
            run.results.append(held)
        case Note(tag=tag):
            run.results.append(tag)
        case Fail(message=message):
            return Raised.of(Boom, args=(message,))
        case Meanwhile(store=store, key=key, value=value, delete=delete):
            model = run.stores[store]
            change = model.delete(key) if delete else model.put(key, value)
            run.concurrent = Write(index, path, store, key, change)
            run.results.append(None)
    return None


def conflict(store: str, key: str, expected: Expected, found: int | None) -> Raised:
    """The error of a conditional write that found the version `found` (a deleted value: no
    value)."""
    return Raised.of(
        VersionConflictError,
        store=store,
        key=key,
        expected=expected,
        found=found,
        expected_deleted=False,
        found_deleted=False,
    )


@dataclass(frozen=True)
class Conflict:
    """A compensation that must fail: the saga write's path, and the error's attributes."""

    path: str
    store: str
    key: str
    expected: int
    found: int
    expected_deleted: bool
    found_deleted: bool


@dataclass(frozen=True)
class Prediction:
    """The outcome the model expects, and every store's final states (but of the keys that
    never held a value)."""

    kind: Literal["success", "failure", "partial_failure"]
    value: object
    error: Raised | None
    compensated: tuple[str, ...]
    conflicts: tuple[Conflict, ...]
    states: tuple[dict[str, Versioned[Json] | Deleted], ...]


def predict(case: Case, run: Run) -> Prediction:
    """What the run must end with, after its undo.

    Undone, every key is back in the state it started in (its value, its deletion, or
    nothing), but a key someone else wrote meanwhile keeps that write: their value, or their
    deletion (a delete of a key without a value is no write). The saga's later writes of that
    key put it back as they are undone (its exact version); then each earlier one that changed
    the key finds that write and conflicts, unless the key holds no value either way: the other
    write was a delete, and the saga's write found no value (a create; `check_undo` does
    nothing then).
    """
    if run.error is None:
        states = tuple(model.states() for model in run.stores)
        return Prediction("success", case.shape.result(tuple(run.results)), None, (), (), states)
    restored = [ModelStore.of(index, spec).states() for index, spec in enumerate(case.stores)]
    conflicts: list[tuple[Write, Conflict]] = []
    concurrent = run.concurrent
    if concurrent is not None and concurrent.changed:
        store, key, found = concurrent.store, concurrent.key, concurrent.change.after
        assert found is not None, "a write that changed a key leaves a value or a deletion"
        restored[store][key] = found
        for write in reversed(run.writes):
            if (
                write.index < concurrent.index
                and (write.store, write.key) == (store, key)
                and write.changed
                and (isinstance(found, Versioned) or isinstance(write.change.before, Versioned))
            ):
                left = write.change.after
                expected = Conflict(
                    write.path,
                    store_name(store),
                    key,
                    version_of(left),
                    found.version,
                    expected_deleted=isinstance(left, Deleted),
                    found_deleted=isinstance(found, Deleted),
                )
                conflicts.append((write, expected))
    failed = {write.index for write, _ in conflicts}
    compensated = tuple(write.path for write in reversed(run.writes) if write.index not in failed)
    kind: Literal["failure", "partial_failure"] = "partial_failure" if conflicts else "failure"
    return Prediction(
        kind,
        None,
        run.error,
        compensated,
        tuple(expected for _, expected in conflicts),
        tuple(restored),
    )


# -- generated cases ------------------------------------------------------------------------


@st.composite
def store_specs(draw: st.DrawFn) -> tuple[StoreSpec, ...]:
    specs: list[StoreSpec] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(store_kinds()))
        keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=4))
        initial = tuple((key, draw(JSON_VALUES)) for key in keys)
        database = draw(st.integers(0, 1)) if kind != "memory" else 0
        deleted: list[str] = []
        if keys:
            deleted = draw(st.lists(st.sampled_from(keys), unique=True, max_size=2))
        specs.append(StoreSpec(kind, initial, database, tuple(deleted)))
    return tuple(specs)


@st.composite
def valid_ops(draw: st.DrawFn, specs: tuple[StoreSpec, ...]) -> list[Op]:
    """1 to 12 ops, each of which succeeds after those before it (a model follows along)."""
    models = [ModelStore.of(index, spec) for index, spec in enumerate(specs)]
    ops: list[Op] = []
    # The larger of two draws: most sagas are long, and shrinking still makes them short.
    count = max(draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    while len(ops) < count:
        store = draw(st.integers(0, len(specs) - 1))
        model = models[store]
        kinds = ("save", "update", "delete", "read", "note", "save", "update", "delete")
        kind = draw(st.sampled_from(kinds))
        named = draw(st.booleans())
        if kind == "update" and not model.rows:
            kind = "save"
        if kind == "update":
            key = draw(st.sampled_from(sorted(model.rows)))
            function = draw(functions(model.rows[key].value))
            model.put(key, function(model.rows[key].value))
            ops.append(Update(store, key, function, named))
            continue
        key = draw(st.sampled_from(KEYS))
        if kind == "read":
            ops.append(Read(store, key, named))
        elif kind == "note":
            ops.append(Note(draw(st.sampled_from(("n", "m"))), named))
        else:
            conditions: list[Condition] = ["none", "current"]
            if key not in model.rows:
                conditions.append("absent")
            condition = draw(st.sampled_from(conditions))
            if kind == "save":
                value = draw(JSON_VALUES)
                model.put(key, value)
                ops.append(Save(store, key, value, condition, named))
            else:
                model.delete(key)
                ops.append(Delete(store, key, condition, named))
    return ops


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    kind = draw(st.sampled_from(SHAPE_KINDS))
    outer_named = kind == "nested" and draw(st.booleans())
    return Shape(kind, tx_named=draw(st.booleans()), outer_named=outer_named)


FailureKind: TypeAlias = Literal["raise", "fault", "finale", "conflict", "missing", "not_a_number"]


@st.composite
def failing_op(draw: st.DrawFn, kind: FailureKind, models: Sequence[ModelStore]) -> Op:
    """An op that fails, given the stores as they are when it runs."""
    if kind == "conflict":
        store = draw(st.integers(0, len(models) - 1))
        key = draw(st.sampled_from(KEYS))
        present = key in models[store].rows
        wrong: tuple[Condition, ...] = ("absent", "wrong") if present else ("wrong",)
        condition = draw(st.sampled_from(wrong))
        if draw(st.booleans()):
            return Save(store, key, draw(JSON_VALUES), condition, draw(st.booleans()))
        return Delete(store, key, condition, draw(st.booleans()))
    if kind == "missing":
        absent = [
            (s, key) for s, model in enumerate(models) for key in KEYS if key not in model.rows
        ]
        if absent:
            store, key = draw(st.sampled_from(absent))
            return Update(store, key, draw(functions(None)), draw(st.booleans()))
    if kind == "not_a_number":
        words = [
            (s, key)
            for s, model in enumerate(models)
            for key, current in sorted(model.rows.items())
            if not isinstance(current.value, int)
        ]
        if words:
            store, key = draw(st.sampled_from(words))
            return Update(store, key, Add(draw(st.integers(-5, 5))), draw(st.booleans()))
    return Fail()


@st.composite
def failing_cases(draw: st.DrawFn, *, concurrent: bool = False, faults: bool = True) -> Case:
    """A case with one failure; with `concurrent`, a write outside the saga comes before it."""
    specs = draw(store_specs())
    ops = draw(valid_ops(specs))
    shape = draw(shapes())
    first = 0  # the failure comes at or after this op
    if concurrent:
        at = draw(st.integers(0, len(ops)))
        # Most of the time, a key the saga wrote before (the interesting case), often one it
        # deleted (the saga's deletion, then theirs or their value).
        written = sorted({(op.store, op.key) for op in ops[:at] if isinstance(op, WRITES)})
        deleted = sorted({(op.store, op.key) for op in ops[:at] if isinstance(op, Delete)})
        aim = draw(st.sampled_from(("any", "written", "written", "deleted")))
        if deleted and aim == "deleted":
            store, key = draw(st.sampled_from(deleted))
        elif written and aim != "any":
            store, key = draw(st.sampled_from(written))
        else:
            store, key = draw(st.integers(0, len(specs) - 1)), draw(st.sampled_from(KEYS))
        # A delete of a key without a value is no write: mostly put a value there.
        state = simulate(specs, ops[:at], Shape()).stores[store].state(key)
        rarely = st.sampled_from((False, False, True))
        delete = draw(st.booleans() if isinstance(state, Versioned) else rarely)
        value = None if delete else draw(JSON_VALUES)
        ops.insert(at, Meanwhile(store, key, value, delete))
        if isinstance(state, Versioned) and draw(st.sampled_from((False, False, False, True))):
            # Sometimes the saga deletes the key and writes its value again first (the shape
            # of the regression examples): the ops after it still find that value there.
            ops[at:at] = [Delete(store, key), Save(store, key, state.value)]
            at += 2
        first = at + 1
    kinds: list[FailureKind] = ["raise", "conflict", "missing", "not_a_number"]
    if faults:
        kinds.append("fault")
    if shape.kind == "nested":
        kinds.append("finale")
    kind = draw(st.sampled_from(kinds))
    event(f"injected failure: {kind}")
    fault: int | None = None
    targets = [index for index in range(first, len(ops)) if not isinstance(ops[index], Meanwhile)]
    if kind == "finale":
        shape = replace(shape, finale_fails=True)
    elif kind == "fault" and targets:
        fault = draw(st.sampled_from(targets))
    else:
        at = len(ops) - draw(st.integers(0, len(ops) - first))
        models = simulate(specs, ops[:at], shape).stores
        ops.insert(at, draw(failing_op(kind, models)))
    runner = draw(st.sampled_from(RUNNERS))
    return Case(specs, tuple(ops), shape, fault, runner, draw(st.booleans()))


@st.composite
def succeeding_cases(draw: st.DrawFn) -> Case:
    specs = draw(store_specs())
    ops = draw(valid_ops(specs))
    shape = draw(shapes())
    runner = draw(st.sampled_from(RUNNERS))
    return Case(specs, tuple(ops), shape, None, runner, draw(st.booleans()))


# -- stores, sagas and runs -----------------------------------------------------------------


@dataclass
class Databases:
    """The session's servers, if their binaries are here, and what the examples keep there."""

    postgres: PostgresServer | None
    redis_url: str | None
    label: str = field(default_factory=lambda: unique("p"))
    runs: Iterator[int] = field(default_factory=itertools.count)
    schemas: set[str] = field(default_factory=set)
    _connection: psycopg.Connection[tuple[object, ...]] | None = None
    _pool: psycopg_pool.ConnectionPool | None = None
    _client: redis.Redis | None = None

    @property
    def pool(self) -> psycopg_pool.ConnectionPool:
        """The pool the examples' PostgreSQL stores borrow connections from. Their commits do
        not wait for the disk (``synchronous_commit=off``): surviving a crash of the server is
        not what these properties are about (the SQLite stores likewise run with
        ``synchronous="NORMAL"``)."""
        if self._pool is None:
            assert self.postgres is not None
            conninfo = f"{self.postgres.dsn} options='-c synchronous_commit=off'"
            self._pool = psycopg_pool.ConnectionPool(conninfo, min_size=2, max_size=2, open=True)
            # A pool opens its connections in a thread of its own, drawing random numbers as
            # it does: let it finish before hypothesis draws again (it checks that nothing
            # else used `random`). A pool of a fixed size opens no more.
            self._pool.wait()
        return self._pool

    @property
    def connection(self) -> psycopg.Connection[tuple[object, ...]]:
        """A connection of the test's own, to read and reset the stores' tables."""
        if self._connection is None:
            assert self.postgres is not None
            self._connection = psycopg.connect(self.postgres.dsn, autocommit=True)
        return self._connection

    @property
    def client(self) -> redis.Redis:
        """A client of the test's own, to read the stores' keys."""
        if self._client is None:
            assert self.redis_url is not None
            self._client = redis.Redis.from_url(self.redis_url)
        return self._client

    def schema(self, place: str) -> str:
        """A schema of `place`'s, created once for the module."""
        name = f"{self.label}_{place}"
        if name not in self.schemas:
            self.connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
            self.schemas.add(name)
        return name

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._connection is not None:
            self._connection.close()
        if self._client is not None:
            self._client.close()


DATABASES = Databases(None, None)
"""The servers this module's examples may open stores on (none until `databases` runs)."""


@pytest.fixture(scope="module", autouse=True)
def databases(request: pytest.FixtureRequest) -> Iterator[Databases]:
    """The session's servers for the examples; without their binaries, none (the examples
    then draw no database stores; under ``CI=true`` the fixture fails instead)."""
    global DATABASES
    found: dict[str, object] = {}
    for fixture in ("postgres", "redis_server_url"):
        with contextlib.suppress(pytest.skip.Exception):
            found[fixture] = request.getfixturevalue(fixture)
    postgres, redis_url = found.get("postgres"), found.get("redis_server_url")
    assert postgres is None or isinstance(postgres, PostgresServer)
    assert redis_url is None or isinstance(redis_url, str)
    DATABASES = Databases(postgres, redis_url)
    try:
        yield DATABASES
    finally:
        DATABASES.close()
        DATABASES = Databases(None, None)


def store_kinds() -> tuple[StoreKind, ...]:
    """The kinds of store the examples draw: the database ones whose server is running."""
    present = {"postgres": DATABASES.postgres, "redis": DATABASES.redis_url}
    return LOCAL_KINDS + tuple(kind for kind in DATABASE_KINDS if present[kind] is not None)


def open_stores(
    specs: Sequence[StoreSpec], folder: Path, closing: contextlib.ExitStack, place: str = "case"
) -> list[AnyStore]:
    """The stores of `specs`, filled, in `folder` (SQLite), in schemas of `place` (PostgreSQL,
    their tables emptied first), under prefixes new to this call (Redis); `closing` closes
    them."""
    folder.mkdir(parents=True, exist_ok=True)
    run = next(DATABASES.runs)
    stores: list[AnyStore] = []
    for index, spec in enumerate(specs):
        name = store_name(index)
        store: AnyStore
        match spec.kind:
            case "memory":
                store = MemoryStore[str, Json](name, dict(spec.initial))
            case "sqlite":
                database = folder / f"db{spec.database}.sqlite"
                store = SqliteStore(database, name, synchronous="NORMAL")
            case "postgres":
                assert DATABASES.postgres is not None
                schema = DATABASES.schema(f"{place}{spec.database}")
                store = PostgresStore(DATABASES.pool, name, schema=schema)
                store.create_tables()
                empty(schema, name)
            case "redis":
                assert DATABASES.redis_url is not None
                prefix = f"{DATABASES.label}:{run}:{place}{spec.database}"
                store = RedisStore(DATABASES.redis_url, name, prefix=prefix)
        if not isinstance(store, MemoryStore):
            closing.callback(store.close)
            for key, value in spec.initial:
                store.put(key, value)
        for key in spec.deleted:
            store.delete(key)
        stores.append(store)
    return stores


def empty(schema: str, name: str) -> None:
    """Empty a PostgreSQL store an earlier example used: rows, records, version counter."""
    tables = {
        "schema": sql.Identifier(schema),
        "values": sql.Identifier(schema, name),
        "name": sql.Literal(name),
    }
    DATABASES.connection.execute(
        sql.SQL(
            "TRUNCATE {values};"
            " DELETE FROM {schema}.fsaga_store_deletions WHERE store = {name};"
            " DELETE FROM {schema}.fsaga_store_writes WHERE store = {name};"
            " UPDATE {schema}.fsaga_stores SET last_version = 0 WHERE name = {name}"
        ).format(**tables)
    )


def other_connection(store: AnyStore, closing: contextlib.ExitStack) -> AnyStore:
    """The same store as another process would open it (a `MemoryStore` is itself)."""
    other: AnyStore
    match store:
        case MemoryStore():
            return store
        case SqliteStore():
            other = SqliteStore(store.path, store.name, synchronous="NORMAL")
        case PostgresStore():
            other = PostgresStore(DATABASES.pool, store.name, schema=store.schema)
        case RedisStore():
            assert DATABASES.redis_url is not None
            other = RedisStore(DATABASES.redis_url, store.name, prefix=store.prefix)
    closing.callback(other.close)
    return other


@dataclass(frozen=True)
class Held:
    """What a store holds, as the test reads it: its rows and its deletion records, by key."""

    rows: tuple[Row, ...]
    deletions: tuple[Deletion, ...]

    def versions(self) -> dict[str, int]:
        """Each key's version: its value's, or its deletion's."""
        return {key: version for key, _, version in self.rows} | dict(self.deletions)

    def only(self, key: str) -> Held:
        return Held(
            tuple(row for row in self.rows if row[0] == key),
            tuple(deletion for deletion in self.deletions if deletion[0] == key),
        )

    def without(self, key: str | None) -> Held:
        return Held(
            tuple(row for row in self.rows if row[0] != key),
            tuple(deletion for deletion in self.deletions if deletion[0] != key),
        )

    def __str__(self) -> str:
        if not self.rows and not self.deletions:
            return "nothing"
        deletions = ", ".join(f"{key!r} deleted at {version}" for key, version in self.deletions)
        return f"{list(self.rows)}" + (f", {deletions}" if deletions else "")


def held(store: AnyStore) -> Held:
    """What `store` holds. For SQLite and PostgreSQL, its table's rows and its rows of
    ``fsaga_store_deletions``, read through a connection of our own; for Redis, its hashes of
    values and versions, through a client of our own (a key with a version and no value holds
    a deletion). For a `MemoryStore`, `snapshot`, and the deletions a delete of each other key
    reports (``Change(s, s)``: a delete of a key without a value changes nothing and takes no
    version)."""
    match store:
        case MemoryStore():
            values = store.snapshot()
            items = sorted(values.items(), key=lambda item: item[0])
            deletions: list[Deletion] = []
            for key in KEYS:
                if key not in values:
                    change = store.delete(key)
                    assert change.before == change.after, f"a delete of nothing changed {change}"
                    if isinstance(change.before, Deleted):
                        deletions.append((key, change.before.version))
            rows = tuple((key, item.value, item.version) for key, item in items)
            return Held(rows, tuple(deletions))
        case SqliteStore():
            with contextlib.closing(sqlite3.connect(store.path)) as db:
                found = db.execute(f'SELECT key, value, version FROM "{store.name}" ORDER BY key')
                table = tuple(
                    (str(key), bytes(value), int(version)) for key, value, version in found
                )
                deleted = db.execute(
                    "SELECT key, version FROM fsaga_store_deletions WHERE store = ? ORDER BY key",
                    (store.name,),
                )
                return Held(table, tuple((str(key), int(version)) for key, version in deleted))
        case PostgresStore():
            connection = DATABASES.connection
            found_rows = connection.execute(
                sql.SQL("SELECT key, value, version FROM {} ORDER BY key").format(
                    sql.Identifier(store.schema, store.name)
                )
            ).fetchall()
            deleted_rows = connection.execute(
                sql.SQL(
                    "SELECT key, version FROM {}.fsaga_store_deletions WHERE store = %s"
                    " ORDER BY key"
                ).format(sql.Identifier(store.schema)),
                (store.name,),
            ).fetchall()
            return Held(
                tuple(
                    (str(key), as_bytes(value), as_int(version))
                    for key, value, version in found_rows
                ),
                tuple((str(key), as_int(version)) for key, version in deleted_rows),
            )
        case RedisStore():
            tag = f"{{{store.prefix}:{store.name}}}"
            client = DATABASES.client
            data = {
                as_text(key): as_bytes(value)
                for key, value in client.hgetall(f"{tag}:values").items()
            }
            versions = {
                as_text(key): int(version)
                for key, version in client.hgetall(f"{tag}:versions").items()
            }
            return Held(
                tuple((key, data[key], versions[key]) for key in sorted(data)),
                tuple((key, versions[key]) for key in sorted(versions) if key not in data),
            )


def as_bytes(value: object) -> bytes:
    assert isinstance(value, bytes), value
    return value


def as_int(value: object) -> int:
    assert isinstance(value, int), value
    return value


def as_text(value: object) -> str:
    assert isinstance(value, bytes), value
    return value.decode()


def model_held(store: AnyStore, states: Mapping[str, Versioned[Json] | Deleted]) -> Held:
    """`states` as `held` reads them from `store` (values as JSON bytes, but in a
    `MemoryStore`)."""
    encoded = not isinstance(store, MemoryStore)
    ordered = sorted(states.items(), key=lambda item: item[0])
    return Held(
        tuple(
            (key, CODEC.encode(state.value) if encoded else state.value, state.version)
            for key, state in ordered
            if isinstance(state, Versioned)
        ),
        tuple((key, state.version) for key, state in ordered if isinstance(state, Deleted)),
    )


def note(tag: str) -> str:
    return tag


def boom(message: str) -> NoReturn:
    raise Boom(message)


def finale(fails: bool) -> str:
    if fails:
        raise Boom("finale")
    return "finale"


def meanwhile(store: Store[str, Json], key: str, value: Json, delete: bool) -> None:
    if delete:
        store.delete(key)
    else:
        store.put(key, value)


def op_saga(
    tx: Transaction,
    index: int,
    op: Op,
    stores: Sequence[Store[str, Json]],
    writers: Mapping[int, Store[str, Json]],
    expected: Mapping[int, Expected],
) -> Saga[object]:
    """The step of one op (ordinary steps are idempotent: a recovery may run them again)."""
    label, explicit = label_of(index, op)
    name = label if explicit else None
    match op:
        case Save(store=store, key=key, value=value):
            return tx.save(stores[store], key, value, expected=expected.get(index), name=name)
        case Delete(store=store, key=key):
            return tx.delete(stores[store], key, expected=expected.get(index), name=name)
        case Update(store=store, key=key, function=function):
            return tx.update(stores[store], key, function, name=name)
        case Read(store=store, key=key):
            return tx.read(stores[store], key, name=name)
        case Note(tag=tag):
            return step(partial(note, tag), name=name, idempotent=True)
        case Fail(message=message):
            return step(partial(boom, message), idempotent=True)
        case Meanwhile(store=store, key=key, value=value, delete=delete):
            return step(partial(meanwhile, writers[store], key, value, delete))


def build(
    case: Case,
    stores: Sequence[AnyStore],
    expected: Mapping[int, Expected],
    writers: Mapping[int, AnyStore] | None = None,
    *,
    jsonable: bool = False,
) -> Saga[object]:
    """The case's saga over `stores`; `writers` are the stores concurrent writes go through."""
    handles: list[Store[str, Json]] = [*stores]
    others: dict[int, Store[str, Json]] = dict(writers or {})

    def body(tx: Transaction) -> Saga[tuple[object, ...]]:
        return sequence(
            op_saga(tx, index, op, handles, others, expected) for index, op in enumerate(case.ops)
        )

    shape = case.shape
    saga: Saga[object] = transaction(body, name="tx" if shape.tx_named else None)
    match shape.kind:
        case "alone":
            pass
        case "nested":
            prelude = step(partial(note, "prelude"), name="prelude", idempotent=True)
            last = step(partial(finale, shape.finale_fails), name="finale", idempotent=True)
            saga = sequence([prelude, saga, last])
            if shape.outer_named:
                saga = saga.named("outer")
        case "par":
            saga = par(saga, step(partial(note, "side"), name="side", idempotent=True))
    return saga.map(to_json) if jsonable else saga


def to_json(value: object) -> object:
    """A saga's result as JSON gives it back (what a durable run records)."""
    if isinstance(value, Versioned):
        return {"value": to_json(value.value), "version": value.version}
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    return value


def execute(case: Case, saga: Saga[object], plan: FaultPlan, run: Run) -> Outcome[object]:
    """Run `saga` as the case says; a recorded run's trace is checked with `check_run`, and
    what its store steps record with `check_receipts`."""
    recorded = case.recorded or case.fault is not None
    if case.runner == "sync":
        if not recorded:
            return saga.run(SyncInterpreter())
        interpreter = FaultInjectingInterpreter(plan)
        outcome = saga.run(interpreter)
        check_run(interpreter, outcome)
        check_receipts(interpreter.effects, run)
        return outcome

    async def run_async() -> Outcome[object]:
        if not recorded:
            return await saga.run(AsyncInterpreter())
        interpreter = AsyncFaultInjectingInterpreter(plan)
        outcome = await saga.run(interpreter)
        check_run(interpreter, outcome)
        check_receipts(interpreter.effects, run)
        return outcome

    return anyio.run(run_async, backend="asyncio")


# -- checks ---------------------------------------------------------------------------------


def check_receipts(effects: Sequence[RecordedEffect], run: Run) -> None:
    """Each completed store step recorded what the model says (a write's receipt: the states
    before and after it, each ``null``, ``{"value": v, "version": n}`` or ``{"deleted": n}``;
    a read's state), and each compensation of a write was given that receipt."""
    returned = {
        effect.path: effect.result
        for effect in effects
        if effect.kind == "action" and effect.error is None and effect.path in run.recorded
    }
    assert returned == run.recorded, (
        f"the store steps recorded\n  {returned}\nthe model expects\n  {run.recorded}"
    )
    for effect in effects:
        if effect.kind == "compensation":
            assert effect.argument == run.recorded[effect.path], (
                f"the compensation of {effect.path} was given {effect.argument!r}, "
                f"its step recorded {run.recorded[effect.path]!r}"
            )


def check_outcome(outcome: Outcome[object], prediction: Prediction) -> None:
    """`outcome` is the predicted one: kind, value or error, compensations, conflicts."""
    expected = f"the model expects {prediction.kind}"
    if prediction.error is not None:
        expected += f" with {prediction.error}, compensated {prediction.compensated}"
    if isinstance(outcome, Success):
        assert prediction.kind == "success", f"the saga succeeded; {expected}"
        assert outcome.value == prediction.value, (
            f"the saga returned {outcome.value!r}, the model expects {prediction.value!r}"
        )
        return
    kind = Failure if prediction.kind == "failure" else PartialFailure
    assert isinstance(outcome, kind), f"{outcome}; {expected}"
    assert prediction.error is not None
    prediction.error.check(outcome.error, "the saga's error")
    assert outcome.compensated == prediction.compensated, (
        f"compensated {outcome.compensated}, the model expects the completed writes in reverse "
        f"(but those that conflict): {prediction.compensated}"
    )
    if isinstance(outcome, Failure):
        return
    assert outcome.skipped == (), outcome
    assert outcome.unresolved == (), outcome
    failed = [(failure.path, failure.attempts) for failure in outcome.failed_compensations]
    conflicting = [(conflict.path, 1) for conflict in prediction.conflicts]
    assert failed == conflicting, (
        f"failed compensations {failed}, the model expects conflicts in {conflicting}"
    )
    for failure, conflict in zip(outcome.failed_compensations, prediction.conflicts, strict=True):
        Raised.of(
            VersionConflictError,
            store=conflict.store,
            key=conflict.key,
            expected=conflict.expected,
            found=conflict.found,
            expected_deleted=conflict.expected_deleted,
            found_deleted=conflict.found_deleted,
        ).check(failure.error, f"the undo of {failure.path}")
        message = str(failure.error)
        kept = "deletion" if conflict.found_deleted else "value"
        assert "not undone" in message, message
        assert message.endswith(f"their {kept} was kept"), message


def check_held(
    stores: Sequence[AnyStore],
    before: Sequence[Held],
    after: Sequence[Held],
    prediction: Prediction,
    concurrent: Write | None,
) -> None:
    """After a failure, a key written meanwhile holds that write (its value, or its deletion)
    and every other key its old row or deletion record, byte for byte; and every store holds
    the rows and deletion records the model predicts."""
    for index, store in enumerate(stores):
        what = f"store {store.name} ({type(store).__name__})"
        expected = model_held(store, prediction.states[index])
        if prediction.kind != "success":
            spared = None
            if concurrent is not None and concurrent.changed and concurrent.store == index:
                spared = concurrent.key
                left, meant = after[index].only(spared), expected.only(spared)
                assert left == meant, (
                    f"{what}, key {spared!r}: the write made meanwhile left {meant}, the undo "
                    f"left {left} (it held {before[index]} at first)"
                )
            kept, old = after[index].without(spared), before[index].without(spared)
            assert kept == old, f"{what} was not restored: {old} became {kept}"
        assert after[index] == expected, (
            f"{what} holds\n  {after[index]}\nthe model expects\n  {expected}\n"
            f"it held\n  {before[index]}"
        )


@dataclass(frozen=True)
class Checked:
    """A checked run: the model's run, the outcome, what every store held before and after."""

    run: Run
    outcome: Outcome[object]
    before: list[Held]
    after: list[Held]


def check_case(case: Case) -> Checked:
    """Run `case` on fresh stores and check it against the model."""
    run = simulate(case.stores, case.ops, case.shape, case.fault)
    prediction = predict(case, run)
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as closing:
        stores = open_stores(case.stores, Path(directory), closing)
        writers = {
            op.store: other_connection(stores[op.store], closing)
            for op in case.ops
            if isinstance(op, Meanwhile)
        }
        before = [held(store) for store in stores]
        for index, store in enumerate(stores):
            initial = ModelStore.of(index, case.stores[index]).states()
            assert before[index] == model_held(store, initial), "a store opened unlike the model"
        # A fault aimed at an op an earlier failure keeps from running fails nothing.
        target = None if case.fault is None else run.paths.get(case.fault)
        plan = FaultPlan() if target is None else FaultPlan({target: 1})
        outcome = execute(case, build(case, stores, run.expected, writers), plan, run)
        after = [held(store) for store in stores]
        check_held(stores, before, after, prediction, run.concurrent)
        check_outcome(outcome, prediction)
    note_outcome(outcome, run)
    return Checked(run, outcome, before, after)


def note_outcome(outcome: Outcome[object], run: Run) -> None:
    """Hypothesis statistics (``--hypothesis-show-statistics``)."""
    event(f"outcome: {type(outcome).__name__}")
    if run.error is not None:
        event(f"error: {run.error.kind.__name__}")
    event(f"completed writes: {min(len(run.writes), 6)}{'+' if len(run.writes) >= 6 else ''}")
    if run.concurrent is not None:
        change = run.concurrent.change
        verb = "put" if isinstance(change.after, Versioned) else "delete"
        event(f"concurrent {verb} over {describe_state(change.before)}")
    if run.concurrent is not None and isinstance(outcome, PartialFailure):
        event(f"conflicts: {len(outcome.failed_compensations)}")
        for failure in outcome.failed_compensations:
            error = failure.error
            if isinstance(error, VersionConflictError):
                left = "a deletion" if error.expected_deleted else "a value"
                found = "a deletion" if error.found_deleted else "a value"
                event(f"conflict: left {left}, found {found}")
    if any(isinstance(write.change.before, Deleted) for write in run.writes):
        event("a saga write over a deletion")


def describe_state(state: State) -> str:
    if isinstance(state, Versioned):
        return "a value"
    return "a deletion" if isinstance(state, Deleted) else "nothing"


# -- the properties -------------------------------------------------------------------------


def examples(count: int) -> settings:
    """`count` examples, or as many as ``HYPOTHESIS_PROFILE=explore`` asks for."""
    if os.environ.get("HYPOTHESIS_PROFILE", "default") == "default":
        return settings(max_examples=count)
    return settings()  # the profile's own number


# A save over a key deleted before the saga: its undo puts the deletion record back, version
# included (in SQLite, the row of fsaga_store_deletions); the other store in the same file, with
# the same key, keeps its own record, or none.
_SAVED_OVER_A_DELETION = Case(
    (
        StoreSpec("sqlite", (("a", 1), ("b", 2)), deleted=("a",)),
        StoreSpec("sqlite", (("a", 3),)),
    ),
    (Save(0, "a", 4), Delete(1, "a"), Save(1, "a", 5), Delete(0, "b"), Fail()),
)
# A delete of a deleted key changes nothing (its change is Change(Deleted(2), Deleted(2))) and
# takes no version; a value written over it is undone back to that deletion.
_DELETED_AGAIN = Case(
    (StoreSpec("memory", (("a", 1),), deleted=("a",)),),
    (Delete(0, "a"), Save(0, "a", [2]), Delete(0, "a", "absent"), Update(0, "a", Wrap()), Fail()),
)


@examples(200)
@example(case=_SAVED_OVER_A_DELETION)
@example(case=_DELETED_AGAIN)
@given(case=failing_cases())
def test_after_a_failure_every_store_holds_exactly_what_it_held_before(case: Case) -> None:
    checked = check_case(case)
    assert isinstance(checked.outcome, Failure), f"no concurrent writer, yet {checked.outcome}"


# A key deleted, written again and deleted again by the saga: each deletion takes a version.
_DELETED_RECREATED_DELETED = Case(
    (StoreSpec("sqlite", (("a", 1), ("b", 2)), deleted=("b",)),),
    (Delete(0, "a"), Save(0, "a", 3, "absent"), Delete(0, "a", "current"), Delete(0, "b")),
)


@examples(100)
@example(case=_DELETED_RECREATED_DELETED)
@given(case=succeeding_cases())
def test_without_a_failure_the_stores_hold_what_the_operations_wrote(case: Case) -> None:
    checked = check_case(case)
    assert isinstance(checked.outcome, Success), checked.outcome
    # Every key the saga changed is in a newer state than before: a value or a deletion with a
    # newer version (0: it never held a value).
    for write in checked.run.writes:
        if write.changed:
            old = checked.before[write.store].versions()
            new = checked.after[write.store].versions()
            assert new[write.key] > old.get(write.key, 0), (write, old, new)


# The undo of a delete that found nothing has nothing to undo: a write made meanwhile does not
# make it a conflict (it once did).
_DELETE_OF_NOTHING_THEN_PUT = Case(
    (StoreSpec("memory"),),
    (Delete(0, "a"), Meanwhile(0, "a", 1), Fail()),
)
# The saga created a key that someone else then deleted: the key holds no value, which is what
# the undo would leave, so the undo does nothing and reports nothing; their deletion stays.
_CREATE_THEN_DELETED = Case(
    (StoreSpec("sqlite"),),
    (Save(0, "a", 1), Meanwhile(0, "a", delete=True), Fail()),
)
# The same over a deletion made before the saga: no value either way.
_RECREATE_THEN_DELETED = Case(
    (StoreSpec("memory", (("a", 1),), deleted=("a",)),),
    (Save(0, "a", 3), Meanwhile(0, "a", delete=True), Fail()),
)
# An update of a key someone else then deleted: a conflict that found their deletion.
_UPDATE_THEN_DELETED = Case(
    (StoreSpec("sqlite", (("a", 1),)),),
    (Update(0, "a", Add(1)), Meanwhile(0, "a", delete=True), Fail()),
)
# A delete of a key someone else then wrote: a conflict that expected the saga's deletion and
# found their value.
_DELETED_THEN_PUT = Case(
    (StoreSpec("sqlite", (("a", 1),)),),
    (Delete(0, "a"), Meanwhile(0, "a", 2), Fail()),
)
# A save after the concurrent write is undone first and puts that write back, exact version
# included; the save before it then conflicts with it.
_WRITTEN_AGAIN_AFTER = Case(
    (StoreSpec("sqlite", (("a", 1),)), StoreSpec("memory")),
    (Save(0, "a", 2), Meanwhile(0, "a", 3), Save(0, "a", 4, "current"), Save(1, "a", 5), Fail()),
)

# Regression (the bug deletion versions fixed): the saga deleted a key (version 2), then
# created it again (3); someone else deleted it (4); the saga fails. When a missing value had no
# version, the undo of the create found no value, which is what it would leave, and did
# nothing; the undo of the delete then found no value, which is what *it* left, and put the
# first value back: the delete made meanwhile was lost, and the outcome said nothing of it
# (`Failure`). Now the undo of the create finds Deleted(4) where it would leave Deleted(2): no
# value either way, nothing to do; the undo of the delete finds Deleted(4), not its own
# Deleted(2): a conflict, their deletion kept.
_DELETED_RECREATED_THEN_DELETED = Case(
    (StoreSpec("memory", (("a", 0),)),),
    (Delete(0, "a"), Save(0, "a", 1), Meanwhile(0, "a", delete=True), Fail()),
)
# Regression, the same bug: the undo of the first create used to delete the value the undo of
# the delete had put back, so the key ended as it should, but a value someone else deleted was
# written back for a while, and the outcome reported no conflict. Now: the same conflict as
# above, and the undo of the first create (no value either way) does nothing.
_CREATED_DELETED_RECREATED_THEN_DELETED = Case(
    (StoreSpec("sqlite"),),
    (Save(0, "a", 1), Delete(0, "a"), Save(0, "a", 2), Meanwhile(0, "a", delete=True), Fail()),
)


@dataclass(frozen=True)
class Pinned:
    """What an explicit example must end with, written out by hand (beside the model's say).

    Attributes:
        conflicts: each conflict's path, expected version and whether it is a deletion's, found
            version and whether it is a deletion's, in order.
        a: what key ``a`` of store ``s0`` holds in the end (see `describe_a`).
    """

    conflicts: tuple[tuple[str, int, bool, int, bool], ...]
    a: str


def describe_a(held: Held) -> str:
    """What key ``a`` holds: ``version N``, ``deleted at N``, or ``nothing``."""
    rows, deletions = held.only("a").rows, held.only("a").deletions
    assert len(rows) + len(deletions) <= 1, held
    if rows:
        return f"version {rows[0][2]}"
    return f"deleted at {deletions[0][1]}" if deletions else "nothing"


PINNED: tuple[tuple[Case, Pinned], ...] = (
    (_DELETE_OF_NOTHING_THEN_PUT, Pinned((), "version 1")),
    (_CREATE_THEN_DELETED, Pinned((), "deleted at 2")),
    (_RECREATE_THEN_DELETED, Pinned((), "deleted at 4")),
    (_UPDATE_THEN_DELETED, Pinned((("update:s0:a", 2, False, 3, True),), "deleted at 3")),
    (_DELETED_THEN_PUT, Pinned((("delete:s0:a", 2, True, 3, False),), "version 3")),
    (_WRITTEN_AGAIN_AFTER, Pinned((("save:s0:a", 2, False, 3, False),), "version 3")),
    (_DELETED_RECREATED_THEN_DELETED, Pinned((("delete:s0:a", 2, True, 4, True),), "deleted at 4")),
    (
        _CREATED_DELETED_RECREATED_THEN_DELETED,
        Pinned((("delete:s0:a", 2, True, 4, True),), "deleted at 4"),
    ),
)


@examples(200)
@example(case=_DELETED_RECREATED_THEN_DELETED)
@example(case=_CREATED_DELETED_RECREATED_THEN_DELETED)
@example(case=_DELETE_OF_NOTHING_THEN_PUT)
@example(case=_CREATE_THEN_DELETED)
@example(case=_RECREATE_THEN_DELETED)
@example(case=_UPDATE_THEN_DELETED)
@example(case=_DELETED_THEN_PUT)
@example(case=_WRITTEN_AGAIN_AFTER)
@given(case=failing_cases(concurrent=True))
def test_a_concurrent_write_survives_and_each_earlier_saga_write_of_its_key_conflicts(
    case: Case,
) -> None:
    checked = check_case(case)
    pinned = next((pinned for example, pinned in PINNED if example == case), None)
    if pinned is not None:
        outcome = checked.outcome
        failures = outcome.failed_compensations if isinstance(outcome, PartialFailure) else ()
        conflicts = tuple(
            (
                failure.path,
                failure.error.expected,
                failure.error.expected_deleted,
                failure.error.found,
                failure.error.found_deleted,
            )
            for failure in failures
            if isinstance(failure.error, VersionConflictError)
        )
        assert len(conflicts) == len(failures), outcome
        assert conflicts == pinned.conflicts, (conflicts, pinned)
        assert isinstance(outcome, PartialFailure if pinned.conflicts else Failure), outcome
        assert describe_a(checked.after[0]) == pinned.a, (checked.after[0], pinned)


# -- durable runs killed at a journal write -------------------------------------------------

SAGA_ID = "stores-1"
DEFINITION = "stores"


@st.composite
def durable_cases(draw: st.DrawFn) -> Case:
    """A failing case (no `FaultPlan`: a durable run drives its own interpreter), or one that
    succeeds."""
    fails = draw(st.booleans())
    return draw(failing_cases(faults=False) if fails else succeeding_cases())


def definitions_over(
    case: Case, run: Run, stores: Callable[[], Sequence[AnyStore]]
) -> SagaDefinitions:
    """The case's saga as a durable definition, over the stores the process has open."""
    definitions = SagaDefinitions()

    def saga(_input: object) -> Saga[object]:
        return build(case, stores(), run.expected, jsonable=True)

    definitions.saga(DEFINITION)(saga)
    return definitions


def recorded_shape(outcome: Outcome[object]) -> tuple[object, ...]:
    """What an outcome says, comparable between a live run and one read back from a journal."""
    match outcome:
        case Success(value=value):
            return ("success", value)
        case Failure(error=error, compensated=compensated):
            return ("failure", describe_error(error)[1:], compensated)
        case PartialFailure():
            failed = tuple(failure.path for failure in outcome.failed_compensations)
            return (
                "partial_failure",
                describe_error(outcome.error)[1:],
                outcome.compensated,
                failed,
            )


def counters(stores: Sequence[AnyStore]) -> list[int]:
    """Each store's next version, found by writing a probe key: a write applied twice would
    have taken one more."""
    versions: list[int] = []
    for store in stores:
        written = store.put("probe", 0).after
        assert written is not None
        versions.append(written.version)
    return versions


def open_journal(kind: JournalKind, folder: Path) -> Journal:
    if kind == "memory":
        return MemoryJournal()
    return SqliteJournal(folder / "journal.sqlite", synchronous="NORMAL")


@examples(50)
@given(case=durable_cases(), journal_kind=st.sampled_from(JOURNAL_KINDS), data=st.data())
def test_a_durable_run_killed_at_a_journal_write_restores_or_writes_exactly_once(
    case: Case, journal_kind: JournalKind, data: st.DataObject
) -> None:
    run = simulate(case.stores, case.ops, case.shape)
    prediction = predict(case, run)
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as closing:
        folder = Path(directory)

        # The run without a crash, on stores of its own: what the model says, and the journal
        # writes it makes.
        reference = open_stores(case.stores, folder / "reference", closing, "reference")
        counting = CrashingJournal(MemoryJournal())
        definitions = definitions_over(case, run, lambda: reference)
        expected = DurableSagas(counting, definitions).start(DEFINITION, None, saga_id=SAGA_ID)
        assert recorded_shape(expected)[0] == prediction.kind, (expected, prediction)
        if isinstance(expected, Success):
            assert expected.value == to_json(prediction.value), (expected, prediction)
        else:
            assert expected.compensated == prediction.compensated, (expected, prediction)
        expected_held = [held(store) for store in reference]
        for index, store in enumerate(reference):
            assert expected_held[index] == model_held(store, prediction.states[index]), (
                f"store {store.name} ({type(store).__name__}) holds\n  {expected_held[index]}\n"
                f"the model expects\n  {model_held(store, prediction.states[index])}"
            )

        # The same saga on identical stores, its process killed at one of those writes.
        stores = open_stores(case.stores, folder / "crashed", closing, "crashed")
        process = [stores]
        definitions = definitions_over(case, run, lambda: process[-1])
        journal = open_journal(journal_kind, folder)
        crash_at = data.draw(st.integers(0, counting.writes - 1), label="crash at journal write")
        after = data.draw(st.booleans(), label="just after it")
        dying = CrashingJournal(journal, crash_at=crash_at, after=after)
        with contextlib.suppress(Crash):
            DurableSagas(dying, definitions).start(DEFINITION, None, saga_id=SAGA_ID)
        assert dying.crashed, "the run finished before its crash"
        where = "the first" if crash_at == 0 else "a later"
        event(f"crashed {'after' if after else 'before'} {where} journal write")

        # A new process opens the same files and recovers; starting the id again returns the
        # recorded outcome (or runs the saga, if the crash came before it was created).
        restarted = [other_connection(store, closing) for store in stores]
        for store in stores:
            if not isinstance(store, MemoryStore):
                store.close()
        process.append(restarted)
        if isinstance(journal, SqliteJournal):
            journal.close()
            journal = open_journal(journal_kind, folder)
        closing.callback(journal.close)
        recovered = DurableSagas(journal, definitions).recover()
        event(f"recovered: {sorted(recovered) == [SAGA_ID]}")
        outcome = DurableSagas(journal, definitions).start(DEFINITION, None, saga_id=SAGA_ID)

        assert recorded_shape(outcome) == recorded_shape(expected), (
            f"after the crash and recovery: {outcome}; without a crash: {expected}"
        )
        for index, store in enumerate(restarted):
            assert held(store) == expected_held[index], (
                f"store {store.name} ({type(store).__name__}) after the crash and recovery:\n  "
                f"{held(store)}\nwithout a crash:\n  {expected_held[index]}"
            )
        assert counters(restarted) == counters(reference), "a write was applied twice"
