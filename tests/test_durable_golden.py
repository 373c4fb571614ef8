"""Golden journals: files an earlier fsaga wrote, replayed by the current code.

The journals in tests/fixtures/journals were recorded by tests/durable_worker.py (see
make_fixtures.py there), once with each schema version: a saga that succeeded, one that failed
and compensated, and one whose process was killed while a step ran. A change that breaks reading
them (the schema and its upgrades, the codec, how errors or outcomes are stored, how a replay
matches entries) fails here. Every test works on a copy: the committed files are never written.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from durable_worker import Declined, EvidenceJournal, Shop, order_definitions, read_evidence

from fsaga import Failure, Saga, Success, step
from fsaga.durable import DurableSagas, NonDeterminismError, RecordedError, SagaDefinitions
from fsaga.journal import SCHEMA_VERSION, Entry, JsonCodec, SqliteJournal

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "journals"
CLOCK = 1_750_000_000.0  # make_fixtures.py's fixed journal clock
VERSIONS = list(range(1, SCHEMA_VERSION + 1))
EARLIER_VERSIONS = VERSIONS[:-1]

FORWARD = [
    (kind, path, 1) for path in ("reserve", "create", "charge") for kind in ("intent", "completed")
]
TIMELINES: dict[str, list[tuple[str, str, int]]] = {
    "succeeded": [*FORWARD, ("intent", "notify", 1), ("completed", "notify", 1)],
    "failed": [
        *FORWARD[:5],
        ("failed", "charge", 1),
        ("compensation_intent", "create", 1),
        ("compensated", "create", 1),
        ("compensation_intent", "reserve", 1),
        ("compensated", "reserve", 1),
    ],
    "unfinished": FORWARD[:5],
}
INPUTS: dict[str, dict[str, Any]] = {
    "succeeded": {"decline": False, "sku": "sku-1"},
    "failed": {"decline": True, "sku": "sku-2"},
    "unfinished": {"decline": False, "sku": "sku-3"},
}


def fixture(stem: str, version: int) -> Path:
    """The golden file of `stem` recorded with schema `version` (see the fixtures' README)."""
    return FIXTURES / (f"{stem}.db" if version == 1 else f"{stem}-v{version}.db")


def fixture_copy(tmp_path: Path, stem: str, version: int = SCHEMA_VERSION) -> Path:
    copy = tmp_path / f"{stem}-v{version}.db"
    shutil.copyfile(fixture(stem, version), copy)
    return copy


@pytest.mark.parametrize("version", VERSIONS)
def test_every_schema_version_has_its_golden_journals(version: int) -> None:
    """A new schema version comes with its own golden files (make_fixtures.py writes them), so
    that the next version's upgrade is tested on them."""
    for stem in TIMELINES:
        assert user_version(fixture(stem, version)) == version


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stem", TIMELINES)
def test_a_golden_journal_reads_back_as_it_was_recorded(
    tmp_path: Path, stem: str, version: int
) -> None:
    with SqliteJournal(fixture_copy(tmp_path, stem, version)) as journal:
        [record] = journal.sagas()
        entries = journal.entries(record.saga_id)
        assert journal.integrity_check() == ["ok"]

    assert (record.saga_id, record.name, record.version) == (f"o-{stem}", "order", 1)
    assert JsonCodec().decode(record.input) == INPUTS[stem]
    assert (record.created_at, record.updated_at, record.recovery_attempts) == (CLOCK, CLOCK, 0)
    assert record.status == {"succeeded": "succeeded", "failed": "failed"}.get(stem, "running")
    assert [(entry.kind, entry.path, entry.attempt) for entry in entries] == TIMELINES[stem]
    assert [entry.seq for entry in entries] == list(range(1, len(entries) + 1))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("succeeded", Success("sku-1")),
        ("failed", Failure(RecordedError("Declined", "card declined"), ("create", "reserve"))),
    ],
)
def test_starting_a_finished_golden_saga_returns_its_recorded_outcome(
    tmp_path: Path, stem: str, expected: object, version: int
) -> None:
    evidence = tmp_path / "evidence.jsonl"
    db = fixture_copy(tmp_path, stem, version)
    with SqliteJournal(db) as journal:
        before = journal.entries(f"o-{stem}")
        runs = DurableSagas(EvidenceJournal(journal, evidence), order_definitions(Shop(evidence)))

        outcome = runs.start("order", INPUTS[stem], saga_id=f"o-{stem}")

        assert runs.recover() == {}
        assert journal.entries(f"o-{stem}") == before
    assert outcome == expected
    if isinstance(outcome, Failure):
        assert isinstance(outcome.error, Declined)  # the recorded type, imported again
    assert read_evidence(evidence) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_the_unfinished_golden_saga_recovers_to_its_outcome(tmp_path: Path, version: int) -> None:
    evidence = tmp_path / "evidence.jsonl"
    with SqliteJournal(fixture_copy(tmp_path, "unfinished", version)) as journal:
        before = journal.entries("o-unfinished")
        runs = DurableSagas(EvidenceJournal(journal, evidence), order_definitions(Shop(evidence)))

        outcomes = runs.recover()

        after = journal.entries("o-unfinished")
        record = journal.get("o-unfinished")
    assert outcomes == {"o-unfinished": Success("sku-3")}
    assert record is not None
    assert record.status == "succeeded"
    assert after[: len(before)] == before
    assert [(entry.kind, entry.path, entry.attempt) for entry in after[len(before) :]] == [
        ("unknown", "charge", 1),  # in flight at the kill: its outcome is unknown...
        ("intent", "charge", 2),  # ...and the step is idempotent: run again, same key
        ("completed", "charge", 2),
        ("intent", "notify", 1),
        ("completed", "notify", 1),
    ]
    assert [(line["kind"], line["path"], line["key"]) for line in read_evidence(evidence)] == [
        ("action", "charge", "o-unfinished/charge"),
        ("action", "notify", "o-unfinished/notify"),
        ("outcome", "-", "o-unfinished"),
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_changed_definition_does_not_replay_the_golden_saga_and_writes_no_entry(
    tmp_path: Path, version: int
) -> None:
    """The same name and version with other steps: the replay diverges at the second step,
    `recover` returns `NonDeterminismError` for the saga, and the journal is left exactly as
    it was: its timeline, and its record too (the refused recovery is not counted towards
    parking the saga: it wrote nothing)."""
    ran: list[str] = []

    def act(path: str) -> str:
        ran.append(path)
        return f"{path}-done"

    changed = SagaDefinitions()

    @changed.saga("order")
    def order(input: dict[str, Any]) -> Saga[str]:
        return (
            step(lambda: act("reserve"), lambda _: ran.append("undo reserve"), name="reserve")
            .then(step(lambda: act("audit"), name="audit"))
            .then(step(lambda: act("charge"), name="charge"))
            .map(lambda _: str(input["sku"]))
        )

    db = fixture_copy(tmp_path, "unfinished", version)
    with SqliteJournal(db) as journal:
        before = journal.entries("o-unfinished")
        rows_before = table_rows(db)

        outcomes = DurableSagas(journal, changed).recover()

        after = journal.entries("o-unfinished")
        record = journal.get("o-unfinished")
        assert table_rows(db) == rows_before
    error = outcomes["o-unfinished"]
    assert isinstance(error, NonDeterminismError)
    assert "'audit'" in str(error)
    assert "'create'" in str(error)
    assert after == before
    assert ran == []
    assert record is not None
    assert record.status == "running"
    assert record.outcome is None
    assert record.recovery_attempts == 0


def table_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the journal file, read by a connection of its own."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        tables = [
            str(name)
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in tables
        }


