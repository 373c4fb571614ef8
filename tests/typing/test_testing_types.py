"""Type-level tests of the testing kit's checking interpreters and the pytest plugin's
factories: checked by mypy, never run by pytest (see test_types.py)."""

from __future__ import annotations

from typing import assert_type

from fsaga import Outcome, pure
from fsaga.testing import (
    AsyncFaultInjectingInterpreter,
    FaultInjectingInterpreter,
    FaultPlan,
    RecordingInterpreter,
    ScriptedInterpreter,
)
from fsaga.testing.pytest_plugin import AsyncFaultInjectingFactory, FaultInjectingFactory

assert_type(RecordingInterpreter(check=True), RecordingInterpreter)
assert_type(ScriptedInterpreter({}, check=True), ScriptedInterpreter)
assert_type(FaultInjectingInterpreter(FaultPlan(), check=True), FaultInjectingInterpreter)
assert_type(AsyncFaultInjectingInterpreter(FaultPlan(), check=True), AsyncFaultInjectingInterpreter)
RecordingInterpreter(check="yes")  # type: ignore[arg-type]


def use_the_factories(
    fault_injecting_interpreter: FaultInjectingFactory,
    async_fault_injecting_interpreter: AsyncFaultInjectingFactory,
) -> None:
    made = fault_injecting_interpreter(FaultPlan(actions={"charge": 1}))
    assert_type(made, FaultInjectingInterpreter)
    assert_type(pure(1).run(made), Outcome[int])
    assert_type(fault_injecting_interpreter(), FaultInjectingInterpreter)
    assert_type(
        fault_injecting_interpreter(None, on_compensation_failure="stop"),
        FaultInjectingInterpreter,
    )
    assert_type(
        async_fault_injecting_interpreter(FaultPlan(), timeout=1.0, concurrent_compensation=True),
        AsyncFaultInjectingInterpreter,
    )
    fault_injecting_interpreter(plan=FaultPlan())  # type: ignore[call-arg]
    fault_injecting_interpreter(FaultPlan(), check=False)  # type: ignore[call-arg]
    fault_injecting_interpreter(FaultPlan(), on_compensation_failure="halt")  # type: ignore[arg-type]
    async_fault_injecting_interpreter(FaultPlan(), on_branch_failure="abandon")  # type: ignore[arg-type]
