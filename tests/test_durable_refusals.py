"""A refused recovery writes nothing (contract rule 12), whatever the saga and wherever its
process died.

Generated sagas and fault plans (tests/test_durable_properties.py) are killed at a journal write;
then a recovery is refused in each way one can be: a definition whose steps changed under the
same version (`NonDeterminismError`), no definition registered under the name
(`UnknownDefinitionError`), another version registered (`DefinitionConflictError`), a codec that
cannot decode the recorded input or a recorded payload (`CodecError`), a definition whose
builder raises. Each must leave every row of the journal as it was, byte for byte (it used to
count the refused recovery, and park the saga as dead after a few); and the right definition
then recovers the saga.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pg_journals
import pytest
from hypothesis import assume, given, settings
from servers import PostgresServer
from test_durable_properties import (
    DEFINITION,
    SAGA_ID,
    Case,
    Effects,
    build,
    cases,
    definitions_for,
    reference_run,
    run_until_crash,
)

from fsaga import Failure, PartialFailure, Saga, Success, step
from fsaga.durable import (
    DefinitionConflictError,
    DurableSagas,
    NonDeterminismError,
    SagaDefinitions,
    UnknownDefinitionError,
)
from fsaga.journal import Codec, CodecError, Journal, JsonCodec, MemoryJournal, SqliteJournal
from fsaga.testing.strategies import SagaSpec

INPUT = JsonCodec().encode(None)


class BrokenDefinitionError(RuntimeError):
    pass


@dataclass(frozen=True)
class PickyCodec:
    """JSON, but decoding the bytes `refuses` picks fails."""

    refuses: Callable[[bytes], bool]

    def encode(self, value: object, /) -> bytes:
        return JsonCodec().encode(value)

    def decode(self, data: bytes, /) -> object:
        if self.refuses(data):
            raise CodecError(f"cannot decode {data!r} (refused by the test)")
        return JsonCodec().decode(data)


@dataclass(frozen=True)
class Refusal:
    """One way a recovery is refused: the definitions and codec it recovers with, the error it
    gets, and what the journal must hold for the refusal to happen at all."""

    definitions: Callable[[SagaSpec, Effects], SagaDefinitions]
    codec: Codec
    error: type[Exception]
    needs_entries: bool = False
    needs_payload: bool = False


def diverged(spec: SagaSpec, effects: Effects) -> SagaDefinitions:
    definitions = SagaDefinitions()
    definitions.saga(DEFINITION)(
        lambda _: step(lambda: 0, name="diverged").then(build(spec, effects))
    )
    return definitions


def other_version(spec: SagaSpec, effects: Effects) -> SagaDefinitions:
    definitions = SagaDefinitions()
    definitions.saga(DEFINITION, version=2)(lambda _: build(spec, effects))
    return definitions


def broken_builder(spec: SagaSpec, effects: Effects) -> SagaDefinitions:
    def build_nothing(_input: object) -> Saga[object]:
        raise BrokenDefinitionError("the definition cannot be built")

    definitions = SagaDefinitions()
    definitions.saga(DEFINITION)(build_nothing)
    return definitions


REFUSALS = {
    "divergence": Refusal(diverged, JsonCodec(), NonDeterminismError, needs_entries=True),
    "missing definition": Refusal(
        lambda spec, effects: SagaDefinitions(), JsonCodec(), UnknownDefinitionError
    ),
    "version mismatch": Refusal(other_version, JsonCodec(), DefinitionConflictError),
    "undecodable input": Refusal(
        definitions_for, PickyCodec(lambda data: data == INPUT), CodecError
    ),
    "undecodable payload": Refusal(
        definitions_for, PickyCodec(lambda data: data != INPUT), CodecError, needs_payload=True
    ),
    "builder raises": Refusal(broken_builder, JsonCodec(), BrokenDefinitionError),
}


Fresh = Callable[[], contextlib.AbstractContextManager[tuple[Journal, Callable[[], object]]]]


@contextlib.contextmanager
def journal_of(backend: str) -> Iterator[tuple[Journal, Callable[[], object]]]:
    """A fresh journal, and what reads every row of it."""
    if backend == "memory":
        memory = MemoryJournal()
        yield (
            memory,
            lambda: [(record, memory.entries(record.saga_id)) for record in memory.sagas()],
        )
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "journal.db"
        with SqliteJournal(path, synchronous="NORMAL") as sqlite:
            yield sqlite, lambda: sqlite_rows(path)


@pytest.fixture(scope="module", params=["memory", "sqlite", "postgres"])
def fresh_journal(request: pytest.FixtureRequest) -> Iterator[Fresh]:
    """How each example gets a fresh journal, and what reads every row of it. On PostgreSQL
    the examples share one schema, emptied before each."""
    if request.param != "postgres":
        yield lambda: journal_of(request.param)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    with pg_journals.new_journal(server) as postgres:

        @contextlib.contextmanager
        def emptied() -> Iterator[tuple[Journal, Callable[[], object]]]:
            pg_journals.clear(server, postgres.schema)
            yield postgres, lambda: pg_journals.rows(server, postgres.schema)

        yield emptied


def sqlite_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the file, read through a connection of its own."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        tables = [
            str(name)
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in sorted(tables)
        }


@pytest.mark.parametrize("refusal", REFUSALS.values(), ids=REFUSALS.keys())
@settings(max_examples=8, deadline=None)
@given(case=cases(recovery_crashes=False))
def test_a_refused_recovery_leaves_the_journal_byte_identical(
    case: Case, refusal: Refusal, fresh_journal: Fresh
) -> None:
    _, _, reference_journal = reference_run(case.spec, case.plan)
    with fresh_journal() as (journal, rows):
        effects = Effects(case.plan)
        definitions = definitions_for(case.spec, effects)
        run_until_crash(
            journal,
            effects,
            definitions,
            (case.crash % reference_journal.writes, case.after),
            lambda runs: runs.start(DEFINITION, None, saga_id=SAGA_ID),
        )
        record = journal.get(SAGA_ID)
        assume(record is not None and record.status == "running")
        entries = journal.entries(SAGA_ID)
        assume(entries or not refusal.needs_entries)
        assume(any(entry.payload for entry in entries) or not refusal.needs_payload)
        before = rows()
        world = list(effects.world.log)

        refused = DurableSagas(
            journal, refusal.definitions(case.spec, effects), codec=refusal.codec
        ).recover()

        assert list(refused) == [SAGA_ID]
        assert isinstance(refused[SAGA_ID], refusal.error), refused
        assert rows() == before
        assert effects.world.log == world  # and nothing was performed
        # Nothing was counted against the saga: the right definition recovers it.
        recovered = DurableSagas(journal, definitions).recover()[SAGA_ID]
        assert isinstance(recovered, Success | Failure | PartialFailure), recovered