def user_version(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])


SAGA_FIELDS = (
    "saga_id, name, version, input, status, outcome, recovery_attempts, created_at, updated_at"
)
"""The columns of a saga's row in every schema version."""


def saga_rows(db: Path) -> list[tuple[object, ...]]:
    """Every saga's fields that every schema version has, by id, read with plain SQL."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(f"SELECT {SAGA_FIELDS} FROM sagas ORDER BY saga_id").fetchall()


def entry_rows(db: Path) -> list[tuple[object, ...]]:
    """Every entry as (saga id, seq, kind, path, attempt, payload), whatever the file's schema
    version (from version 3, entries name their saga by its integer key)."""
    columns = "seq, kind, path, attempt, payload"
    query = (
        f"SELECT sagas.saga_id, {columns} FROM entries JOIN sagas ON sagas.id = entries.saga"
        if user_version(db) >= 3
        else f"SELECT saga_id, {columns} FROM entries"
    )
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(f"{query} ORDER BY 1, 2").fetchall()


def schema_of(db: Path) -> list[tuple[object, ...]]:
    """The file's tables and indexes as SQLite keeps them (without where their pages are)."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
        ).fetchall()


@pytest.mark.parametrize("version", EARLIER_VERSIONS)
@pytest.mark.parametrize("stem", TIMELINES)
def test_a_golden_journal_of_an_earlier_schema_is_upgraded_in_place_when_opened(
    tmp_path: Path, stem: str, version: int
) -> None:
    """Opening a file of an earlier version upgrades it: every saga and entry is kept as it
    was, the file's tables and indexes are exactly a new file's, and it takes what the later
    versions add (a dead saga's last recovery, from version 2; rejected entries, from 2)."""
    db = fixture_copy(tmp_path, stem, version)
    assert user_version(db) == version
    old_sagas, old_entries = saga_rows(db), entry_rows(db)

    with SqliteJournal(db) as journal:
        [record] = journal.sagas()
        entries = journal.entries(record.saga_id)
        assert journal.integrity_check() == ["ok"]
    with SqliteJournal(tmp_path / "new.db"):
        pass

    assert user_version(db) == SCHEMA_VERSION
    assert saga_rows(db) == old_sagas
    assert entry_rows(db) == old_entries
    assert schema_of(db) == schema_of(tmp_path / "new.db")
    assert (record.last_recovery_at, record.last_recovery_error) == (None, None)
    with contextlib.closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    upgraded = table_rows(db)
    with SqliteJournal(db) as journal:  # opened again: nothing changes...
        assert table_rows(db) == upgraded
        if record.status == "running":  # ...and it takes what the later versions add
            rejected = Entry(len(entries) + 1, "rejected", "charge", 1, b'{"error":["E","e"]}')
            journal.append(record.saga_id, [rejected])
            assert journal.claim_for_recovery(record.saga_id, max_attempts=0) is False
            assert journal.sagas("dead") == [journal.get(record.saga_id)]
            assert journal.release(record.saga_id).status == "running"
            assert journal.entries(record.saga_id)[-1] == rejected
            assert journal.sagas("running") == [journal.get(record.saga_id)]


