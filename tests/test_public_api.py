"""The declared public surface: every public module's `__all__`, and what importing fsaga does."""

from __future__ import annotations

import ast
import importlib
import json
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
    "fsaga.saga": {"sibling_name"},
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


def exported_names(module: ModuleType) -> set[str]:
    """Public names a module defines at top level, plus its explicit re-exports (``as`` itself).

    Names bound under ``if TYPE_CHECKING:`` and private (underscored) names do not count.
    """
    names: set[str] = set()
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
        "fsaga.interpreter.engine",
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
