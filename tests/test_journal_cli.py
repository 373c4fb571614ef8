"""The journal command line (`fsaga.journal.cli`, through `fsaga.__main__.main`): ``fsaga journal
list|show|recover|release|migrate`` over real SQLite journal files (``--db``) and PostgreSQL
schemas (``--dsn``), their output and their exit codes."""

from __future__ import annotations

import shlex
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import journal_cli_definitions as sagas
import pg_journals
import pytest
from journal_stores import BACKENDS, JournalStore, journal_store
from psycopg.conninfo import conninfo_to_dict
from servers import PostgresServer

from fsaga.__main__ import main
from fsaga.durable import DurableSagas
from fsaga.journal import Entry, JsonCodec, MemoryJournal, PostgresJournal, SqliteJournal
from fsaga.journal.postgres import SCHEMA_VERSION

CREATED = 1_700_000_000.0  # 2023-11-14T22:13:20Z
CODEC = JsonCodec()
DEFINITIONS = "journal_cli_definitions:definitions"
DISK_FULL = ["fsaga.journal.protocol:JournalError", "JournalError", "disk I/O error"]


def run(*argv: str) -> tuple[int, list[str], list[str]]:
    """Run the command line; return its exit code, its output lines and its error lines."""
    output: list[str] = []
    errors: list[str] = []
    code = main(list(argv), write=output.append, write_error=errors.append)
    return code, "\n".join(output).splitlines(), errors


def full_run(amount: int) -> list[Entry]:
    """The timeline of a whole run of ``order`` for `amount`."""
    journal = MemoryJournal()
    DurableSagas(journal, sagas.definitions).start("order", amount, saga_id="model")
    sagas.reset()
    return journal.entries("model")


def cut(entries: list[Entry], kind: str, path: str) -> list[Entry]:
    """`entries` up to and with the first of this kind and path: what a crash there leaves."""
    end = next(i for i, entry in enumerate(entries) if (entry.kind, entry.path) == (kind, path))
    return entries[: end + 1]


@pytest.fixture(autouse=True)
def fresh_counters() -> None:
    sagas.reset()


@dataclass(frozen=True)
class Named:
    """A journal as the commands name it (`args`), and as their messages do (`name`, and
    `hint`: the options in a command they print)."""

    store: JournalStore

    @property
    def args(self) -> list[str]:
        return self.store.options

    @property
    def name(self) -> str:
        if self.store.path is not None:
            return str(self.store.path)
        return f"database 'postgres', schema {self.store.schema!r}"

    @property
    def hint(self) -> str:
        if self.store.path is not None:
            return f"--db {self.store.path}"
        assert self.store.server is not None
        return f"--dsn {shlex.quote(self.store.server.dsn)} --schema {self.store.schema}"


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Named:
    """A journal with a saga in each state: succeeded, failed, partially failed, in flight,
    compensating, dead."""
    store = journal_store(request.param, request, tmp_path)
    with store.open(clock=lambda: CREATED) as journal:
        runs = DurableSagas(journal, sagas.definitions)
        runs.start("order", 50, saga_id="o-ok")
        runs.start("order", 500, saga_id="o-declined")
        runs.start("fragile", 500, saga_id="f-partial")
        flying = cut(full_run(50), "intent", "charge")
        journal.create("o-flight", "order", 1, CODEC.encode(50), entries=flying)
        undoing = cut(full_run(500), "compensation_intent", "reserve")
        journal.create("o-undoing", "order", 1, CODEC.encode(500), entries=undoing)
        # A recovery claimed it, and failed at a journal write; the next found the limit.
        journal.create("o-dead", "order", 1, CODEC.encode(50), entries=flying)
        journal.claim_for_recovery("o-dead", max_attempts=1)
        journal.record_recovery_error("o-dead", CODEC.encode(DISK_FULL))
        journal.claim_for_recovery("o-dead", max_attempts=1)
    sagas.reset()
    return Named(store)


# -- list ----------------------------------------------------------------------------------------