def test_an_upgrade_writes_each_page_of_the_rebuilt_tables_once(tmp_path: Path) -> None:
    """The upgrade to version 3 copies both tables in key order and builds the indexes last,
    and drops the old tables without writing their pages again (SQLite built to delete
    securely, as many distributions build it, would zero each one through the WAL): its commit
    writes about as many pages as the upgraded file holds. Counted in the WAL, which the
    journal keeps while it is open."""
    db = fixture_copy(tmp_path, "unfinished", 2)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as connection:
        connection.execute("BEGIN")
        for number in range(300):
            saga_id = f"extra-{number}"
            connection.execute(
                "INSERT INTO sagas (saga_id, name, version, input, status, recovery_attempts,"
                " created_at, updated_at) VALUES (?, 'order', 1, ?, 'running', 0, ?, ?)",
                (saga_id, b"x" * 100, CLOCK, CLOCK),
            )
            connection.executemany(
                "INSERT INTO entries (saga_id, seq, kind, path, attempt, payload)"
                " VALUES (?, ?, 'intent', 'step', 1, ?)",
                [(saga_id, seq, b"y" * 40) for seq in range(1, 11)],
            )
        connection.execute("COMMIT")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])

        with SqliteJournal(db):
            wal = db.with_name(db.name + "-wal").stat().st_size
        pages = int(connection.execute("PRAGMA page_count").fetchone()[0])
        free = int(connection.execute("PRAGMA freelist_count").fetchone()[0])

    frames = (wal - 32) // (24 + page_size)  # the WAL's header, then a header per frame
    assert frames <= pages - free + 2  # and the schema's page, and the free list's
    with SqliteJournal(db) as journal:
        assert len(journal.sagas("running")) == 301
        assert journal.pragmas()["journal_mode"] == "wal"
        assert journal.integrity_check() == ["ok"]


@pytest.mark.parametrize("version", EARLIER_VERSIONS)
def test_journals_opening_one_file_of_an_earlier_schema_at_once_upgrade_it_once(
    tmp_path: Path, version: int
) -> None:
    """Openers racing on an earlier version's file all open it: the upgrade is one transaction
    that looks at the version again once it holds the write lock, so only the first one
    upgrades."""
    for attempt in range(10):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        db = fixture_copy(folder, "unfinished", version)
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_it(
            db: Path = db,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                SqliteJournal(db).close()
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert user_version(db) == SCHEMA_VERSION
        assert len(entry_rows(db)) == len(TIMELINES["unfinished"])
