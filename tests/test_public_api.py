"""The declared public surface: every public module's `__all__`, and what importing fsaga does
(and leaves for first use)."""

from __future__ import annotations

import ast
import importlib
import json
import pickle
import pkgutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import fsaga

PACKAGE_ROOT = Path(fsaga.__file__).parent

# Module-level names that are public by spelling but deliberately not exported: helpers shared
# between fsaga's own modules (and the conventional module logger).
NOT_EXPORTED: dict[str, set[str]] = {
    "fsaga.outcome": {"describe_failure"},
    "fsaga.saga": {"known_continuation", "sibling_name"},
}
ALWAYS_PRIVATE = {"logger"}


def public_modules() -> list[str]:
    names = ["fsaga"]
    for module in pkgutil.walk_packages(fsaga.__path__, prefix="fsaga."):
        leaf = module.name.rsplit(".", 1)[-1]
        if not any(part.startswith("_") for part in module.name.split(".")[1:]) and leaf:
            names.append(module.name)
    return sorted(names)


def source_of(module: ModuleType) -> str:
    assert module.__file__ is not None
    return Path(module.__file__).read_text(encoding="utf-8")


def lazy_reexports(module: ModuleType) -> dict[str, str]:
    """The names a module re-exports (``as`` itself) under ``if TYPE_CHECKING:``, each with the
    module it comes from: names a facade imports on first use, and type checkers see as is."""
    origins: dict[str, str] = {}
    for node in ast.parse(source_of(module)).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module is not None:
                    for alias in statement.names:
                        if alias.asname == alias.name:
                            origins[alias.name] = statement.module
    return origins


def exported_names(module: ModuleType) -> set[str]:
    """Public names a module defines at top level, plus its explicit re-exports (``as`` itself),
    eager or lazy (`lazy_reexports`).

    Other names bound under ``if TYPE_CHECKING:`` and private (underscored) names do not count.
    """
    names: set[str] = set(lazy_reexports(module))
    for node in ast.parse(source_of(module)).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update(alias.name for alias in node.names if alias.asname == alias.name)
    return {name for name in names if not name.startswith("_")} - ALWAYS_PRIVATE


MODULES = public_modules()


