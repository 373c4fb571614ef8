"""fsaga's pytest plugin (fsaga/testing/pytest_plugin.py), run as users run it: in pytest
sessions of their own, started by pytester, opting in through ``pytest_plugins``, ``-p`` or the
``pytest11`` entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fsaga import Failure, Success, step
from fsaga.testing import FaultInjectingInterpreter, FaultPlan, RecordingInterpreter
from fsaga.testing.pytest_plugin import FaultInjectingFactory

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "fsaga.testing.pytest_plugin"

SHOP = """
from functools import partial

import fsaga
from fsaga import Saga, step

stock = {"sku-42": 10}


def take(quantity: int) -> int:
    stock["sku-42"] -= quantity
    return quantity


def put_back(quantity: int) -> None:
    stock["sku-42"] += quantity


def declined() -> str:
    raise RuntimeError("card declined")


def order(fail: bool) -> Saga[str]:
    charge = step(declined, name="charge") if fail else step(lambda: "P-1", name="charge")
    return step(partial(take, 3), put_back, name="reserve").then(charge)
"""

EVERY_FIXTURE = (
    SHOP
    + """
import pytest
from hypothesis import given, settings

from fsaga.durable import DurableSagas, SagaDefinitions
from fsaga.testing import FaultPlan
from fsaga.testing.strategies import fault_plans

journals = []


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_saga_interpreter(saga_interpreter):
    outcome = order(fail=True).run(saga_interpreter)
    assert isinstance(outcome, fsaga.Failure)
    assert outcome.compensated == ("reserve",)
    assert saga_interpreter.paths() == ["reserve", "charge", "reserve"]
    assert stock == {"sku-42": 10}


def test_fault_injecting_interpreter(fault_injecting_interpreter):
    interpreter = fault_injecting_interpreter(FaultPlan(actions={"charge": 1}))
    outcome = order(fail=False).run(interpreter)
    assert isinstance(outcome, fsaga.Failure)
    assert interpreter.paths("compensation") == ["reserve"]
    assert order(fail=False).run(fault_injecting_interpreter()) == fsaga.Success("P-1")
    stock["sku-42"] = 10


@settings(max_examples=20)
@given(plan=fault_plans(["reserve", "charge"]))
def test_a_factory_in_a_hypothesis_test(fault_injecting_interpreter, plan):
    stock["sku-42"] = 10
    interpreter = fault_injecting_interpreter(plan)
    try:
        outcome = order(fail=False).run(interpreter)
    except KeyboardInterrupt:
        outcome = interpreter.events[-1].outcome
    if isinstance(outcome, fsaga.Failure):
        assert stock == {"sku-42": 10}


@pytest.mark.anyio
async def test_async_saga_interpreter(async_saga_interpreter):
    outcome = await order(fail=True).run(async_saga_interpreter)
    assert isinstance(outcome, fsaga.Failure)
    assert async_saga_interpreter.paths() == ["reserve", "charge", "reserve"]


@pytest.mark.anyio
async def test_async_fault_injecting_interpreter(async_fault_injecting_interpreter):
    interpreter = async_fault_injecting_interpreter(
        FaultPlan(interrupt="charge"), concurrent_compensation=True
    )
    outcome = await order(fail=False).run(interpreter)
    assert interpreter.interrupted
    assert isinstance(outcome, fsaga.Failure)
    assert outcome.compensated == ("reserve",)
    stock["sku-42"] = 10


def test_saga_journal(saga_journal, tmp_path):
    definitions = SagaDefinitions()
    definitions.saga("order")(order)
    runs = DurableSagas(saga_journal, definitions)
    assert runs.start("order", False, saga_id="o-1") == fsaga.Success("P-1")
    assert [entry.kind for entry in saga_journal.entries("o-1")] == [
        "intent", "completed", "intent", "completed"
    ]
    assert (tmp_path / "journal.db").exists()
    journals.append(saga_journal)
    stock["sku-42"] = 10


def test_the_journal_was_closed_after_its_test():
    from fsaga.journal import JournalClosedError

    with pytest.raises(JournalClosedError):
        journals[0].entries("o-1")
"""
)


def test_every_fixture_through_pytest_plugins_in_conftest(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(f"pytest_plugins = [{PLUGIN!r}]")
    pytester.makepyfile(test_shop=EVERY_FIXTURE)

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=7)


def test_the_plugin_through_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_shop=SHOP
        + """
def test_saga_interpreter(saga_interpreter):
    assert order(fail=False).run(saga_interpreter) == fsaga.Success("P-1")