def test_list_prints_one_line_per_saga_with_a_header(db: Named) -> None:
    code, output, errors = run("journal", "list", *db.args)

    assert (code, errors) == (0, [])
    assert [line.split() for line in output] == [
        ["ID", "DEFINITION", "STATUS", "RECOVERIES", "ENTRIES", "CREATED", "UPDATED"],
        *(
            [
                saga_id,
                definition,
                status,
                recoveries,
                entries,
                "2023-11-14T22:13:20Z",
                "2023-11-14T22:13:20Z",
            ]
            for saga_id, definition, status, recoveries, entries in [
                ("f-partial", "fragile@2", "partially_failed", "0", "6"),
                ("o-dead", "order@1", "dead", "1", "3"),
                ("o-declined", "order@1", "failed", "0", "6"),
                ("o-flight", "order@1", "running", "0", "3"),
                ("o-ok", "order@1", "succeeded", "0", "6"),
                ("o-undoing", "order@1", "running", "0", "5"),
            ]
        ),
    ]
    # Every column starts where its header does.
    assert len({tuple(column_starts(line)) for line in output}) == 1


def column_starts(line: str) -> list[int]:
    return [i for i, char in enumerate(line) if char != " " and (i == 0 or line[i - 1] == " ")]


def test_list_filters_by_status(db: Named) -> None:
    code, output, _ = run("journal", "list", *db.args, "--status", "running")

    assert code == 0
    assert [line.split()[0] for line in output[1:]] == ["o-flight", "o-undoing"]


def test_list_of_an_empty_journal_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    SqliteJournal(path).close()

    assert run("journal", "list", "--db", str(path)) == (0, [f"no sagas in {path}"], [])


