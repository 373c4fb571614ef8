"""The journal command line as real processes: two ``fsaga journal recover`` racing on one
journal (an SQLite file, or a PostgreSQL schema), and output closed before a command finished
writing it.

The racing recoverers pause inside a step of the ``relay`` saga of
tests/journal_cli_definitions.py (it prints ``in-effect NAME`` and waits for a line on stdin),
so each race is played out at a chosen point, the same way every time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import journal_cli_definitions as sagas
import pytest
from journal_stores import BACKENDS, JournalStore, journal_store

from fsaga.journal import Entry, JsonCodec, SqliteJournal

TESTS = Path(__file__).resolve().parent
TIMEOUT = 60.0  # seconds: only ever reached when something hangs


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JournalStore:
    return journal_store(request.param, request, tmp_path)


def recoverer(store: JournalStore, *, pause_in: str | None) -> subprocess.Popen[str]:
    """``python -m fsaga journal recover`` on `store`, pausing inside step `pause_in`."""
    environment = {key: value for key, value in os.environ.items() if key != sagas.PAUSE_IN}
    if pause_in is not None:
        environment[sagas.PAUSE_IN] = pause_in
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "fsaga", "journal", "recover"),
            *(*store.options, "--definitions", "journal_cli_definitions:definitions"),
        ],
        cwd=TESTS,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def paused_in(process: subprocess.Popen[str], step: str) -> None:
    assert process.stdout is not None
    assert process.stdout.readline() == f"in-effect {step}\n"


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Let `process` go on (if it waits), and return its exit code, output and errors."""
    output, errors = process.communicate("go\n", timeout=TIMEOUT)
    return process.returncode, output, errors


def unfinished_relay(store: JournalStore) -> JournalStore:
    with store.open() as journal:
        journal.create("r-1", "relay", 1, JsonCodec().encode(None))
    return store


def test_a_recoverer_that_loses_the_race_to_one_that_finished_says_so_and_exits_0(
    store: JournalStore,
) -> None:
    """The loser was inside the first step while the winner recovered the saga to its end: it
    prints the winner's outcome as recovered by another process (it used to exit 1 with an
    error about entry numbering)."""
    db = unfinished_relay(store)
    loser = recoverer(db, pause_in="first")
    try:
        paused_in(loser, "first")
        winner = finish(recoverer(db, pause_in=None))
        lost = finish(loser)
    finally:
        loser.kill()

    assert winner == (0, "r-1: Success: 'second-1'\n", "")
    assert lost == (0, "r-1: recovered by another process: Success: 'second-1'\n", "")


def test_a_recoverer_taken_over_while_the_other_still_runs_leaves_the_saga_and_exits_0(
    store: JournalStore,
) -> None:
    """The loser was inside the first step while the winner ran that step again and went on to
    the second, where it still is: the loser's next write conflicts, and it leaves the saga to
    the winner, which finishes it."""
    db = unfinished_relay(store)
    loser = recoverer(db, pause_in="first")
    winner: subprocess.Popen[str] | None = None
    try:
        paused_in(loser, "first")
        winner = recoverer(db, pause_in="second")
        paused_in(winner, "second")
        lost = finish(loser)
        won = finish(winner)
    finally:
        loser.kill()
        if winner is not None:
            winner.kill()

    assert lost == (0, "r-1: left alone: another process is running it\n", "")
    assert won == (0, "r-1: Success: 'second-1'\n", "")
    with store.open() as journal:
        record = journal.get("r-1")
        kinds = [(entry.kind, entry.path, entry.attempt) for entry in journal.entries("r-1")]
    assert record is not None
    assert record.status == "succeeded"
    assert kinds == [
        ("intent", "first", 1),
        ("unknown", "first", 1),  # the winner found the loser's first step in flight
        ("intent", "first", 2),
        ("completed", "first", 2),
        ("intent", "second", 1),
        ("completed", "second", 1),
    ]


def test_show_exits_quietly_when_its_output_is_closed_early(tmp_path: Path) -> None:
    """``fsaga journal show ... | head -1``: the reader goes after one line. The timeline is far
    longer than a pipe holds, so the command is still writing when its output closes; it stops
    with exit code 1 and no traceback."""
    db = tmp_path / "journal.db"
    entries = [
        Entry(seq, "intent", f"step-{seq:06d}/of/a/long/saga", 1) for seq in range(1, 40_001)
    ]
    with SqliteJournal(db, synchronous="NORMAL") as journal:
        journal.create("big", "order", 1, b"null", entries=entries)
    show = subprocess.Popen(
        [sys.executable, "-m", "fsaga", "journal", "show", "big", "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert show.stdout is not None
    assert show.stderr is not None

    with show.stderr:
        first = show.stdout.readline()
        show.stdout.close()
        errors = show.stderr.read()
    code = show.wait(TIMEOUT)

    assert first == "saga big\n"
    assert errors == ""
    assert code == 1