def test_the_public_modules_are_found() -> None:
    expected = {
        "fsaga",
        "fsaga.errors",
        "fsaga.events",
        "fsaga.interpreter",
        "fsaga.interpreter.protocol",
        "fsaga.interpreter.sync",
        "fsaga.outcome",
        "fsaga.policy",
        "fsaga.saga",
        "fsaga.testing",
        "fsaga.testing.faults",
        "fsaga.testing.interpreters",
        "fsaga.testing.laws",
        "fsaga.testing.properties",
        "fsaga.testing.specs",
        "fsaga.testing.strategies",
    }
    assert expected <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_all_matches_what_the_module_defines_and_exports(name: str) -> None:
    module = importlib.import_module(name)
    declared = getattr(module, "__all__", None)

    assert isinstance(declared, list), f"{name} has no __all__ list"
    assert len(declared) == len(set(declared)), f"{name}.__all__ repeats a name"
    missing = [item for item in declared if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names what the module lacks: {missing}"
    assert set(declared) == exported_names(module) - NOT_EXPORTED.get(name, set())


LAZY_FACADES = {"fsaga", "fsaga.interpreter", "fsaga.journal", "fsaga.stores", "fsaga.testing"}


def test_the_facades_are_the_modules_with_lazy_names() -> None:
    lazy = {name for name in MODULES if lazy_reexports(importlib.import_module(name))}

    assert lazy == LAZY_FACADES


@pytest.mark.parametrize("name", sorted(LAZY_FACADES))
def test_a_lazy_name_is_listed_and_is_what_type_checkers_see(name: str) -> None:
    module = importlib.import_module(name)
    origins = lazy_reexports(module)

    assert set(origins) <= set(module.__all__)
    assert set(origins) <= set(dir(module))
    for item, origin in origins.items():
        assert getattr(module, item) is getattr(importlib.import_module(origin), item)


@pytest.mark.parametrize("name", sorted(LAZY_FACADES))
def test_a_facade_still_has_no_name_it_does_not_declare(name: str) -> None:
    module = importlib.import_module(name)

    with pytest.raises(AttributeError, match="has no attribute 'AsyncInterpreterr'"):
        module.AsyncInterpreterr  # noqa: B018
    assert not hasattr(module, "__wrapped__")


@pytest.mark.parametrize("name", sorted(NOT_EXPORTED))
def test_names_kept_out_of_all_still_exist(name: str) -> None:
    module = importlib.import_module(name)

    for item in NOT_EXPORTED[name]:
        assert hasattr(module, item)
        assert item not in module.__all__


def test_every_name_in_fsaga_all_exists_and_is_the_original() -> None:
    for item in fsaga.__all__:
        exported = getattr(fsaga, item)
        origin = getattr(exported, "__module__", None)
        if isinstance(origin, str) and origin.startswith("fsaga."):
            assert getattr(importlib.import_module(origin), item) is exported


def test_the_strategies_re_export_the_specs_and_laws_themselves() -> None:
    strategies = importlib.import_module("fsaga.testing.strategies")
    for name in ("fsaga.testing.specs", "fsaga.testing.laws"):
        module = importlib.import_module(name)
        assert set(module.__all__) < set(strategies.__all__)
        for item in module.__all__:
            assert getattr(strategies, item) is getattr(module, item)


def test_the_facade_offers_the_everyday_names() -> None:
    for item in ("step", "pure", "par", "sequence", "traverse", "Saga", "Success", "Failure"):
        assert item in fsaga.__all__
    for item in ("PartialFailure", "Outcome", "Retry", "SyncInterpreter", "Effect"):
        assert item in fsaga.__all__


def test_the_package_is_typed() -> None:
    assert (PACKAGE_ROOT / "py.typed").is_file()


IMPORT_PROBE = r"""
import json, sys

suspicious = []

def audit(event, args):
    if event == "open":
        path, mode = str(args[0]), str(args[1])
        if path.endswith((".py", ".pyc")) and "w" not in mode and "a" not in mode:
            return
        suspicious.append([event, path, mode])
    elif event.startswith(("socket.", "subprocess.", "os.", "shutil.", "sqlite3.", "http.",
                           "urllib.", "time.sleep", "webbrowser.", "ftplib.", "smtplib.")):
        if event in ("os.listdir", "os.scandir"):
            return  # the import system lists directories to find modules
        suspicious.append([event, repr(args)[:200]])

sys.addaudithook(audit)

import logging
root_handlers = list(logging.getLogger().handlers)

import fsaga
import fsaga.interpreter
fsaga.AsyncInterpreter, fsaga.interpreter.in_worker_thread  # imported on first use
fsaga.Success(1).to_result()  # imports returns
import fsaga.testing
import fsaga.testing.specs

print(json.dumps({
    "suspicious": suspicious,
    "hypothesis": "hypothesis" in sys.modules,
    "fsaga_handlers": len(logging.getLogger("fsaga").handlers),
    "root_handlers_changed": list(logging.getLogger().handlers) != root_handlers,
}))
"""


@pytest.fixture(scope="module")
def import_report() -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-B", "-c", IMPORT_PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE_ROOT.parent,
    )
    report: dict[str, object] = json.loads(completed.stdout)
    return report


def test_importing_fsaga_does_no_io(import_report: dict[str, object]) -> None:
    assert import_report["suspicious"] == []


def test_importing_fsaga_does_not_import_hypothesis(import_report: dict[str, object]) -> None:
    assert import_report["hypothesis"] is False


def test_importing_fsaga_configures_no_logging(import_report: dict[str, object]) -> None:
    assert import_report["fsaga_handlers"] == 0
    assert import_report["root_handlers_changed"] is False


# What `import fsaga` leaves for first use: the async interpreter with anyio beneath it, `returns`
# (until a step returns one of its containers or an outcome is turned into one), `uuid` (until a
# run needs an id), and the PostgreSQL journal with psycopg beneath it.
LAZY_MODULES = (
    "anyio",
    "fsaga.interpreter.asynchronous",
    "fsaga.journal.postgres",
    "psycopg",
    "psycopg_pool",
    "returns",
    "uuid",
)
POSTGRES_MODULES = ["fsaga.journal.postgres", "psycopg", "psycopg_pool"]
ASYNC_MODULES = ["anyio", "fsaga.interpreter.asynchronous"]

