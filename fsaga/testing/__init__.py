"""Testing kit: interpreters for tests, run invariants, and (in `fsaga.testing.strategies`, which
needs hypothesis) generators of sagas and fault plans.

Importing this package imports nothing else: each name loads its module on first use (so
the pytest plugin, `fsaga.testing.pytest_plugin`, costs nothing until a fixture is used), and
nothing here imports hypothesis.
"""

from typing import TYPE_CHECKING

from fsaga import _lazy

# Type checkers see plain re-exports; at run time each name loads its module on first use.
if TYPE_CHECKING:
    from fsaga.testing.faults import (
        AsyncFaultInjectingInterpreter as AsyncFaultInjectingInterpreter,
    )
    from fsaga.testing.faults import FaultInjectingInterpreter as FaultInjectingInterpreter
    from fsaga.testing.faults import FaultPlan as FaultPlan
    from fsaga.testing.faults import InjectedFault as InjectedFault
    from fsaga.testing.faults import Interruption as Interruption
    from fsaga.testing.interpreters import Raise as Raise
    from fsaga.testing.interpreters import RecordedEffect as RecordedEffect
    from fsaga.testing.interpreters import RecordingInterpreter as RecordingInterpreter
    from fsaga.testing.interpreters import Return as Return
    from fsaga.testing.interpreters import Script as Script
    from fsaga.testing.interpreters import ScriptedInterpreter as ScriptedInterpreter
    from fsaga.testing.interpreters import UnscriptedStepError as UnscriptedStepError
    from fsaga.testing.properties import Trace as Trace
    from fsaga.testing.properties import (
        assert_causal_compensation_order as assert_causal_compensation_order,
    )
    from fsaga.testing.properties import (
        assert_compensations_get_their_results as assert_compensations_get_their_results,
    )
    from fsaga.testing.properties import (
        assert_every_completed_step_accounted_for as assert_every_completed_step_accounted_for,
    )
    from fsaga.testing.properties import (
        assert_no_forward_work_during_undo as assert_no_forward_work_during_undo,
    )
    from fsaga.testing.properties import (
        assert_outcome_matches_trace as assert_outcome_matches_trace,
    )
    from fsaga.testing.properties import (
        assert_reverse_compensation_order as assert_reverse_compensation_order,
    )
    from fsaga.testing.properties import (
        assert_unknown_outcomes_settled as assert_unknown_outcomes_settled,
    )
    from fsaga.testing.properties import (
        assert_unstarted_steps_never_compensated as assert_unstarted_steps_never_compensated,
    )
    from fsaga.testing.properties import check_run as check_run
    from fsaga.testing.properties import independent_by_path as independent_by_path
else:
    __getattr__, __dir__ = _lazy.lazy_exports(
        __name__,
        globals(),
        {
            "AsyncFaultInjectingInterpreter": "fsaga.testing.faults",
            "FaultInjectingInterpreter": "fsaga.testing.faults",
            "FaultPlan": "fsaga.testing.faults",
            "InjectedFault": "fsaga.testing.faults",
            "Interruption": "fsaga.testing.faults",
            "Raise": "fsaga.testing.interpreters",
            "RecordedEffect": "fsaga.testing.interpreters",
            "RecordingInterpreter": "fsaga.testing.interpreters",
            "Return": "fsaga.testing.interpreters",
            "Script": "fsaga.testing.interpreters",
            "ScriptedInterpreter": "fsaga.testing.interpreters",
            "UnscriptedStepError": "fsaga.testing.interpreters",
            "Trace": "fsaga.testing.properties",
            "assert_causal_compensation_order": "fsaga.testing.properties",
            "assert_compensations_get_their_results": "fsaga.testing.properties",
            "assert_every_completed_step_accounted_for": "fsaga.testing.properties",
            "assert_no_forward_work_during_undo": "fsaga.testing.properties",
            "assert_outcome_matches_trace": "fsaga.testing.properties",
            "assert_reverse_compensation_order": "fsaga.testing.properties",
            "assert_unknown_outcomes_settled": "fsaga.testing.properties",
            "assert_unstarted_steps_never_compensated": "fsaga.testing.properties",
            "check_run": "fsaga.testing.properties",
            "independent_by_path": "fsaga.testing.properties",
            "faults": "fsaga.testing.faults",
            "interpreters": "fsaga.testing.interpreters",
            "laws": "fsaga.testing.laws",
            "properties": "fsaga.testing.properties",
            "specs": "fsaga.testing.specs",
            "strategies": "fsaga.testing.strategies",
        },
    )

__all__ = [
    "AsyncFaultInjectingInterpreter",
    "FaultInjectingInterpreter",
    "FaultPlan",
    "InjectedFault",
    "Interruption",
    "Raise",
    "RecordedEffect",
    "RecordingInterpreter",
    "Return",
    "Script",
    "ScriptedInterpreter",
    "Trace",
    "UnscriptedStepError",
    "assert_causal_compensation_order",
    "assert_compensations_get_their_results",
    "assert_every_completed_step_accounted_for",
    "assert_no_forward_work_during_undo",
    "assert_outcome_matches_trace",
    "assert_reverse_compensation_order",
    "assert_unknown_outcomes_settled",
    "assert_unstarted_steps_never_compensated",
    "check_run",
    "independent_by_path",
]