def test_list_with_a_status_no_saga_has_says_so(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SqliteJournal(path) as journal:
        journal.create("s-1", "order", 1, CODEC.encode(1))

    code, output, _ = run("journal", "list", "--db", str(path), "--status", "dead")

    assert (code, output) == (0, [f"no sagas with status dead in {path}"])


def test_list_refuses_an_unknown_status(db: Named, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("journal", "list", *db.args, "--status", "lost")[0] == 2
    assert "invalid choice: 'lost'" in capsys.readouterr().err


# -- show ----------------------------------------------------------------------------------------


def test_show_a_succeeded_saga(db: Named) -> None:
    code, output, errors = run("journal", "show", "o-ok", *db.args)

    assert (code, errors) == (0, [])
    assert output == [
        "saga o-ok",
        "  definition:        order@1",
        "  status:            succeeded",
        "  input:             50",
        "  recovery attempts: 0",
        "",
        "timeline:",
        "  #1 intent    reserve (attempt 1)",
        '  #2 completed reserve (attempt 1): "reserve-done"',
        "  #3 intent    charge (attempt 1)",
        "  #4 completed charge (attempt 1): 50",
        "  #5 intent    notify (attempt 1)",
        '  #6 completed notify (attempt 1): "notify-done"',
        "",
        "finished: succeeded",
        "  Success: 'notify-done'",
    ]


def test_show_a_failed_saga_decodes_errors_and_the_outcome(db: Named) -> None:
    code, output, _ = run("journal", "show", "o-declined", *db.args)

    assert code == 0
    assert output[7:] == [
        "  #1 intent              reserve (attempt 1)",
        '  #2 completed           reserve (attempt 1): "reserve-done"',
        "  #3 intent              charge (attempt 1)",
        "  #4 failed              charge (attempt 1): Declined: card declined for 500",
        "  #5 compensation_intent reserve (attempt 1)",
        "  #6 compensated         reserve (attempt 1)",
        "",
        "finished: failed",
        "  Failure: Declined: card declined for 500",
        "    compensated: reserve",
    ]


def test_show_a_partial_failure_names_the_compensation_that_failed(db: Named) -> None:
    code, output, _ = run("journal", "show", "f-partial", *db.args)

    assert code == 0
    assert "  definition:        fragile@2" in output
    assert "  #6 compensation_failed reserve (attempt 1): Unavailable: inventory down" in output
    assert output[-6:] == [
        "finished: partially_failed",
        "  PartialFailure: Declined: card declined for 500",
        "    compensated:          none",
        "    failed compensations: reserve: Unavailable: inventory down after 1 attempt(s)",
        "    skipped:              none",
        "    unresolved:           none",
    ]


def test_show_an_unfinished_saga_names_the_step_in_flight(db: Named) -> None:
    code, output, _ = run("journal", "show", "o-flight", *db.args)

    assert code == 0
    assert "  status:            running" in output
    assert output[-6:] == [
        "  #1 intent    reserve (attempt 1)",
        '  #2 completed reserve (attempt 1): "reserve-done"',
        "  #3 intent    charge (attempt 1): no result",
        "",
        "unfinished: last entry #3 intent charge (attempt 1)",
        "  in flight: charge (the intent without a result: its process stopped while it ran)",
    ]


def test_show_a_saga_stopped_while_compensating(db: Named) -> None:
    code, output, _ = run("journal", "show", "o-undoing", *db.args)

    assert code == 0
    assert output[-3:] == [
        "",
        "unfinished, compensating: last entry #5 compensation_intent reserve (attempt 1)",
        "  in flight: the compensation of reserve (the intent without a result: its process "
        "stopped while it ran)",
    ]


def test_show_a_dead_saga_says_why_it_was_parked_and_how_to_release_it(db: Named) -> None:
    code, output, _ = run("journal", "show", "o-dead", *db.args)

    assert code == 0
    assert "  status:            dead" in output
    assert output[output.index("  #3 intent    charge (attempt 1): no result") + 1 :] == [
        "",
        "dead: parked at 2023-11-14T22:13:20Z after 1 recovery attempt(s) that did not finish it",
        "  last recovery: 2023-11-14T22:13:20Z; it failed: JournalError: disk I/O error",
        "  last entry: #3 intent charge (attempt 1)",
        "  in flight: charge (the intent without a result: its process stopped while it ran)",
        "  once the cause is fixed, release it for recovery: "
        f"fsaga journal release o-dead {db.hint}",
    ]


def test_show_a_dead_saga_whose_recoveries_left_no_error(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SqliteJournal(path, clock=lambda: CREATED) as journal:
        journal.create("s-1", "order", 1, CODEC.encode(50))
        journal.claim_for_recovery("s-1", max_attempts=0)

    code, output, _ = run("journal", "show", "s-1", "--db", str(path))

    assert code == 0
    assert output[-4:] == [
        "",
        "dead: parked at 2023-11-14T22:13:20Z after 0 recovery attempt(s) that did not finish it",
        "  last entry: none (nothing recorded)",
        "  once the cause is fixed, release it for recovery: "
        f"fsaga journal release s-1 --db {path}",
    ]


def test_show_a_saga_with_no_entries(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SqliteJournal(path) as journal:
        journal.create("s-1", "order", 1, CODEC.encode({"sku": "a"}))

    code, output, _ = run("journal", "show", "s-1", "--db", str(path))

    assert code == 0
    assert '  input:             {"sku": "a"}' in output
    assert output[-3:] == ["  (no entries)", "", "unfinished: nothing recorded yet"]


def test_show_tells_what_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SqliteJournal(path) as journal:
        journal.create("s-1", "order", 1, b"\x80pickle", entries=[Entry(1, "intent", "a", 1)])
        journal.finish(
            "s-1",
            "failed",
            b"not json",
            entries=[Entry(2, "failed", "a", 1, b"\x00\x01")],
        )

    code, output, _ = run("journal", "show", "s-1", "--db", str(path))

    assert code == 0
    assert "  input:             <7 bytes, not JSON>" in output
    assert "  #2 failed a (attempt 1): <2 bytes, not JSON>" in output
    assert output[-2:] == ["finished: failed", "  outcome: <8 bytes, not JSON>"]


def test_show_an_unknown_id_fails_with_exit_code_1(db: Named) -> None:
    assert run("journal", "show", "nobody", *db.args) == (
        1,
        [],
        [f"fsaga journal: no saga 'nobody' in {db.name}"],
    )


# -- recover -------------------------------------------------------------------------------------


def test_recover_finishes_every_unfinished_saga(db: Named) -> None:
    code, output, errors = run("journal", "recover", *db.args, "--definitions", DEFINITIONS)

    assert (code, errors) == (0, [])
    flight, undoing = output
    assert flight == "o-flight: Success: 'notify-done'"
    assert undoing.startswith("o-undoing: Failure: ")
    assert "card declined for 500" in undoing
    assert undoing.endswith("; compensated: reserve")
    # Completed steps did not run again; the idempotent charge in flight ran once more, with
    # the same key; the compensation in flight was run again.
    assert sagas.ran == {"charge": 1, "notify": 1, "undo reserve": 1}
    assert sagas.charge_keys == ["o-flight/charge"]
    listed = run("journal", "list", *db.args)[1]
    statuses = {line.split()[0]: (line.split()[2], line.split()[3]) for line in listed[1:]}
    assert statuses["o-flight"] == ("succeeded", "1")
    assert statuses["o-undoing"] == ("failed", "1")
    assert statuses["o-dead"] == ("dead", "1")  # parked sagas are left alone


def test_recover_with_nothing_to_do_says_so(db: Named) -> None:
    run("journal", "recover", *db.args, "--definitions", DEFINITIONS)

    code, output, _ = run("journal", "recover", *db.args, "--definitions", DEFINITIONS)

    assert (code, output) == (0, [f"no unfinished sagas in {db.name}"])


def test_recover_reports_a_saga_that_cannot_be_recovered_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with SqliteJournal(path) as journal:
        journal.create(
            "good", "order", 1, CODEC.encode(50), entries=cut(full_run(50), "intent", "charge")
        )
        diverging = [Entry(1, "intent", "audit", 1)]  # order never had such a step
        journal.create("bad", "order", 1, CODEC.encode(50), entries=diverging)

    code, output, errors = run(
        "journal", "recover", "--db", str(path), "--definitions", DEFINITIONS
    )

    assert (code, errors) == (1, [])
    good, bad = output
    assert good == "good: Success: 'notify-done'"
    assert bad.startswith("bad: not recovered: NonDeterminismError: saga 'bad': ")
    assert "'audit'" in bad


def test_recover_leaves_sagas_written_to_recently(db: Named) -> None:
    code, output, _ = run(
        "journal", "recover", *db.args, "--definitions", DEFINITIONS, "--stale-after", "1e9"
    )

    assert code == 0
    assert output == [
        "o-flight: left alone: another process is running it, or wrote to it in the last 1e+09 s",
        "o-undoing: left alone: another process is running it, or wrote to it in the last 1e+09 s",
    ]
    assert sagas.ran == {}


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("journal_cli_definitions", "--definitions must be MODULE:ATTRIBUTE, got "),
        ("no_such_module_here:definitions", "cannot import 'no_such_module_here': "),
        ("journal_cli_definitions:missing", "'journal_cli_definitions' has no attribute 'missing'"),
        (
            "journal_cli_definitions:not_definitions",
            "journal_cli_definitions:not_definitions is a dict, "
            "not a fsaga.durable.SagaDefinitions",
        ),
        (
            "journal_cli_definitions:without_order",
            "saga 'o-flight' needs 'order', which is missing",
        ),
        (
            "journal_cli_definitions:order_version_2",
            "saga 'o-flight' started under 'order' version 1, "
            "journal_cli_definitions:order_version_2 has version 2",
        ),
    ],
)
def test_recover_refuses_unusable_definitions_and_touches_nothing(
    db: Named, where: str, message: str
) -> None:
    code, output, errors = run("journal", "recover", *db.args, "--definitions", where)

    assert (code, output) == (2, [])
    [error] = errors
    assert error.startswith("fsaga journal: ")
    assert message in error
    assert sagas.ran == {}
    with db.store.open() as journal:
        assert [record.recovery_attempts for record in journal.sagas("running")] == [0, 0]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("-1", "must be a non-negative, finite number of seconds, got -1.0"),
        ("inf", "must be a non-negative, finite number of seconds, got inf"),
        ("nan", "must be a non-negative, finite number of seconds, got nan"),
        ("1e400", "must be a non-negative, finite number of seconds, got inf"),
        ("soon", "not a number of seconds: 'soon'"),
    ],
)
def test_recover_refuses_a_stale_after_that_is_not_a_duration(
    db: Named, given: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(
        "journal", "recover", *db.args, "--definitions", DEFINITIONS, "--stale-after", given
    )

    assert code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"fsaga journal recover: error: argument --stale-after: {message}"
    )


