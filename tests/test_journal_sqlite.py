"""`SqliteJournal` beyond the shared contract: pragmas, files, schema versions, damage, and
the write lock.

The contract every journal keeps is tested in test_journal.py, and so are several journals,
threads and processes, sharing one file.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from fsaga.journal import (
    SCHEMA_VERSION,
    Entry,
    JournalCorruptError,
    JournalError,
    JournalVersionError,
    SqliteJournal,
    Synchronous,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


def raw(path: Path) -> contextlib.closing[sqlite3.Connection]:
    """A plain sqlite3 connection to the file, closed when the block ends."""
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("NORMAL", 1)])
def test_the_pragmas_are_in_effect(path: Path, synchronous: Synchronous, level: int) -> None:
    with SqliteJournal(path, synchronous=synchronous, busy_timeout=1.5) as journal:
        assert journal.pragmas() == {
            "journal_mode": "wal",
            "synchronous": level,
            "busy_timeout": 1500,
            "foreign_keys": 1,
        }
    with raw(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_the_default_is_synchronous_full(path: Path) -> None:
    with SqliteJournal(path) as journal:
        assert journal.pragmas()["synchronous"] == 2
        assert repr(journal) == f"SqliteJournal({str(path)!r}, synchronous='FULL')"
        assert journal.path == str(path)
    assert repr(journal).endswith(", closed)")


@pytest.mark.parametrize("memory", [":memory:", ""])
def test_an_in_memory_database_is_refused(memory: str) -> None:
    with pytest.raises(ValueError, match="use MemoryJournal"):
        SqliteJournal(memory)


@pytest.mark.parametrize(
    "options",
    [{"synchronous": "OFF"}, {"busy_timeout": -1.0}, {"busy_timeout": float("nan")}],
)
def test_bad_options_are_refused(path: Path, options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"synchronous|busy_timeout"):
        SqliteJournal(path, **options)  # type: ignore[arg-type]
    assert not path.exists()


# -- files ---------------------------------------------------------------------------------------


def test_everything_survives_closing_and_reopening(path: Path) -> None:
    entries = [Entry(1, "intent", "charge", 1), Entry(2, "completed", "charge", 1, b'"C-1"')]
    with SqliteJournal(path, clock=lambda: 5.0) as journal:
        journal.create("order-1", "order", 2, b'{"sku":"book"}', entries=entries)
        journal.create("order-2", "order", 2, b"{}")
        journal.finish("order-2", "failed", b'"declined"')
        journal.claim_for_recovery("order-1", max_attempts=3)
        before = (journal.sagas(), journal.entries("order-1"))

    with SqliteJournal(path) as reopened:
        assert (reopened.sagas(), reopened.entries("order-1")) == before
        assert reopened.integrity_check() == ["ok"]


def test_a_file_that_is_not_a_database_is_a_clear_error(path: Path) -> None:
    path.write_bytes(b"this is not a database, just some text that was here before" * 100)

    with pytest.raises(JournalCorruptError, match="not a valid SQLite database") as raised:
        SqliteJournal(path)

    assert raised.value.path == str(path)
    assert str(path) in str(raised.value)


def read_everything(path: Path) -> None:
    """Open the journal and read every record: SQLite notices damage when it reads a page."""
    with SqliteJournal(path) as journal:
        for record in journal.sagas():
            journal.entries(record.saga_id)
        journal.integrity_check()


def test_damaged_pages_are_a_clear_error(path: Path) -> None:
    with SqliteJournal(path) as journal:
        for number in range(100):
            journal.create(f"order-{number}", "order", 1, b"x" * 400)
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 5] = b"\xab" * (4096 * 3)
    path.write_bytes(bytes(data))

    with pytest.raises(JournalCorruptError) as raised:
        read_everything(path)
    assert raised.value.path == str(path)


def test_a_journal_from_a_newer_fsaga_is_refused(path: Path) -> None:
    with SqliteJournal(path):
        pass
    with raw(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(JournalVersionError, match="newer fsaga") as raised:
        SqliteJournal(path)

    assert (raised.value.found, raised.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert str(path) in str(raised.value)


def test_another_programs_database_is_refused_and_left_alone(path: Path) -> None:
    with raw(path) as connection:
        connection.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")

    with pytest.raises(JournalError, match="not an fsaga journal"):
        SqliteJournal(path)

    with raw(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        tables = connection.execute("SELECT name FROM sqlite_master").fetchall()
        assert tables == [("accounts",)]


def test_a_file_in_a_missing_directory_says_the_directory_is_missing(tmp_path: Path) -> None:
    """SQLite itself says only "unable to open database file"."""
    missing = tmp_path / "no-such-folder" / "journal.db"

    with pytest.raises(JournalError) as raised:
        SqliteJournal(missing)

    assert str(raised.value) == (
        f"cannot open the journal {str(missing)!r}: its directory "
        f"{str(tmp_path / 'no-such-folder')!r} does not exist: create it first"
    )
    assert not (tmp_path / "no-such-folder").exists()


def test_a_directory_given_as_the_journal_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="is a directory, not a database file"):
        SqliteJournal(tmp_path)


def test_a_path_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a directory")

    with pytest.raises(JournalError, match="where it would be, is not a directory"):
        SqliteJournal(tmp_path / "plain" / "journal.db")


def test_the_default_busy_timeout_is_five_seconds(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "journal.db") as journal:
        assert journal.pragmas()["busy_timeout"] == 5_000


def test_a_file_system_without_wal_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite keeps the old journal mode, silently, where the file system cannot share memory
    between processes. No such file system can be mounted here, so SQLite's answer is stood in
    for at the one place it is read."""
    monkeypatch.setattr("fsaga.journal.sqlite.switch_to_wal", lambda connection, timeout: "delete")

    with pytest.raises(JournalError) as raised:
        SqliteJournal(tmp_path / "journal.db")

    assert str(raised.value) == (
        f"journal file {str(tmp_path / 'journal.db')!r} cannot use WAL mode (SQLite kept "
        "'delete'); the file system may lack shared memory support"
    )


