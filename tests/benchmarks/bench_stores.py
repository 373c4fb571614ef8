"""Benchmark of `fsaga.stores`: a 10-write `transaction` over three `SqliteStore`s, against the
same writes done by hand with `sqlite3` and try/except.

Run: ``.venv/bin/python tests/benchmarks/bench_stores.py`` (add ``--quick`` for a short run).
Not part of the test suite: it measures, it does not assert. Every figure is measured in this one
process, on files in the system's temporary directory (so on the same disk).

The work (one iteration): 10 writes spread over three stores, ``orders``, ``stock`` and
``payments`` -- 4 saves of new keys, 4 updates of fixed keys (counters in small JSON objects),
2 deletes of keys created for the iteration beforehand (untimed) -- then an 11th ordinary step:
a no-op on success; on failure it raises, and the 10 writes are undone in reverse order. Keys
carry the iteration's number, so every iteration writes the same shapes to fresh keys. Values
are small JSON objects, encoded as `fsaga.journal.JsonCodec` does.

- fsaga: ``transaction(lambda tx: ...)`` of the 10 writes and the 11th `step`, built afresh
  each iteration (its keys change) and run with `SyncInterpreter`: one ``BEGIN IMMEDIATE``
  transaction per write and per undo (10 commits on success, 20 on failure).
- by hand: what a careful developer writes without a library, with plain `sqlite3` on tables
  of the same shape and the same pragmas (WAL, the same ``synchronous``, ``busy_timeout``), one
  connection per file: each write is its own transaction (read the previous row, write the new
  one, commit), a try/except restores each previous row (or deletes a created one) in reverse
  order, each restore its own transaction. It checks no versions (a restore overwrites whatever
  is there) and records no write ids, so it is safe neither against concurrent writers nor
  against running a write twice.
- equivalent: by hand again, but doing in SQL what `SqliteStore` does per write -- look up the
  write id, read the previous row (or its deletion's version), bump the store's version
  counter, upsert or delete (recording the deletion's version), record the write id and the
  change -- and per undo -- look up the write id's record, read the key's state, restore only
  if it still holds what the write left (else raise), mark the write id undone -- in the same
  tables as `SqliteStore`'s (``fsaga_stores``, ``fsaga_store_deletions``,
  ``fsaga_store_writes``), with one connection per store as `SqliteStore` has. It keeps the
  rows' bytes as they are (no decoding and re-encoding of values read back), so fsaga minus
  equivalent is the cost of fsaga's Python layer (engine, steps, store methods, codec), and
  equivalent minus by hand the cost of the bookkeeping in SQL (in the one-file layout, plus
  that of three connections instead of one).

Both layouts are measured: the three stores in one file, and in three files. Each
implementation has its own files, whose WAL is first grown to its steady size (`grow_wal`), as
in a long-running application. Rounds of the three alternate (in a rotating order), so all see
the same state of the disk; each figure is the best round (least noise), the median is shown
beside it. Everything runs under ``synchronous=FULL`` (`SqliteStore`'s default: a commit waits
for the disk) and under ``synchronous=NORMAL``. The figure the issue asks for is fsaga / by hand;
the run also checks that the three leave the same values behind (and fsaga and equivalent the
same versions and write records), so that the figures compare the same work.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeAlias

from fsaga import Saga, step
from fsaga.interpreter import SyncInterpreter
from fsaga.stores import SqliteStore, transaction
from fsaga.stores.sqlite import Synchronous

BUSY_TIMEOUT: Final = 5.0  # SqliteStore's default, in seconds
MODES: Final[tuple[Synchronous, ...]] = ("FULL", "NORMAL")
STORES: Final = ("orders", "stock", "payments")
LAYOUTS: Final = ("one file", "three files")
WRITES: Final = 10

Record: TypeAlias = dict[str, int | str]
Store: TypeAlias = SqliteStore[str, Record]
Row: TypeAlias = tuple[bytes, int] | None


class Declined(Exception):
    pass


def confirm() -> None:
    return None


def declined() -> None:
    raise Declined("card declined")


def encode(value: Record) -> bytes:
    """`JsonCodec().encode`, by hand."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode()