SYNC_RUNS = """
import fsaga
from fsaga.interpreter import SyncInterpreter

undone = []
failures = iter([RuntimeError("flaky")])


def flaky():
    for error in failures:
        raise error
    return 2


def declined():
    raise ValueError("declined")


reserve = fsaga.step(lambda: 1, undone.append, name="reserve")
charge = fsaga.step(flaky, undone.append, name="charge", retry=fsaga.Retry(2, jitter=0))
both = fsaga.par(reserve, charge).map(sum)
interpreter = SyncInterpreter(sleep=lambda seconds: None)
assert both.run(interpreter) == fsaga.Success(3)
outcome = both.then(fsaga.step(declined, name="ship")).run(interpreter)
assert isinstance(outcome, fsaga.Failure) and sorted(undone) == [1, 2], (outcome, undone)
assert fsaga.sequence([fsaga.pure(1), fsaga.pure(2)]).run(SyncInterpreter()).unwrap() == (1, 2)
"""


def loaded_after(code: str) -> dict[str, list[str]]:
    """Which of `LAZY_MODULES` a fresh interpreter has loaded before and after running `code`."""
    probe = (
        "import json, sys\n"
        f"watched = {LAZY_MODULES!r}\n"
        "def loaded():\n"
        "    return sorted(name for name in watched if name in sys.modules)\n"
        "before = loaded()\n"
        f"{code}\n"
        "print(json.dumps({'before': before, 'after': loaded()}))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-B", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        cwd=PACKAGE_ROOT.parent,
    )
    assert completed.returncode == 0, completed.stderr
    report: dict[str, list[str]] = json.loads(completed.stdout)
    return report


def test_importing_fsaga_loads_neither_the_async_interpreter_nor_anyio_nor_returns() -> None:
    report = loaded_after("import fsaga, fsaga.interpreter")

    assert report == {"before": [], "after": []}


def test_sync_runs_load_neither_the_async_interpreter_nor_anyio_nor_returns() -> None:
    report = loaded_after(SYNC_RUNS)

    assert report == {"before": [], "after": []}


# What building sagas never needs: `import fsaga` and building one leave the engine, the
# interpreters, the outcomes and the events for the first run (or the first use of their names).
RUNTIME_MODULES = [
    "fsaga.events",
    "fsaga.interpreter._engine",
    "fsaga.interpreter.asynchronous",
    "fsaga.interpreter.sync",
    "fsaga.outcome",
    "logging",
]


def test_importing_fsaga_and_building_sagas_load_no_interpreter() -> None:
    code = (
        "import sys\n"
        "import fsaga\n"
        "saga = fsaga.step(lambda: 1, lambda _: None).then(fsaga.step(lambda: 2))\n"
        "saga = fsaga.par(saga, fsaga.pure(3)).map(lambda pair: pair[0])\n"
        f"print(sorted(name for name in {RUNTIME_MODULES!r} if name in sys.modules))\n"
        "from fsaga import SyncInterpreter, Success, StepStarted\n"
        "assert saga.run(SyncInterpreter()) == Success(2)\n"
        "from fsaga.interpreter import sync\n"
        "assert fsaga.SyncInterpreter is sync.SyncInterpreter\n"
        "assert fsaga.interpreter.SyncInterpreter is sync.SyncInterpreter\n"
        f"print(sorted(name for name in {RUNTIME_MODULES!r} if name in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-B", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=PACKAGE_ROOT.parent,
    )
    assert completed.returncode == 0, completed.stderr
    before, after = completed.stdout.splitlines()
    assert before == "[]"
    assert after == str(sorted(set(RUNTIME_MODULES) - {"fsaga.interpreter.asynchronous"}))


