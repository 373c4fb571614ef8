"""The command line of a PostgreSQL journal's submission queue (`fsaga.journal._cli_submissions`,
through `fsaga.__main__.main`): ``fsaga journal submissions [--parked]``, ``show-submission``
and ``release-submission``, their output and their exit codes; and ``journal recover
--max-recovery-attempts``, on both kinds of journal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import journal_cli_definitions as sagas
import pg_journals
import pytest
from journal_stores import BACKENDS, journal_store
from servers import PostgresServer

from fsaga.__main__ import main
from fsaga.durable import DurableSagas
from fsaga.journal import Entry, JsonCodec, PostgresJournal

CREATED = 1_700_000_000.0  # 2023-11-14T22:13:20Z
TTL = 30.0
CODEC = JsonCodec()
DEFINITIONS = "journal_cli_definitions:definitions"
ERROR = CODEC.encode(
    ["fsaga.durable.errors:UnknownDefinitionError", "UnknownDefinitionError", "no 'ordr'"]
)


def run(*argv: str) -> tuple[int, list[str], list[str]]:
    """Run the command line; return its exit code, its output lines and its error lines."""
    output: list[str] = []
    errors: list[str] = []
    code = main(list(argv), write=output.append, write_error=errors.append)
    return code, "\n".join(output).splitlines(), errors


class Clock:
    def __init__(self) -> None:
        self.now = CREATED

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def queue(postgres: PostgresServer) -> Iterator[tuple[PostgresJournal, list[str]]]:
    """A journal with a queued submission (``order-1``), one claimed whose start failed
    (``order-2``), and a parked one (``poison``); and the options that name it."""
    clock = Clock()
    with pg_journals.new_journal(postgres, clock=clock) as journal:
        journal.submit("poison", "ordr", b'{"sku":"a"}')
        journal.claim_pending("w-1", ttl=TTL)
        assert journal.record_start_error("poison", "w-1", ERROR)
        clock.now += 60
        journal.submit("order-1", "order", b"2")
        journal.submit("order-2", "order", b"3")
        clock.now += 60
        claimed = journal.claim_pending("w-2", ttl=TTL, limit=2, max_claims=1)
        assert [pending.saga_id for pending in claimed] == ["order-1", "order-2"]
        assert journal.record_start_error("order-2", "w-2", ERROR)
        yield journal, ["--dsn", postgres.dsn, "--schema", journal.schema]


def test_submissions_lists_the_queue_and_parked_lists_the_parked(
    queue: tuple[PostgresJournal, list[str]],
) -> None:
    journal, where = queue

    queued = run("journal", "submissions", *where)
    parked = run("journal", "submissions", *where, "--parked")

    assert queued[0] == 0
    assert [line.split(maxsplit=6) for line in queued[1]] == [
        ["ID", "DEFINITION", "CLAIMS", "SUBMITTED", "LAST", "CLAIMED", "PARKED  LAST ERROR"],
        ["order-1", "order", "1", "2023-11-14T22:14:20Z", "2023-11-14T22:15:20Z", "-", "-"],
        [
            "order-2",
            "order",
            "1",
            "2023-11-14T22:14:20Z",
            "2023-11-14T22:15:20Z",
            "-",
            "UnknownDefinitionError: no 'ordr'",
        ],
    ]
    assert parked[0] == 0
    assert parked[1][1].split(maxsplit=6) == [
        "poison",
        "ordr",
        "1",
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:15:20Z",
        "UnknownDefinitionError: no 'ordr'",
    ]
    journal.release_submission("poison")
    assert run("journal", "submissions", *where, "--parked")[1] == [
        f"no parked submissions in database 'postgres', schema {journal.schema!r}"
    ]


def test_show_submission_says_why_it_is_parked_and_how_to_release_it(
    queue: tuple[PostgresJournal, list[str]],
) -> None:
    journal, where = queue

    code, output, errors = run("journal", "show-submission", "poison", *where)

    assert (code, errors) == (0, [])
    assert output == [
        "submission poison",
        "  definition:   ordr",
        '  input:        {"sku": "a"}',
        "  submitted:    2023-11-14T22:13:20Z",
        "  claims:       1",
        "  last claimed: 2023-11-14T22:13:20Z; its start failed: UnknownDefinitionError: no 'ordr'",
        "",
        "parked at 2023-11-14T22:15:20Z: 1 claims did not start it",
        "  once the cause is fixed, queue it again: fsaga journal release-submission poison "
        f"{' '.join(where[:1])} '{where[1]}' --schema {journal.schema}",
    ]
    queued = run("journal", "show-submission", "order-1", *where)[1]
    assert queued[5:] == [
        "  last claimed: 2023-11-14T22:15:20Z; worker w-2 starts it",
        "",
        "queued: the next worker to sweep claims it",
    ]


def test_release_submission_queues_a_parked_one_again(
    queue: tuple[PostgresJournal, list[str]],
) -> None:
    journal, where = queue

    assert run("journal", "release-submission", "poison", *where) == (
        0,
        ["poison: released; the workers start it"],
        [],
    )

    assert journal.parked_submissions() == []
    assert [pending.saga_id for pending in journal.pending()] == ["poison", "order-1", "order-2"]


@pytest.mark.parametrize(
    ("saga_id", "message"),
    [
        ("order-1", "fsaga journal: submission 'order-1' is queued, not parked"),
        ("nobody", "fsaga journal: no submission 'nobody' in the journal"),
    ],
)
def test_release_submission_refuses_one_that_is_not_parked(
    queue: tuple[PostgresJournal, list[str]], saga_id: str, message: str
) -> None:
    journal, where = queue
    before = journal.pending(), journal.parked_submissions()

    code, output, errors = run("journal", "release-submission", saga_id, *where)

    assert (code, output) == (1, [])
    [error] = errors
    assert error.startswith(message)
    assert (journal.pending(), journal.parked_submissions()) == before


def test_show_submission_of_an_id_not_queued_points_to_show(
    queue: tuple[PostgresJournal, list[str]],
) -> None:
    journal, where = queue

    code, output, errors = run("journal", "show-submission", "nobody", *where)

    assert (code, output) == (1, [])
    assert errors == [
        f"fsaga journal: no submission 'nobody' in database 'postgres', schema "
        f"{journal.schema!r}: it was never submitted, or it started (`fsaga journal show "
        "nobody` shows the saga)"
    ]


def test_the_submission_commands_need_a_dsn(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["submissions"], ["show-submission", "x"], ["release-submission", "x"]):
        assert run("journal", *command, "--db", "j.db")[0] == 2
    assert "--dsn" in capsys.readouterr().err


# -- recover --max-recovery-attempts -------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_recover_parks_a_saga_that_max_recovery_attempts_did_not_finish(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    sagas.reset()
    store = journal_store(backend, request, tmp_path)
    with store.open(clock=lambda: CREATED) as journal:
        flying = [Entry(1, "intent", "reserve", 1)]
        journal.create("o-flight", "order", 1, CODEC.encode(50), entries=flying)
        journal.claim_for_recovery("o-flight", max_attempts=5)  # a recovery that died

    code, output, _ = run(
        "journal", "recover", *store.options, "--definitions", DEFINITIONS,
        "--max-recovery-attempts", "1",
    )  # fmt: skip

    assert code == 1
    assert output[0].startswith(
        "o-flight: not recovered: SagaParkedError: saga 'o-flight' is parked"
    )
    assert [line.split()[:4] for line in run("journal", "list", *store.options)[1][1:]] == [
        ["o-flight", "order@1", "dead", "1"]
    ]
    assert not sagas.ran  # nothing ran
    with store.open() as journal:
        DurableSagas(journal, sagas.definitions).release("o-flight")
    code, output, _ = run("journal", "recover", *store.options, "--definitions", DEFINITIONS)
    assert (code, output[0].split(":")[0]) == (0, "o-flight")


def test_recover_refuses_a_max_recovery_attempts_below_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(
        "journal", "recover", "--db", str(tmp_path / "j.db"), "--definitions", "m:d",
        "--max-recovery-attempts", "0",
    )  # fmt: skip
    assert code == 2
    assert "--max-recovery-attempts: must be a whole number, 1 or more: '0'" in (
        capsys.readouterr().err
    )