# -- layout --------------------------------------------------------------------------------------


def test_a_run_s_commits_write_few_pages_and_an_append_one(path: Path) -> None:
    """What a commit writes is what it costs (fsaga/journal/_schema.py): creating a saga with
    its first intent writes 4 pages (its row, its id's index, the index of unfinished sagas,
    the entries), an append of a result and the next intent 1, finishing 3 (the row, the
    index it leaves, the entries). Counted as the frames each commit adds to the WAL."""
    with SqliteJournal(path, clock=lambda: 5.0) as journal, raw(path) as other:

        def pages_written(write: Callable[[], object]) -> int:
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            write()
            return int(other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])

        journal.create("order-0", "order", 1, b"{}", entries=[Entry(1, "intent", "a", 1)])
        created = pages_written(
            lambda: journal.create(
                "order-1", "order", 1, b"{}", entries=[Entry(1, "intent", "a", 1)]
            )
        )
        appended = [
            pages_written(
                functools.partial(
                    journal.append,
                    "order-1",
                    [Entry(seq, "completed", "a", 1), Entry(seq + 1, "intent", "b", 1)],
                )
            )
            for seq in (2, 4, 6)
        ]
        finished = pages_written(
            lambda: journal.finish(
                "order-1", "succeeded", b"1", entries=[Entry(8, "completed", "b", 1)]
            )
        )

    assert (created, appended, finished) == (4, [1, 1, 1], 3)


# -- several connections ---------------------------------------------------------------------


def test_a_write_waits_for_the_lock_then_fails_cleanly(path: Path) -> None:
    with SqliteJournal(path, busy_timeout=0.05) as journal, raw(path) as other:
        journal.create("order-1", "order", 1, b"{}")
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout

        with pytest.raises(JournalError, match="locked"):
            journal.append("order-1", [Entry(1, "intent", "charge", 1)])

        other.execute("ROLLBACK")
        assert journal.entries("order-1") == []
        journal.append("order-1", [Entry(1, "intent", "charge", 1)])
        assert len(journal.entries("order-1")) == 1