def decode(data: bytes) -> Record:
    value: Record = json.loads(data)
    return value


def order(number: int) -> Record:
    return {"status": "placed", "sku": "sku-1", "quantity": 1, "total": 1999, "number": number}


def lines(number: int) -> Record:
    return {"order": f"o-{number}", "sku": "sku-1", "quantity": 1, "price": 1999}


def reservation(number: int) -> Record:
    return {"order": f"o-{number}", "sku": "sku-1", "quantity": 1}


def payment(number: int) -> Record:
    return {"order": f"o-{number}", "amount": 1999, "status": "captured"}


def leftover(number: int) -> Record:
    return {"owner": f"c-{number}", "note": "to delete"}


def take_one(value: Record) -> Record:
    return {**value, "count": int(value["count"]) - 1}


def add_one(value: Record) -> Record:
    return {**value, "count": int(value["count"]) + 1}


def add_total(value: Record) -> Record:
    return {**value, "count": int(value["count"]) + 1999}


# The keys written in every iteration, updated in place (created once, before any round).
FIXED: Final[dict[str, tuple[str, ...]]] = {
    "orders": ("count",),
    "stock": ("sku-1", "sku-2"),
    "payments": ("balance",),
}
INITIAL: Final[Record] = {"count": 1_000_000}


def files(folder: Path, layout: str, name: str) -> dict[str, Path]:
    """Each store's file."""
    if layout == "one file":
        return dict.fromkeys(STORES, folder / f"{name}.db")
    return {store: folder / f"{name}-{store}.db" for store in STORES}


