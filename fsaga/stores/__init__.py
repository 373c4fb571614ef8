"""Stores with generated compensations: write to several stores in one saga, and have every
completed write undone, in reverse order, when the saga fails.

- `Store` is the protocol: versioned values under keys, conditional writes, write ids applied
  once, and `undo` that puts back what a write replaced unless someone changed it since.
- `MemoryStore` keeps a store in a dict; `SqliteStore` in a table of an SQLite file;
  `PostgresStore` in a PostgreSQL table (``fsaga[postgres]``); `RedisStore` in Redis
  (``fsaga[redis]``). `AsyncPostgresStore` and `AsyncRedisStore` are their `AsyncStore`
  twins, for `AsyncInterpreter`. Those four load psycopg or redis-py on first use only.
- `save`, `delete`, `update` are steps whose compensations are generated; `read` reads.
- `transaction(build)` builds one saga over several stores from a `Transaction`.

>>> from fsaga import PartialFailure, step
>>> from fsaga.interpreter import SyncInterpreter
>>> from fsaga.stores import MemoryStore, save
>>> orders = MemoryStore[str, str]("orders")
>>> def meanwhile() -> None:  # another writer changes the order while the saga runs
...     orders.put("o-1", "edited by a clerk")
...     raise RuntimeError("card declined")
>>> outcome = save(orders, "o-1", "placed").then(step(meanwhile)).run(SyncInterpreter())
>>> isinstance(outcome, PartialFailure)
True
>>> conflict = outcome.failed_compensations[0].error
>>> conflict.key, conflict.expected, conflict.found
('o-1', 1, 2)
>>> orders.get("o-1")
Versioned(value='edited by a clerk', version=2)
"""

from typing import TYPE_CHECKING

from fsaga import _lazy
from fsaga.stores.errors import MissingKeyError as MissingKeyError
from fsaga.stores.errors import ReusedWriteIdError as ReusedWriteIdError
from fsaga.stores.errors import StoreClosedError as StoreClosedError
from fsaga.stores.errors import StoreError as StoreError
from fsaga.stores.errors import StoreUnavailableError as StoreUnavailableError
from fsaga.stores.errors import VersionConflictError as VersionConflictError
from fsaga.stores.memory import MemoryStore as MemoryStore
from fsaga.stores.protocol import ABSENT as ABSENT
from fsaga.stores.protocol import Absent as Absent
from fsaga.stores.protocol import AsyncStore as AsyncStore
from fsaga.stores.protocol import Change as Change
from fsaga.stores.protocol import Deleted as Deleted
from fsaga.stores.protocol import Expected as Expected
from fsaga.stores.protocol import State as State
from fsaga.stores.protocol import Store as Store
from fsaga.stores.protocol import Versioned as Versioned
from fsaga.stores.sqlite import SqliteStore as SqliteStore
from fsaga.stores.steps import STORE_RETRY as STORE_RETRY
from fsaga.stores.steps import change_from_receipt as change_from_receipt
from fsaga.stores.steps import delete as delete
from fsaga.stores.steps import read as read
from fsaga.stores.steps import save as save
from fsaga.stores.steps import update as update
from fsaga.stores.transaction import Transaction as Transaction
from fsaga.stores.transaction import transaction as transaction

# The stores on PostgreSQL and Redis, and psycopg or redis-py beneath them, load on first use:
# `import fsaga.stores` imports neither. Type checkers see plain re-exports.
if TYPE_CHECKING:
    from fsaga.stores.postgres import AsyncPostgresStore as AsyncPostgresStore
    from fsaga.stores.postgres import PostgresStore as PostgresStore
    from fsaga.stores.redis import AsyncRedisStore as AsyncRedisStore
    from fsaga.stores.redis import RedisStore as RedisStore
else:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "AsyncPostgresStore": "fsaga.stores.postgres",
            "PostgresStore": "fsaga.stores.postgres",
            "AsyncRedisStore": "fsaga.stores.redis",
            "RedisStore": "fsaga.stores.redis",
            "postgres": "fsaga.stores.postgres",
            "redis": "fsaga.stores.redis",
        },
    )

__all__ = [
    "ABSENT",
    "STORE_RETRY",
    "Absent",
    "AsyncPostgresStore",
    "AsyncRedisStore",
    "AsyncStore",
    "Change",
    "Deleted",
    "Expected",
    "MemoryStore",
    "MissingKeyError",
    "PostgresStore",
    "RedisStore",
    "ReusedWriteIdError",
    "SqliteStore",
    "State",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "Transaction",
    "VersionConflictError",
    "Versioned",
    "change_from_receipt",
    "delete",
    "read",
    "save",
    "transaction",
    "update",
]
