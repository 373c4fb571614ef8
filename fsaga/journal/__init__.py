"""The journal of durable sagas: where each transition of a run is recorded before it moves on.

A `Journal` stores one `SagaRecord` per saga (definition name and version, encoded input,
status, outcome) and its timeline of `Entry` values (the intent before each effect, its result
or error after, the same for compensations). Values become bytes through a `Codec`
(`JsonCodec` by default, which also stores the types you register with it).
`SqliteJournal` is the durable implementation for one machine (one SQLite file, WAL,
``synchronous=FULL`` by default); `PostgresJournal` keeps the same rules in a PostgreSQL
database shared by workers on many machines, with owner leases (`Leases`, kept alive by a
`LeaseKeeper`), writes fenced by them (`OwnedJournal`, `LeaseLostError`) and a queue of
submitted sagas (`PendingSaga`); it needs the ``postgres`` extra and loads psycopg on first
use. `MemoryJournal` keeps the same rules in memory for tests.

Nothing here runs a saga: the durable runner writes to a journal and recovers from it.

>>> from fsaga.journal import Entry, JsonCodec, MemoryJournal
>>> codec = JsonCodec()
>>> with MemoryJournal() as journal:
...     _ = journal.create("order-1", "order", 1, codec.encode({"sku": "book"}))
...     journal.append("order-1", [Entry(1, "intent", "reserve", 1)])
...     journal.finish(
...         "order-1",
...         "succeeded",
...         codec.encode("reserved"),
...         entries=[Entry(2, "completed", "reserve", 1, codec.encode("R-7"))],
...     )
...     [(entry.seq, entry.kind) for entry in journal.entries("order-1")]
True
[(1, 'intent'), (2, 'completed')]
"""

from typing import TYPE_CHECKING

from fsaga import _lazy
from fsaga.journal.codec import TYPE_TAG as TYPE_TAG
from fsaga.journal.codec import Codec as Codec
from fsaga.journal.codec import CodecError as CodecError
from fsaga.journal.codec import JsonCodec as JsonCodec
from fsaga.journal.codec import JsonType as JsonType
from fsaga.journal.leases import LeaseKeeper as LeaseKeeper
from fsaga.journal.leases import Leases as Leases
from fsaga.journal.memory import MemoryJournal as MemoryJournal
from fsaga.journal.protocol import EntrySequenceError as EntrySequenceError
from fsaga.journal.protocol import Journal as Journal
from fsaga.journal.protocol import JournalClosedError as JournalClosedError
from fsaga.journal.protocol import JournalCorruptError as JournalCorruptError
from fsaga.journal.protocol import JournalError as JournalError
from fsaga.journal.protocol import JournalVersionError as JournalVersionError
from fsaga.journal.protocol import LeaseLostError as LeaseLostError
from fsaga.journal.protocol import SagaFinishedError as SagaFinishedError
from fsaga.journal.protocol import SagaNotDeadError as SagaNotDeadError
from fsaga.journal.protocol import SubmissionNotParkedError as SubmissionNotParkedError
from fsaga.journal.protocol import UnknownSagaError as UnknownSagaError
from fsaga.journal.protocol import UnknownSubmissionError as UnknownSubmissionError
from fsaga.journal.records import ENTRY_KINDS as ENTRY_KINDS
from fsaga.journal.records import FINISHED_STATUSES as FINISHED_STATUSES
from fsaga.journal.records import SAGA_STATUSES as SAGA_STATUSES
from fsaga.journal.records import Entry as Entry
from fsaga.journal.records import EntryKind as EntryKind
from fsaga.journal.records import FinishedStatus as FinishedStatus
from fsaga.journal.records import Lease as Lease
from fsaga.journal.records import PendingSaga as PendingSaga
from fsaga.journal.records import SagaRecord as SagaRecord
from fsaga.journal.records import SagaStatus as SagaStatus
from fsaga.journal.sqlite import SCHEMA_VERSION as SCHEMA_VERSION
from fsaga.journal.sqlite import SqliteJournal as SqliteJournal
from fsaga.journal.sqlite import Synchronous as Synchronous

# The PostgreSQL journal, and psycopg beneath it, load on first use: `import fsaga.journal` never
# needs the postgres extra. Type checkers see plain re-exports.
if TYPE_CHECKING:
    from fsaga.journal.postgres import OwnedJournal as OwnedJournal
    from fsaga.journal.postgres import PostgresJournal as PostgresJournal
else:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "OwnedJournal": "fsaga.journal.postgres",
            "PostgresJournal": "fsaga.journal.postgres",
        },
    )

__all__ = [
    "ENTRY_KINDS",
    "FINISHED_STATUSES",
    "SAGA_STATUSES",
    "SCHEMA_VERSION",
    "TYPE_TAG",
    "Codec",
    "CodecError",
    "Entry",
    "EntryKind",
    "EntrySequenceError",
    "FinishedStatus",
    "Journal",
    "JournalClosedError",
    "JournalCorruptError",
    "JournalError",
    "JournalVersionError",
    "JsonCodec",
    "JsonType",
    "Lease",
    "LeaseKeeper",
    "LeaseLostError",
    "Leases",
    "MemoryJournal",
    "OwnedJournal",
    "PendingSaga",
    "PostgresJournal",
    "SagaFinishedError",
    "SagaNotDeadError",
    "SagaRecord",
    "SagaStatus",
    "SqliteJournal",
    "SubmissionNotParkedError",
    "Synchronous",
    "UnknownSagaError",
    "UnknownSubmissionError",
]