"""
    )

    result = pytester.runpytest_inprocess("-p", PLUGIN, "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)


def test_blocking_the_plugin_removes_its_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_wants_a_journal(saga_journal):\n    pass\n")

    result = pytester.runpytest_inprocess(f"-p no:{PLUGIN}", "-p", "no:cacheprovider")

    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'saga_journal' not found*"])


def test_a_run_that_breaks_the_contract_fails_the_test(pytester: pytest.Pytester) -> None:
    """The fixtures' interpreters check every run: a trace that breaks a rule (here, one a
    listener rewrote) fails the test that ran it, naming the saga and the rule."""
    pytester.makeconftest(f"pytest_plugins = [{PLUGIN!r}]")
    pytester.makepyfile(
        test_broken=SHOP
        + """
from fsaga import CompensationStarted, SagaFinished
from fsaga.testing import FaultPlan


class Reorder:
    events = None

    def __call__(self, event):
        if isinstance(event, SagaFinished):
            self.events.append(CompensationStarted(event.saga_id, "charge", 1, 0.0))


def test_broken(fault_injecting_interpreter):
    reorder = Reorder()
    interpreter = fault_injecting_interpreter(FaultPlan(actions={"charge": 1}), listeners=[reorder])
    reorder.events = interpreter.events
    order(fail=False).run(interpreter, saga_id="o-9")
"""
    )

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the run of saga 'o-9' broke the contract: *"])


# -- the entry point, and what loading the plugin costs -------------------------------------------


def declared_entry_points() -> dict[str, str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    entry_points: dict[str, str] = project["entry-points"]["pytest11"]
    return entry_points


def test_the_entry_point_is_named_as_the_module_it_loads() -> None:
    """Named so, pytest sees the plugin as loaded when a conftest also lists it in
    ``pytest_plugins`` (or ``-p`` names it): the module is registered once, under one name."""
    assert declared_entry_points() == {PLUGIN: PLUGIN}


@pytest.mark.parametrize("also_in_conftest", [False, True], ids=["alone", "with-pytest-plugins"])
def test_the_entry_point_loads_the_plugin_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, also_in_conftest: bool
) -> None:
    """The entry point pyproject.toml declares, installed as a distribution's metadata, makes
    the fixtures available in a fresh pytest process with nothing else, and together with
    ``pytest_plugins`` too."""
    site = pytester.mkdir("site")
    metadata = site / "fsaga_entry_point-0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fsaga-entry-point\nVersion: 0\n", encoding="utf-8"
    )
    lines = [f"{name} = {module}" for name, module in declared_entry_points().items()]
    (metadata / "entry_points.txt").write_text(
        "[pytest11]\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    path = [str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, path)))
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    if also_in_conftest:
        pytester.makeconftest(f"pytest_plugins = [{PLUGIN!r}]")
    pytester.makepyfile(
        SHOP
        + """
def test_saga_interpreter(saga_interpreter):
    assert order(fail=False).run(saga_interpreter) == fsaga.Success("P-1")
"""
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)


def modules_loaded_by(code: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running `code`, besides pytest's."""
    probe = (
        "import json, sys\n"
        "import pytest\n"
        "before = set(sys.modules)\n"
        f"{code}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-B", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    loaded: list[str] = json.loads(completed.stdout)
    return loaded


def test_loading_the_plugin_imports_only_what_building_sagas_needs() -> None:
    """What pytest pays in every session once the entry point is installed: fsaga's package
    and the modules that build sagas, nothing that runs them (no engine, no anyio, no returns,
    no hypothesis, no SQLite)."""
    loaded = modules_loaded_by(f"import {PLUGIN}")

    assert PLUGIN in loaded
    fsaga_modules = sorted(name for name in loaded if name.startswith("fsaga"))
    assert fsaga_modules == [
        "fsaga",
        "fsaga._lazy",
        "fsaga._numbers",
        "fsaga._signatures",
        "fsaga.context",
        "fsaga.errors",
        "fsaga.policy",
        "fsaga.saga",
        "fsaga.testing",
        PLUGIN,
    ]
    heavy = {"anyio", "hypothesis", "returns", "sqlite3", "toolz", "trio"}
    assert heavy.isdisjoint(name.split(".")[0] for name in loaded)


# -- the fixtures in this session -----------------------------------------------------------------


def test_the_fixtures_make_checking_interpreters(
    saga_interpreter: RecordingInterpreter, fault_injecting_interpreter: FaultInjectingFactory
) -> None:
    assert step(lambda: 1, name="one").run(saga_interpreter) == Success(1)
    interpreter = fault_injecting_interpreter(FaultPlan(actions={"one": 1}))
    assert isinstance(interpreter, FaultInjectingInterpreter)
    assert isinstance(step(lambda: 1, name="one").run(interpreter), Failure)