@pytest.mark.parametrize(
    "first_use",
    [
        "fsaga.AsyncInterpreter",
        "fsaga.in_worker_thread",
        "fsaga.interpreter.AsyncInterpreter",
        "fsaga.interpreter.in_worker_thread",
        "from fsaga import AsyncInterpreter",
        "from fsaga.interpreter import in_worker_thread",
        "from fsaga import *",
        "fsaga.interpreter.asynchronous.AsyncInterpreter",
    ],
)
def test_the_first_use_of_an_async_name_imports_the_async_interpreter(first_use: str) -> None:
    code = (
        "import fsaga, fsaga.interpreter\n"
        "listed = {'AsyncInterpreter', 'in_worker_thread'}\n"
        "assert listed <= set(dir(fsaga)) and listed <= set(dir(fsaga.interpreter))\n"
        "assert 'anyio' not in sys.modules\n"
        f"{first_use}\n"
        "from fsaga.interpreter import asynchronous\n"
        "for facade in (fsaga, fsaga.interpreter):\n"
        "    assert facade.AsyncInterpreter is asynchronous.AsyncInterpreter\n"
        "    assert facade.in_worker_thread is asynchronous.in_worker_thread\n"
    )

    report = loaded_after(code)

    assert report["before"] == []
    assert set(ASYNC_MODULES) <= set(report["after"])


def test_an_async_interpreter_pickled_elsewhere_unpickles_after_a_plain_import() -> None:
    interpreter = fsaga.AsyncInterpreter(timeout=5.0)
    code = (
        f"import pickle\nimport fsaga\ninterpreter = pickle.loads({pickle.dumps(interpreter)!r})\n"
        "assert type(interpreter) is fsaga.AsyncInterpreter\n"
        "assert pickle.loads(pickle.dumps(fsaga.AsyncInterpreter)) is fsaga.AsyncInterpreter\n"
    )

    report = loaded_after(code)

    assert set(ASYNC_MODULES) <= set(report["after"])


DATABASE_CLIENTS = ("psycopg", "psycopg_pool", "redis")


def clients_after(code: str) -> list[str]:
    """Which database clients a fresh interpreter has loaded after running `code`."""
    probe = (
        f"import json, sys\n{code}\n"
        f"print(json.dumps(sorted(name for name in {DATABASE_CLIENTS!r} if name in sys.modules)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-B", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        cwd=PACKAGE_ROOT.parent,
    )
    assert completed.returncode == 0, completed.stderr
    loaded: list[str] = json.loads(completed.stdout)
    return loaded


def test_importing_the_stores_loads_no_database_client() -> None:
    code = (
        "import fsaga, fsaga.stores\n"
        "from fsaga.stores import MemoryStore, SqliteStore, save, transaction\n"
        "names = {'PostgresStore', 'AsyncPostgresStore', 'RedisStore', 'AsyncRedisStore'}\n"
        "assert names <= set(dir(fsaga.stores)) and names <= set(fsaga.stores.__all__)\n"
    )

    assert clients_after(code) == []


@pytest.mark.parametrize(
    ("first_use", "loaded"),
    [
        ("fsaga.stores.PostgresStore", ["psycopg", "psycopg_pool"]),
        ("from fsaga.stores import AsyncPostgresStore", ["psycopg", "psycopg_pool"]),
        ("fsaga.stores.postgres.PostgresStore", ["psycopg", "psycopg_pool"]),
        ("fsaga.stores.RedisStore", ["redis"]),
        ("from fsaga.stores import AsyncRedisStore", ["redis"]),
    ],
)
def test_the_first_use_of_a_database_store_loads_its_client_only(
    first_use: str, loaded: list[str]
) -> None:
    assert clients_after(f"import fsaga.stores\n{first_use}") == loaded


def test_the_journal_the_durable_runs_and_the_command_line_do_not_import_psycopg() -> None:
    report = loaded_after(
        "import fsaga.journal, fsaga.journal.cli, fsaga.journal.leases, fsaga.durable\n"
        "import fsaga.__main__\n"
        "assert 'PostgresJournal' in dir(fsaga.journal)\n"
    )

    assert not set(POSTGRES_MODULES) & set(report["after"])


@pytest.mark.parametrize(
    "first_use",
    [
        "fsaga.journal.PostgresJournal",
        "from fsaga.journal import OwnedJournal",
        "from fsaga.journal import *",
        "import fsaga.journal.postgres",
    ],
)
def test_the_first_use_of_the_postgres_journal_imports_psycopg(first_use: str) -> None:
    report = loaded_after(f"import fsaga.journal\n{first_use}\n")

    assert report["before"] == []
    assert set(POSTGRES_MODULES) <= set(report["after"])