def connect(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    """A connection with `SqliteStore`'s pragmas."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout = {round(BUSY_TIMEOUT * 1000)}")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise RuntimeError(f"{path} cannot use WAL mode: {mode}")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    return db


def grow_wal(path: Path) -> None:
    """Write some 5 MiB through the file's WAL once, so that the WAL file has its steady size and
    commits overwrite it: while it grows, each sync also syncs its new size, which holds back
    most the implementation that writes the fewest pages per commit (its WAL grows slowest)."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        db.execute("CREATE TABLE ballast (data BLOB NOT NULL)")
        db.execute("BEGIN IMMEDIATE")
        rows = ((bytes(4000),) for _ in range(1300))
        db.executemany("INSERT INTO ballast (data) VALUES (?)", rows)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(RESTART)")  # the next commit writes from the start
    finally:
        db.close()


def contents(paths: dict[str, Path]) -> tuple[dict[str, dict[str, tuple[bytes, int]]], int]:
    """Every store's keys with the bytes and version of their values, and the number of write
    records (0 where there is no ``fsaga_store_writes`` table)."""
    found: dict[str, dict[str, tuple[bytes, int]]] = {}
    records = 0
    for path in set(paths.values()):
        db = sqlite3.connect(path)
        try:
            for store in (name for name, where in paths.items() if where == path):
                rows = db.execute(f"SELECT key, value, version FROM {store}").fetchall()
                found[store] = {key: (value, version) for key, value, version in rows}
            table = "SELECT 1 FROM sqlite_master WHERE name = 'fsaga_store_writes'"
            if db.execute(table).fetchone() is not None:
                records += db.execute("SELECT count(*) FROM fsaga_store_writes").fetchone()[0]
        finally:
            db.close()
    return found, records


def values(found: dict[str, dict[str, tuple[bytes, int]]]) -> dict[str, dict[str, bytes]]:
    return {store: {key: row[0] for key, row in rows.items()} for store, rows in found.items()}


class Fsaga:
    """The 10 writes as a `transaction` over three `SqliteStore`s."""

    def __init__(self, paths: dict[str, Path], synchronous: Synchronous) -> None:
        self.paths = paths
        self.stores: dict[str, Store] = {
            name: SqliteStore(path, name, synchronous=synchronous, busy_timeout=BUSY_TIMEOUT)
            for name, path in paths.items()
        }
        for name, keys in FIXED.items():
            for key in keys:
                self.stores[name].put(key, INITIAL)
        self.interpreter = SyncInterpreter()

    def prepare(self, first: int, count: int) -> None:
        """Create the keys the iterations delete (untimed)."""
        orders, stock = self.stores["orders"], self.stores["stock"]
        for number in range(first, first + count):
            orders.put(f"cart-{number}", leftover(number))
            stock.put(f"hold-{number}", leftover(number))

    def build(self, number: int, last: Callable[[], None]) -> Saga[None]:
        orders, stock, payments = (self.stores[name] for name in STORES)
        return transaction(
            lambda tx: (
                tx.save(orders, f"o-{number}", order(number))
                .then(tx.update(stock, "sku-1", take_one))
                .then(tx.save(stock, f"r-{number}", reservation(number)))
                .then(tx.delete(orders, f"cart-{number}"))
                .then(tx.update(stock, "sku-2", take_one))
                .then(tx.save(payments, f"p-{number}", payment(number)))
                .then(tx.update(payments, "balance", add_total))
                .then(tx.delete(stock, f"hold-{number}"))
                .then(tx.save(orders, f"l-{number}", lines(number)))
                .then(tx.update(orders, "count", add_one))
                .then(step(last, name="confirm"))
            )
        )

    def round(self, first: int, count: int, last: Callable[[], None]) -> float:
        """Seconds per iteration."""
        build, interpreter = self.build, self.interpreter
        began = time.perf_counter()
        for number in range(first, first + count):
            build(number, last).run(interpreter)
        return (time.perf_counter() - began) / count

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


class HandWritten:
    """What the two hand-written implementations share: connections, statements, the timing."""

    def __init__(
        self, paths: dict[str, Path], synchronous: Synchronous, *, per_store: bool
    ) -> None:
        self.paths = paths
        if per_store:
            self.db = {store: connect(path, synchronous) for store, path in paths.items()}
        else:
            by_file = {path: connect(path, synchronous) for path in set(paths.values())}
            self.db = {store: by_file[path] for store, path in paths.items()}
        self.select = {s: f"SELECT value, version FROM {s} WHERE key = ?" for s in STORES}
        self.upsert = {
            s: f"INSERT INTO {s} (key, value, version) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version"
            for s in STORES
        }
        self.remove = {s: f"DELETE FROM {s} WHERE key = ?" for s in STORES}
        self.create = {
            s: f"CREATE TABLE {s} (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,"
            " version INTEGER NOT NULL) WITHOUT ROWID"
            for s in STORES
        }

    def prepare(self, first: int, count: int) -> None:
        """Create the keys the iterations delete (untimed)."""
        raise NotImplementedError

    def run(self, number: int, last: Callable[[], None]) -> Exception | None:
        """One iteration: the error it was undone for, or None."""
        raise NotImplementedError

    def round(self, first: int, count: int, last: Callable[[], None]) -> float:
        """Seconds per iteration."""
        run = self.run
        began = time.perf_counter()
        for number in range(first, first + count):
            run(number, last)
        return (time.perf_counter() - began) / count

    def close(self) -> None:
        for db in set(self.db.values()):
            db.close()


class ByHand(HandWritten):
    """The 10 writes with plain `sqlite3`: no version checks, no write ids."""

    def __init__(self, paths: dict[str, Path], synchronous: Synchronous) -> None:
        super().__init__(paths, synchronous, per_store=False)
        for store, db in self.db.items():
            db.execute(self.create[store])
            for key in FIXED[store]:
                db.execute(self.upsert[store], (key, encode(INITIAL), 1))

    def prepare(self, first: int, count: int) -> None:
        """Create the keys the iterations delete (untimed)."""
        for store, prefix in (("orders", "cart"), ("stock", "hold")):
            db = self.db[store]
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                self.upsert[store],
                ((f"{prefix}-{n}", encode(leftover(n)), 1) for n in range(first, first + count)),
            )
            db.execute("COMMIT")

    def save(self, store: str, key: str, value: Record) -> tuple[str, str, Row]:
        db = self.db[store]
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(self.select[store], (key,)).fetchone()
            db.execute(self.upsert[store], (key, encode(value), 1 if row is None else row[1] + 1))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return store, key, row

    def update(
        self, store: str, key: str, function: Callable[[Record], Record]
    ) -> tuple[str, str, Row]:
        db = self.db[store]
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(self.select[store], (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            value = function(decode(row[0]))
            db.execute(self.upsert[store], (key, encode(value), row[1] + 1))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return store, key, row

    def delete(self, store: str, key: str) -> tuple[str, str, Row]:
        db = self.db[store]
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(self.select[store], (key,)).fetchone()
            db.execute(self.remove[store], (key,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return store, key, row

    def restore(self, store: str, key: str, row: Row) -> None:
        db = self.db[store]
        db.execute("BEGIN IMMEDIATE")
        try:
            if row is None:
                db.execute(self.remove[store], (key,))
            else:
                db.execute(self.upsert[store], (key, row[0], row[1]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def run(self, number: int, last: Callable[[], None]) -> Exception | None:
        save, update, delete = self.save, self.update, self.delete
        done: list[tuple[str, str, Row]] = []
        try:
            done.append(save("orders", f"o-{number}", order(number)))
            done.append(update("stock", "sku-1", take_one))
            done.append(save("stock", f"r-{number}", reservation(number)))
            done.append(delete("orders", f"cart-{number}"))
            done.append(update("stock", "sku-2", take_one))
            done.append(save("payments", f"p-{number}", payment(number)))
            done.append(update("payments", "balance", add_total))
            done.append(delete("stock", f"hold-{number}"))
            done.append(save("orders", f"l-{number}", lines(number)))
            done.append(update("orders", "count", add_one))
            last()
        except Exception as error:
            for store, key, row in reversed(done):
                self.restore(store, key, row)
            return error
        return None


# SqliteStore's own tables, as `fsaga.stores.sqlite` creates them.
META: Final = (
    "CREATE TABLE IF NOT EXISTS fsaga_stores (name TEXT PRIMARY KEY NOT NULL,"
    " key_type TEXT NOT NULL CHECK (key_type IN ('str', 'int')),"
    " last_version INTEGER NOT NULL CHECK (last_version >= 0),"
    " schema_version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fsaga_store_deletions (store TEXT NOT NULL, key NOT NULL,"
    " version INTEGER NOT NULL, PRIMARY KEY (store, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS fsaga_store_writes (store TEXT NOT NULL, write_id TEXT NOT NULL,"
    " key NOT NULL, applied INTEGER NOT NULL CHECK (applied IN (0, 1)), before_value BLOB,"
    " before_version INTEGER, after_value BLOB, after_version INTEGER,"
    " undone INTEGER NOT NULL CHECK (undone IN (0, 1)), PRIMARY KEY (store, write_id))"
    " WITHOUT ROWID",
)
RECORDED: Final = (
    "SELECT key, applied, before_value, before_version, after_value, after_version, undone"
    " FROM fsaga_store_writes WHERE store = ? AND write_id = ?"
)
BUMP: Final = (
    "UPDATE fsaga_stores SET last_version = last_version + 1 WHERE name = ? RETURNING last_version"
)
RECORD: Final = (
    "INSERT INTO fsaga_store_writes (store, write_id, key, applied, before_value,"
    " before_version, after_value, after_version, undone) VALUES (?, ?, ?, 1, ?, ?, ?, ?, 0)"
)
DELETION: Final = "SELECT version FROM fsaga_store_deletions WHERE store = ? AND key = ?"
SET_DELETION: Final = (
    "INSERT INTO fsaga_store_deletions (store, key, version) VALUES (?, ?, ?)"
    " ON CONFLICT (store, key) DO UPDATE SET version = excluded.version"
)
DROP_DELETION: Final = "DELETE FROM fsaga_store_deletions WHERE store = ? AND key = ?"
MARK_UNDONE: Final = (
    "INSERT INTO fsaga_store_writes (store, write_id, key, applied, undone) VALUES (?, ?, ?, 0, 1)"
    " ON CONFLICT (store, write_id) DO UPDATE SET undone = 1"
)

# A key's state: its row's value and version, (None, version) once deleted, None if never written.
State: TypeAlias = tuple[bytes | None, int] | None
# What an undo needs: store, key, write id, the state before and the state after.
Written: TypeAlias = tuple[str, str, str, State, State]


def version(state: State) -> int:
    return 0 if state is None else state[1]


class Conflict(Exception):
    pass


class Equivalent(HandWritten):
    """The 10 writes by hand, with the SQL work `SqliteStore` does: write ids, version counter,
    conditional undo; one connection per store."""

    def __init__(self, paths: dict[str, Path], synchronous: Synchronous) -> None:
        super().__init__(paths, synchronous, per_store=True)
        for store, db in self.db.items():
            db.execute("BEGIN IMMEDIATE")
            for statement in META:
                db.execute(statement)
            db.execute(self.create[store])
            db.execute("INSERT INTO fsaga_stores VALUES (?, 'str', 0, 1)", (store,))
            db.execute("COMMIT")
            for key in FIXED[store]:
                db.execute("BEGIN IMMEDIATE")
                version = db.execute(BUMP, (store,)).fetchone()[0]
                db.execute(self.upsert[store], (key, encode(INITIAL), version))
                db.execute("COMMIT")
        self.run_id = ""

    def prepare(self, first: int, count: int) -> None:
        """Create the keys the iterations delete (untimed)."""
        for store, prefix in (("orders", "cart"), ("stock", "hold")):
            db = self.db[store]
            db.execute("BEGIN IMMEDIATE")
            for number in range(first, first + count):
                version = db.execute(BUMP, (store,)).fetchone()[0]
                db.execute(
                    self.upsert[store], (f"{prefix}-{number}", encode(leftover(number)), version)
                )
            db.execute("COMMIT")

    def _begin(self, db: sqlite3.Connection, store: str, write_id: str, key: str) -> State:
        db.execute("BEGIN IMMEDIATE")
        if db.execute(RECORDED, (store, write_id)).fetchone() is not None:
            raise RuntimeError(f"write id {write_id} was used already")  # never, here
        return self._state(db, store, key)

    def _state(self, db: sqlite3.Connection, store: str, key: str) -> State:
        row: Row = db.execute(self.select[store], (key,)).fetchone()
        if row is not None:
            return row
        deleted = db.execute(DELETION, (store, key)).fetchone()
        return None if deleted is None else (None, deleted[0])

    def put(self, store: str, key: str, write_id: str, data: bytes, before: State) -> State:
        db = self.db[store]
        new: int = db.execute(BUMP, (store,)).fetchone()[0]
        db.execute(self.upsert[store], (key, data, new))
        if before is not None and before[0] is None:
            db.execute(DROP_DELETION, (store, key))
        db.execute(RECORD, (store, write_id, key, *(before or (None, None)), data, new))
        db.execute("COMMIT")
        return data, new

    def save(self, store: str, key: str, value: Record) -> Written:
        db = self.db[store]
        write_id = f"{self.run_id}/save:{store}:{key}"
        data = encode(value)
        try:
            before = self._begin(db, store, write_id, key)
            after = self.put(store, key, write_id, data, before)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return store, key, write_id, before, after

    def update(self, store: str, key: str, function: Callable[[Record], Record]) -> Written:
        db = self.db[store]
        write_id = f"{self.run_id}/update:{store}:{key}"
        try:
            before = self._begin(db, store, write_id, key)
            if before is None or before[0] is None:
                raise KeyError(key)
            data = encode(function(decode(before[0])))
            after = self.put(store, key, write_id, data, before)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return store, key, write_id, before, after

    def delete(self, store: str, key: str) -> Written:
        db = self.db[store]
        write_id = f"{self.run_id}/delete:{store}:{key}"
        try:
            before = self._begin(db, store, write_id, key)
            after = before
            if before is not None and before[0] is not None:
                db.execute(self.remove[store], (key,))
                after = (None, db.execute(BUMP, (store,)).fetchone()[0])
                db.execute(SET_DELETION, (store, key, after[1]))
            db.execute(
                RECORD, (store, write_id, key, *(before or (None, None)), *(after or (None, None)))
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return store, key, write_id, before, after

    def undo(self, store: str, key: str, write_id: str, before: State, after: State) -> None:
        db = self.db[store]
        db.execute("BEGIN IMMEDIATE")
        try:
            recorded = db.execute(RECORDED, (store, write_id)).fetchone()
            if recorded is not None and recorded[0] != key:
                raise RuntimeError(f"write id {write_id} was given to another key")  # never
            if recorded is None or not recorded[6]:
                found = self._state(db, store, key)
                if version(after) == version(before):
                    pass  # a delete that found no value
                elif version(found) == version(after):
                    self._restore(db, store, key, before, found)
                elif version(found) != version(before) and (
                    (found is not None and found[0] is not None)
                    or (before is not None and before[0] is not None)
                ):
                    raise Conflict(store, key, version(after), found)
                db.execute(MARK_UNDONE, (store, write_id, key))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _restore(
        self, db: sqlite3.Connection, store: str, key: str, state: State, found: State
    ) -> None:
        if state is not None and state[0] is not None:
            db.execute(self.upsert[store], (key, state[0], state[1]))
        elif found is not None and found[0] is not None:
            db.execute(self.remove[store], (key,))
        if state is not None and state[0] is None:
            db.execute(SET_DELETION, (store, key, state[1]))
        elif found is not None and found[0] is None:
            db.execute(DROP_DELETION, (store, key))

    def run(self, number: int, last: Callable[[], None]) -> Exception | None:
        self.run_id = uuid.uuid4().hex
        save, update, delete = self.save, self.update, self.delete
        done: list[Written] = []
        try:
            done.append(save("orders", f"o-{number}", order(number)))
            done.append(update("stock", "sku-1", take_one))
            done.append(save("stock", f"r-{number}", reservation(number)))
            done.append(delete("orders", f"cart-{number}"))
            done.append(update("stock", "sku-2", take_one))
            done.append(save("payments", f"p-{number}", payment(number)))
            done.append(update("payments", "balance", add_total))
            done.append(delete("stock", f"hold-{number}"))
            done.append(save("orders", f"l-{number}", lines(number)))
            done.append(update("orders", "count", add_one))
            last()
        except Exception as error:
            for written in reversed(done):
                self.undo(*written)
            return error
        return None


Implementation: TypeAlias = Fsaga | HandWritten
NAMES: Final = ("fsaga", "by hand", "equivalent")


def measure(
    folder: Path, layout: str, synchronous: Synchronous, iterations: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per iteration of each implementation, per round, for each outcome; prints
    whether the three left the stores with the same contents."""
    tag = f"{'one' if layout == 'one file' else 'three'}-{synchronous.lower()}"
    implementations: dict[str, Implementation] = {
        "fsaga": Fsaga(files(folder, layout, f"fsaga-{tag}"), synchronous),
        "by hand": ByHand(files(folder, layout, f"hand-{tag}"), synchronous),
        "equivalent": Equivalent(files(folder, layout, f"equivalent-{tag}"), synchronous),
    }
    for path in {path for each in implementations.values() for path in each.paths.values()}:
        grow_wal(path)  # while the implementations' connections are open, so the WAL stays
    times: dict[str, dict[str, list[float]]] = {}
    number = 0
    try:
        for outcome, last in (("success", confirm), ("failure", declined)):
            warm_up = max(1, iterations // 10)
            for implementation in implementations.values():
                implementation.prepare(number, warm_up)
                implementation.round(number, warm_up, last)
            number += warm_up
            times[outcome] = {name: [] for name in NAMES}
            for index in range(rounds):
                for implementation in implementations.values():
                    implementation.prepare(number, iterations)
                shift = index % len(NAMES)
                for name in NAMES[shift:] + NAMES[:shift]:
                    seconds = implementations[name].round(number, iterations, last)
                    times[outcome][name].append(seconds)
                number += iterations
    finally:
        for implementation in implementations.values():
            implementation.close()
    (ours, our_records), (hand, _), (equivalent, their_records) = (
        contents(implementation.paths) for implementation in implementations.values()
    )
    if values(ours) == values(hand) == values(equivalent):
        keys = sum(len(rows) for rows in ours.values())
        same = f"same values in all three ({keys} keys)"
        if ours == equivalent and our_records == their_records:
            same += f", same versions and {our_records} write records in fsaga and equivalent"
        else:
            same += "; VERSIONS OR WRITE RECORDS DIFFER between fsaga and equivalent"
    else:
        same = "VALUES DIFFER between the implementations: the figures compare different work"
    print(f"  {layout}, synchronous={synchronous}: {same}")
    return times


def build_time(quick: bool) -> float:
    """Seconds to build one iteration's saga (no I/O)."""
    with tempfile.TemporaryDirectory() as folder:
        fsaga = Fsaga(files(Path(folder), "one file", "build"), "NORMAL")
        try:
            counter = iter(range(10**9))
            number = 200 if quick else 2_000
            rounds = timeit.repeat(lambda: fsaga.build(next(counter), confirm), number=number)
        finally:
            fsaga.close()
    return min(rounds) / number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer iterations and rounds")
    args = parser.parse_args(argv)
    iterations, rounds = (20, 5) if args.quick else (100, 12)
    temporary = tempfile.gettempdir()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}; "
        f"SQLite {sqlite3.sqlite_version}; files in {temporary} "
        f"({rounds} rounds of {iterations} iterations of {WRITES} writes per figure)"
    )
    results: list[tuple[str, Synchronous, str, dict[str, list[float]]]] = []
    with tempfile.TemporaryDirectory(dir=temporary) as folder:
        for layout in LAYOUTS:
            for synchronous in MODES:
                measured = measure(Path(folder), layout, synchronous, iterations, rounds)
                for outcome, times in measured.items():
                    results.append((layout, synchronous, outcome, times))

    print()
    print("Per iteration (10 writes and an 11th step; on failure also 10 undos), us: best (median)")
    print(
        f"{'layout':<12}{'sync':<7}{'outcome':<8}{'fsaga':>18}{'by hand':>18}{'equivalent':>18}"
        f"{'fsaga/hand':>12}{'fsaga/equiv':>12}{'equiv/hand':>12}"
    )
    for layout, synchronous, outcome, times in results:
        best = {name: min(times[name]) for name in NAMES}
        cells = "".join(
            f"{best[name] * 1e6:>9.0f} ({statistics.median(times[name]) * 1e6:>6.0f})"
            for name in NAMES
        )
        print(
            f"{layout:<12}{synchronous:<7}{outcome:<8}{cells}"
            f"{best['fsaga'] / best['by hand']:>11.2f}x"
            f"{best['fsaga'] / best['equivalent']:>11.2f}x"
            f"{best['equivalent'] / best['by hand']:>11.2f}x"
        )

    print()
    print(
        "Per write (a write or an undo: one transaction each; 10 per success, 20 per failure), "
        "us, best rounds"
    )
    print(
        f"{'layout':<12}{'sync':<7}{'outcome':<8}{'fsaga':>9}{'by hand':>9}{'equiv':>9}"
        f"{'fsaga - equiv (Python layer)':>30}{'equiv - hand (SQL bookkeeping)':>32}"
    )
    for layout, synchronous, outcome, times in results:
        writes = WRITES if outcome == "success" else 2 * WRITES
        fsaga, hand, equivalent = (min(times[name]) / writes * 1e6 for name in NAMES)
        print(
            f"{layout:<12}{synchronous:<7}{outcome:<8}{fsaga:>9.1f}{hand:>9.1f}{equivalent:>9.1f}"
            f"{fsaga - equivalent:>30.1f}{equivalent - hand:>32.1f}"
        )
    print()
    print(
        f"Building one iteration's transaction (no I/O, included above): "
        f"{build_time(args.quick) * 1e6:.1f} us"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
