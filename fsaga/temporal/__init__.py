"""Run fsaga sagas as Temporal workflows (``pip install 'fsaga[temporal]'``).

The same saga value runs under `fsaga.interpreter.SyncInterpreter` in a unit test and, durably,
on Temporal in production: write each effect as an `activity` (a module-level function and its
arguments), register the saga's builder in a `fsaga.durable.SagaDefinitions`, run a `worker`,
and `start` or `execute` the saga from a client. A workflow of fsaga's drives the one engine
every interpreter drives, so the contract of a run (docs/concepts.md) holds on Temporal too:

- each action and compensation is an activity execution whose own retries are off: retries
  are the engine's, each wait before one a durable timer;
- `par` branches run concurrently; step and sub-tree deadlines become activity timeouts and
  timers; the workflow's clock, random numbers and ids replace the real ones;
- cancelling the workflow compensates what completed, shielded, then ends it as cancelled;
- an activity whose outcome is unknown (its worker died: its heartbeats stopped) is settled
  by the unknown-outcome rule, with the step's idempotency key (workflow id + path) handed to
  the activity as `fsaga.current_context()` reads it;
- the outcome comes back as `Success`, `Failure` or `PartialFailure`, and the events reach the
  worker's listeners once each, never again when a history is replayed.
"""

try:
    import temporalio  # noqa: F401  # the extra this package needs
except ImportError as missing:  # pragma: no cover - the dev extra installs it
    raise ImportError(
        "fsaga.temporal needs the Temporal Python SDK: pip install 'fsaga[temporal]'"
    ) from missing

from fsaga.temporal._driver import NotAnActivityError as NotAnActivityError
from fsaga.temporal.activities import Activity as Activity
from fsaga.temporal.activities import activity as activity
from fsaga.temporal.client import SagaCancelledError as SagaCancelledError
from fsaga.temporal.client import SagaHandle as SagaHandle
from fsaga.temporal.client import execute as execute
from fsaga.temporal.client import start as start
from fsaga.temporal.servers import dev_server_path as dev_server_path
from fsaga.temporal.servers import test_server_path as test_server_path
from fsaga.temporal.worker import saga_workflow as saga_workflow
from fsaga.temporal.worker import worker as worker

__all__ = [
    "Activity",
    "NotAnActivityError",
    "SagaCancelledError",
    "SagaHandle",
    "activity",
    "dev_server_path",
    "execute",
    "saga_workflow",
    "start",
    "test_server_path",
    "worker",
]