def test_recover_needs_definitions(db: Named, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("journal", "recover", *db.args)[0] == 2
    assert "--definitions" in capsys.readouterr().err


# -- release -------------------------------------------------------------------------------------


def test_release_gives_a_dead_saga_back_to_recover(db: Named) -> None:
    code, output, errors = run("journal", "release", "o-dead", *db.args)

    assert (code, errors) == (0, [])
    assert output == ["o-dead: released; the next `fsaga journal recover` takes it over"]
    listed = run("journal", "list", *db.args, "--status", "running")[1]
    assert [line.split()[:4] for line in listed[1:]] == [
        ["o-dead", "order@1", "running", "0"],
        ["o-flight", "order@1", "running", "0"],
        ["o-undoing", "order@1", "running", "0"],
    ]
    recovered = run("journal", "recover", *db.args, "--definitions", DEFINITIONS)[1]
    assert recovered[0] == "o-dead: Success: 'notify-done'"


@pytest.mark.parametrize(
    ("saga_id", "message"),
    [
        ("o-flight", "fsaga journal: saga 'o-flight' is running, not dead: only a saga parked"),
        ("o-ok", "fsaga journal: saga 'o-ok' is succeeded, not dead: only a saga parked"),
        ("nobody", "fsaga journal: no saga 'nobody' in "),
    ],
)
def test_release_refuses_a_saga_that_is_not_dead(db: Named, saga_id: str, message: str) -> None:
    before = run("journal", "list", *db.args)

    code, output, errors = run("journal", "release", saga_id, *db.args)

    assert (code, output) == (1, [])
    [error] = errors
    assert error.startswith(message)
    assert run("journal", "list", *db.args) == before


# -- what durable runs record, shown -------------------------------------------------------------


def test_show_a_rejected_step_with_its_error_and_whether_its_result_was_recorded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    with SqliteJournal(path) as journal:
        runs = DurableSagas(journal, sagas.definitions)
        runs.start("tagging", "fragile", saga_id="t-1")

    code, output, _ = run("journal", "show", "t-1", "--db", str(path))

    assert code == 0
    (rejected,) = [line for line in output if " rejected " in line]
    assert rejected.startswith("  #2 rejected            tag (attempt 1): CodecError: step 'tag'")
    assert rejected.endswith("; its result was not recorded")
    assert output[-3:] == [
        "finished: failed",
        f"  Failure: {rejected.split(': ', 1)[1].split('; its result')[0]}",
        "    compensated: tag",
    ]


def test_show_an_earlier_fsagas_unrecordable_success_says_the_value_was_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.db"
    with SqliteJournal(path) as journal:
        journal.create("s-1", "order", 1, CODEC.encode(50))
        journal.finish("s-1", "succeeded", b'{"kind":"success","unrecordable":"no JSON"}')

    code, output, _ = run("journal", "show", "s-1", "--db", str(path))

    assert code == 0
    assert output[-2:] == [
        "finished: succeeded",
        "  its final value was never recorded (no JSON); its effects took place and were not "
        "compensated",
    ]


# -- journal files that are missing or not journals ----------------------------------------------

COMMANDS = [
    pytest.param(["list"], id="list"),
    pytest.param(["show", "o-1"], id="show"),
    pytest.param(["recover", "--definitions", DEFINITIONS], id="recover"),
    pytest.param(["release", "o-1"], id="release"),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_file_is_an_error_and_is_not_created(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "missing.db"

    assert run("journal", *command, "--db", str(path)) == (
        2,
        [],
        [f"fsaga journal: no journal file at '{path}'"],
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_corrupt_file_is_an_error_naming_it(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not an SQLite database, just some text" * 100)

    code, output, errors = run("journal", *command, "--db", str(path))

    assert (code, output) == (2, [])
    [error] = errors
    assert error.startswith(f"fsaga journal: journal file '{path}' is not a valid SQLite database")


def test_an_empty_file_is_not_a_journal_and_stays_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()

    assert run("journal", "list", "--db", str(path)) == (
        2,
        [],
        [f"fsaga journal: '{path}' is an empty file, not a journal"],
    )
    assert path.read_bytes() == b""


def test_another_applications_database_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    connection.close()

    code, _, errors = run("journal", "show", "o-1", "--db", str(path))

    assert code == 2
    assert errors == [
        f"fsaga journal: '{path}' is an SQLite database but not an fsaga journal "
        "(user_version 0, objects ['customers'])"
    ]


def test_a_directory_is_an_error(tmp_path: Path) -> None:
    code, _, errors = run("journal", "list", "--db", str(tmp_path))

    assert code == 2
    [error] = errors
    assert error.startswith("fsaga journal: ")
    assert str(tmp_path) in error


# -- usage ---------------------------------------------------------------------------------------


def test_journal_without_a_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journal"]) == 2
    assert "required" in capsys.readouterr().err


def test_a_journal_command_without_db_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["journal", "list"]) == 2
    assert "--db" in capsys.readouterr().err


def test_the_help_lists_the_journal_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journal", "--help"]) == 0
    text = capsys.readouterr().out
    for command in ("list", "show", "recover", "release", "migrate"):
        assert command in text


def test_python_dash_m_fsaga_journal_lists_a_real_file(db: Named) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "fsaga", "journal", "list", *db.args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [
        "ID",
        "f-partial",
        "o-dead",
        "o-declined",
        "o-flight",
        "o-ok",
        "o-undoing",
    ]
    missing = subprocess.run(
        [sys.executable, "-m", "fsaga", "journal", "show", "nobody", *db.args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == f"fsaga journal: no saga 'nobody' in {db.name}\n"


# -- PostgreSQL journals: --dsn and migrate ------------------------------------------------------


def test_migrate_creates_a_postgres_journal_once(postgres: PostgresServer) -> None:
    schema = pg_journals.fresh_schema()
    where = f"database 'postgres', schema {schema!r}"

    created = run("journal", "migrate", "--dsn", postgres.dsn, "--schema", schema)
    again = run("journal", "migrate", "--dsn", postgres.dsn, "--schema", schema)

    version = f"schema version {SCHEMA_VERSION}"
    assert created == (0, [f"created the journal in {where} ({version})"], [])
    assert again == (0, [f"the journal in {where} is up to date ({version})"], [])
    assert run("journal", "list", "--dsn", postgres.dsn, "--schema", schema) == (
        0,
        [f"no sagas in {where}"],
        [],
    )


def test_migrate_refuses_a_journal_of_a_newer_fsaga(postgres: PostgresServer) -> None:
    schema = pg_journals.fresh_schema()
    PostgresJournal.migrate(postgres.dsn, schema=schema)
    with pg_journals.raw(postgres) as connection:
        connection.execute(f'UPDATE "{schema}".schema_version SET version = version + 1')

    code, output, errors = run("journal", "migrate", "--dsn", postgres.dsn, "--schema", schema)

    assert (code, output) == (2, [])
    [error] = errors
    assert error.startswith(
        f"fsaga journal: the PostgreSQL journal in database 'postgres', schema {schema!r} has "
        f"schema version {SCHEMA_VERSION + 1}"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_schema_without_a_journal_is_an_error_and_is_not_created(
    postgres: PostgresServer, command: list[str]
) -> None:
    schema = pg_journals.fresh_schema()

    code, output, errors = run("journal", *command, "--dsn", postgres.dsn, "--schema", schema)

    assert (code, output) == (2, [])
    assert errors == [
        f"fsaga journal: no fsaga journal in database 'postgres', schema {schema!r}: create it "
        f"with `python -m fsaga journal migrate --dsn DSN --schema {schema}`, or "
        f"PostgresJournal.migrate(dsn, schema={schema!r})"
    ]
    with pg_journals.raw(postgres) as connection:
        found = connection.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
    assert found == (0,)


def test_an_unreachable_database_is_an_error_that_keeps_the_password(
    postgres: PostgresServer,
) -> None:
    dsn = f"host=127.0.0.1 port={postgres.port} user=postgres dbname=nowhere password=s3cret"

    for command in (["list"], ["migrate"]):
        code, output, errors = run("journal", *command, "--dsn", dsn)

        assert (code, output) == (2, [])
        [error] = errors
        assert error.startswith("fsaga journal: cannot connect to the journal's database (")
        assert "s3cret" not in error


def test_the_release_hint_of_a_dead_saga_leaves_out_the_password(
    postgres: PostgresServer,
) -> None:
    schema = pg_journals.fresh_schema()
    PostgresJournal.migrate(postgres.dsn, schema=schema)
    with PostgresJournal(postgres.dsn, schema=schema) as journal:
        journal.create("s-1", "order", 1, CODEC.encode(50))
        journal.claim_for_recovery("s-1", max_attempts=0)
    dsn = f"{postgres.dsn} password=s3cret"  # trust authentication ignores it

    code, output, _ = run("journal", "show", "s-1", "--dsn", dsn, "--schema", schema)

    assert code == 0
    hint = output[-1]
    assert hint.startswith("  once the cause is fixed, release it for recovery: ")
    command = shlex.split(hint.split(": ", 1)[1])
    assert command[:4] == ["fsaga", "journal", "release", "s-1"]
    assert command[4] == "--dsn"
    assert conninfo_to_dict(command[5]) == conninfo_to_dict(postgres.dsn)
    assert command[6:] == ["--schema", schema]


def test_schema_goes_with_dsn_only(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    SqliteJournal(path).close()

    assert run("journal", "list", "--db", str(path), "--schema", "x") == (
        2,
        [],
        ["fsaga journal: --schema goes with --dsn: an SQLite journal has no schemas"],
    )


def test_db_and_dsn_are_one_or_the_other(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["journal", "list", "--db", "j.db", "--dsn", "dbname=x"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["journal", "migrate"]) == 2
    assert "--dsn" in capsys.readouterr().err
