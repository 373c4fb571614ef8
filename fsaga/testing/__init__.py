"""Testing kit: interpreters for tests, run invariants, and (in `fsaga.testing.strategies`, which
needs hypothesis) generators of sagas and fault plans.

Importing this package does not import hypothesis.
"""

from fsaga.testing.faults import AsyncFaultInjectingInterpreter as AsyncFaultInjectingInterpreter
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
from fsaga.testing.properties import assert_outcome_matches_trace as assert_outcome_matches_trace
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
