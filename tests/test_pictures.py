"""Pictures of sagas (`fsaga.pictures`): plans and traces as text and Mermaid, against golden
files, and the lanes a trace puts its spans on.

The golden files are in tests/golden/: a ``.txt`` and a ``.mmd`` file for each case of
tests/picture_sagas.py (`PLANS` and `TRACES`), named after it. After a deliberate change to a
picture, regenerate them and read the diff before committing:

    FSAGA_UPDATE_GOLDEN=1 python -m pytest tests/test_pictures.py

(refused under ``CI=true``, where the files are only compared). Every Mermaid file is also
parsed and rendered by Mermaid itself (the ``mermaidx`` package runs Mermaid's own JavaScript
offline), and checked for structure: declared nodes and participants, balanced blocks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import mermaidx
import picture_sagas as sagas
import pytest

from fsaga import Retry, Saga, par, pure, step
from fsaga.durable import DurableSagas
from fsaga.events import Event, SagaStarted, SagaStopped, StepStarted
from fsaga.journal import MemoryJournal
from fsaga.pictures import (
    PlanBind,
    PlanParallel,
    PlanSequence,
    PlanStep,
    PlanSubSaga,
    PlanTimeout,
    PlanValue,
    RunTrace,
    plan_as_mermaid,
    plan_as_text,
    plan_of,
    trace_as_mermaid,
    trace_as_text,
    trace_of_events,
    trace_of_journal,
)
from fsaga.pictures.mermaid import escape
from fsaga.testing import AsyncFaultInjectingInterpreter, FaultPlan, RecordingInterpreter

_T = TypeVar("_T")
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("FSAGA_UPDATE_GOLDEN", "").lower() in {"1", "true", "yes"}


def pictures() -> dict[str, Callable[[], str]]:
    """Every golden file's name and what draws it."""
    drawn: dict[str, Callable[[], str]] = {}
    for name, saga in sagas.PLANS.items():
        drawn[f"{name}.txt"] = partial(draw, plan_as_text, saga)
        drawn[f"{name}.mmd"] = partial(draw, plan_as_mermaid, saga)
    for name, trace in sagas.TRACES.items():
        drawn[f"{name}.txt"] = partial(draw, trace_as_text, trace)
        drawn[f"{name}.mmd"] = partial(draw, trace_as_mermaid, trace)
    return drawn


def draw(picture: Callable[[_T], str], make: Callable[[], _T]) -> str:
    return picture(make())


PICTURES = pictures()


def golden(name: str, drawn: str) -> str:
    """The golden file's text; written from `drawn` first with FSAGA_UPDATE_GOLDEN=1."""
    path = GOLDEN / name
    if UPDATE:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("FSAGA_UPDATE_GOLDEN is refused under CI=true: CI compares the files")
        path.write_text(drawn + "\n", encoding="utf-8")
    if not path.exists():
        pytest.fail(f"no golden file {path.name}: run with FSAGA_UPDATE_GOLDEN=1 to write it")
    return path.read_text(encoding="utf-8").removesuffix("\n")


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_pictures_match_their_golden_files(name: str) -> None:
    drawn = PICTURES[name]()
    assert drawn == golden(name, drawn), f"{name} changed; see the module docstring"


def test_every_golden_file_is_drawn_by_a_case() -> None:
    assert sorted(path.name for path in GOLDEN.iterdir()) == sorted(PICTURES)


# -- the Mermaid is Mermaid ------------------------------------------------------------------


def unescaped(label: str) -> str:
    codes = {"#35;": "#", "#amp;": "&", "#quot;": '"', "#lt;": "<", "#gt;": ">", "#59;": ";"}
    return re.sub(r"#(?:35|amp|quot|lt|gt|59);", lambda match: codes[match.group(0)], label)


def flowchart_problems(text: str) -> list[str]:
    """What is wrong with a flowchart's structure: edges between undeclared nodes, a node
    declared twice, unbalanced subgraphs."""
    lines = text.splitlines()
    problems = [] if lines[0] == "flowchart TD" else [f"first line {lines[0]!r}"]
    declared: list[str] = []
    depth = 0
    edges: list[tuple[str, str]] = []
    for line in lines[1:]:
        stripped = line.strip()
        if match := re.fullmatch(r'subgraph (s\d+) \["[^"]*"\]', stripped):
            declared.append(match.group(1))
            depth += 1
        elif stripped == "end":
            depth -= 1
            problems += ["an end without its subgraph"] if depth < 0 else []
        elif match := re.fullmatch(r'(\w+) -->(?:\|"[^"]*"\|)? (\w+)', stripped):
            edges.append((match.group(1), match.group(2)))
        elif match := re.fullmatch(r'(\w+)(\[|\{\{|\(\[|\[/)"[^"]*"(\]|\}\}|\]\)|/\])', stripped):
            declared.append(match.group(1))
        elif not re.fullmatch(r"classDef \w+ .+|class [\w,]+ \w+", stripped):
            problems.append(f"unexpected line {stripped!r}")
    problems += [f"{name} declared twice" for name in set(declared) if declared.count(name) > 1]
    problems += [] if depth == 0 else ["a subgraph without its end"]
    problems += [
        f"edge {source} --> {target} to an undeclared node"
        for source, target in edges
        if source not in declared or target not in declared
    ]
    return problems


def sequence_problems(text: str) -> list[str]:
    """What is wrong with a sequence diagram's structure: messages or notes naming undeclared
    participants, unbalanced rect blocks."""
    lines = text.splitlines()
    problems = [] if lines[0] == "sequenceDiagram" else [f"first line {lines[0]!r}"]
    participants: list[str] = []
    depth = 0
    for line in lines[1:]:
        stripped = line.strip()
        if ";" in re.sub(r"#\w+;", "", stripped):
            problems.append(f"a bare semicolon (a line break to Mermaid) in {stripped!r}")
        if match := re.fullmatch(r"participant (L\d+) as .+", stripped):
            participants.append(match.group(1))
        elif stripped.startswith("rect "):
            depth += 1
        elif stripped == "end":
            depth -= 1
        elif match := re.fullmatch(r"Note over (L\d+)(?:,(L\d+))?: .+", stripped):
            named = [name for name in match.groups() if name is not None]
            problems += [
                f"note over undeclared {name}" for name in named if name not in participants
            ]
        elif match := re.fullmatch(r"(L\d+)(->>|-x|-\)|-->>|--x|--\))(L\d+): .+", stripped):
            for name in (match.group(1), match.group(3)):
                problems += [] if name in participants else [f"message to undeclared {name}"]
        else:
            problems.append(f"unexpected line {stripped!r}")
    problems += [] if depth == 0 else ["unbalanced rect blocks"]
    return problems


MERMAID = sorted(name for name in PICTURES if name.endswith(".mmd"))


@pytest.mark.parametrize("name", MERMAID)
def test_the_mermaid_is_well_formed(name: str) -> None:
    text = PICTURES[name]()
    check = flowchart_problems if text.startswith("flowchart") else sequence_problems
    assert check(text) == []


@pytest.mark.parametrize("name", MERMAID)
def test_mermaid_itself_parses_and_draws_every_label(name: str) -> None:
    text = PICTURES[name]()
    svg = mermaidx.render(text).svg()  # raises on a syntax error, with Mermaid's message
    drawn = " ".join(re.sub(r"<[^>]+>", " ", svg).replace("&lt;", "<").replace("&gt;", ">").split())
    drawn = drawn.replace("&quot;", '"').replace("&#39;", "'").replace("&amp;", "&")
    for label in labels(text):
        for piece in unescaped(label).split("<br/>"):
            assert " ".join(piece.split()) in drawn, f"{name}: {piece!r} not drawn"


def labels(text: str) -> list[str]:
    """The text a diagram shows: a flowchart's quoted labels, a sequence diagram's participant
    names, notes and messages."""
    if text.startswith("flowchart"):
        return re.findall(r'"([^"]*)"', text)
    shown = r"^\s*(?:participant L\d+ as (.+)|Note over [\w,]+: (.+)|L\d+\S+L\d+: (.+))$"
    return ["".join(groups) for groups in re.findall(shown, text, re.MULTILINE)]


def test_structure_checks_catch_broken_diagrams() -> None:
    assert flowchart_problems('flowchart TD\n    n1["a"]\n    n1 --> n2') == [
        "edge n1 --> n2 to an undeclared node"
    ]
    assert sequence_problems(
        "sequenceDiagram\n    participant L0 as a\n    rect x\n    L0->>L1: b"
    ) == [
        "message to undeclared L1",
        "unbalanced rect blocks",
    ]
    with pytest.raises(RuntimeError, match="Parse error"):
        mermaidx.render("sequenceDiagram\n    L0->>L0: a; b").svg()


def test_labels_cannot_break_the_syntax() -> None:
    assert escape('a "b"; #c <d> & e\nf') == "a #quot;b#quot;#59; #35;c #lt;d#gt; #amp; e f"
    nasty = step(lambda: 1, name="x", compensate=None).then(
        step(lambda: 2, name='say-"hi";<b>&end')
    )
    text = plan_as_mermaid(nasty)
    assert flowchart_problems(text) == []
    mermaidx.render(text).svg()


# -- plans -----------------------------------------------------------------------------------


def test_a_plan_is_read_without_running_anything() -> None:
    ran: list[str] = []
    saga = step(lambda: ran.append("a"), name="a").bind(lambda _: step(lambda: ran.append("b")))
    assert plan_of(saga) == PlanSequence((PlanStep("a", explicit=True), PlanBind("lambda")))
    assert ran == []


def test_plan_nodes_for_every_kind_of_saga() -> None:
    saga = (
        step(sagas.reserve, sagas.release, retry=Retry(2))
        .then(par(step(sagas.charge, name="charge"), pure(1)))
        .then(step(sagas.notify).named("tell").timeout(3))
    )
    assert plan_of(saga) == PlanSequence(
        (
            PlanStep("reserve", compensation="release", retry=Retry(2)),
            PlanParallel((PlanStep("charge", explicit=True), PlanValue())),
            PlanTimeout(3.0, PlanSubSaga("tell", PlanStep("notify"))),
        )
    )
    assert plan_of(pure(1).map(str)) == PlanValue()


def test_zip_sequence_and_traverse_show_the_steps_they_run() -> None:
    saga = step(sagas.pack).zip(step(sagas.label))
    assert plan_of(saga) == PlanSequence((PlanStep("pack"), PlanStep("label")))


def test_a_long_chain_is_drawn_without_recursion() -> None:
    saga: Saga[Any] = step(sagas.notify)
    for _ in range(20_000):
        saga = saga.then(step(sagas.notify))
    assert plan_as_text(saga).count("\n") == 20_001
    right: Saga[Any] = step(sagas.notify)
    for _ in range(20_000):
        right = step(sagas.notify).then(right)
    assert len(plan_of(right).parts) == 20_001  # type: ignore[union-attr]


def test_plan_of_refuses_what_is_not_a_saga() -> None:
    with pytest.raises(TypeError, match=r"plan_of\(\) needs a Saga, got 42"):
        plan_of(42)  # type: ignore[arg-type]


# -- traces: what ran, on which lane ----------------------------------------------------------


def test_a_trace_lists_every_attempt_and_its_outcome_in_order() -> None:
    trace = sagas.retries()
    assert [(span.kind, span.path, span.attempt, span.status) for span in trace.spans] == [
        ("action", "reserve", 1, "completed"),
        ("action", "charge", 1, "retried"),
        ("action", "charge", 2, "retried"),
        ("action", "charge", 3, "completed"),
        ("action", "ship", 1, "failed"),
        ("compensation", "charge", 1, "completed"),
        ("compensation", "reserve", 1, "retried"),
        ("compensation", "reserve", 2, "completed"),
    ]
    assert [span.retry_delay for span in trace.spans[1:3]] == [0.5, 1.0]
    assert trace.status == "failed"


def test_compensations_are_on_the_lanes_of_the_steps_they_undo() -> None:
    trace = sagas.failure()
    labels = {span.path: trace.lane(span.lane).label for span in trace.spans}
    assert labels == {
        "reserve": "main",
        "charge": "charge",
        "#1/step": "#1",
        "#1/step#2": "#1",
        "shipping/pack": "shipping",
        "shipping/label": "shipping",
        "ship": "main",
    }
    undone = [span.path for span in trace.spans if span.kind == "compensation"]
    assert undone == ["shipping/label", "shipping/pack", "charge", "reserve"]


def test_concurrent_branches_get_a_lane_each_under_the_async_interpreter() -> None:
    saga = par(
        step(sagas.charge, name="charge").then(step(sagas.notify, name="receipt")).named("pay"),
        par(step(sagas.pack, name="pack"), step(sagas.label, name="label")).named("ship"),
    )
    interpreter = AsyncFaultInjectingInterpreter(FaultPlan())

    async def run() -> None:
        await saga.run(interpreter, saga_id="concurrent")

    anyio.run(run)
    trace = trace_of_events(interpreter.events)
    lanes = {
        lane.label: trace.lane(lane.parent).label if lane.parent is not None else None
        for lane in trace.lanes
    }
    assert lanes == {
        "main": None,
        "pay": "main",
        "ship/pack": "main",
        "ship/label": "main",
    }
    starts = [span.start for span in trace.spans]
    assert starts == sorted(starts)


def test_a_run_without_finish_is_running_and_spans_without_end_are_in_flight() -> None:
    trace = sagas.journal_unfinished()
    assert trace.status == "running"
    assert trace.outcome is None
    assert trace.spans[-1].status == "in_flight"
    assert trace.spans[-1].end is None


def test_trace_of_events_picks_one_run() -> None:
    recording = RecordingInterpreter()
    step(sagas.notify, name="first").run(recording, saga_id="one")
    step(sagas.notify, name="second").run(recording, saga_id="two")
    assert [span.path for span in trace_of_events(recording.events).spans] == ["first"]
    chosen = trace_of_events(recording.events, saga_id="two")
    assert [span.path for span in chosen.spans] == ["second"]
    with pytest.raises(ValueError, match="no events of saga 'three'"):
        trace_of_events(recording.events, saga_id="three")


def test_a_run_that_stopped_without_an_outcome_is_traced_as_still_running() -> None:
    events: list[Event] = [
        SagaStarted("s-1", 10.0),
        StepStarted("s-1", "first", 1, 10.5),
        SagaStopped("s-1", 11.0, "fenced"),
    ]
    trace = trace_of_events(events)
    assert trace.status == "running"
    assert trace.outcome == "stopped (fenced), no outcome recorded"
    assert [span.path for span in trace.spans] == ["first"]


# -- traces from a journal -------------------------------------------------------------------


def journal_trace(journal: MemoryJournal, saga_id: str) -> RunTrace:
    record = journal.get(saga_id)
    assert record is not None
    return trace_of_journal(record, journal.entries(saga_id))


def test_branches_that_ran_concurrently_get_lanes_from_the_journal() -> None:
    journal = MemoryJournal()

    async def run() -> None:
        await DurableSagas(journal, sagas.definitions).start_async("branches", True, saga_id="b-1")

    anyio.run(run)
    trace = journal_trace(journal, "b-1")
    labels = {span.path: trace.lane(span.lane).label for span in trace.spans}
    assert labels == {
        "charge": "charge",
        "shipping/pack": "shipping",
        "shipping/label": "shipping",
        "#2/step": "#2",
        "#2/step#2": "#2",
        "ship": "main",
    }
    assert trace.clock == "entries"
    assert trace.status == "failed"
    assert (trace.outcome or "").startswith("Failure: NoTruck")
    assert sequence_problems(trace_as_mermaid(trace)) == []


def test_branches_run_one_after_another_keep_only_their_position_lanes() -> None:
    journal = MemoryJournal()
    DurableSagas(journal, sagas.definitions).start("sync-branches", 0, saga_id="s-1")
    trace = journal_trace(journal, "s-1")
    assert {span.path: trace.lane(span.lane).label for span in trace.spans} == {
        "charge": "main",
        "shipping/pack": "main",
        "#2/label": "#2",
        "#2/label#2": "#2",
    }


def test_a_journal_trace_marks_retried_and_in_flight_attempts() -> None:
    trace = sagas.journal_unfinished()
    assert [
        (span.path, span.attempt, span.status, span.start, span.end) for span in trace.spans
    ] == [
        ("reserve", 1, "completed", 1.0, 2.0),
        ("charge", 1, "retried", 3.0, 4.0),
        ("charge", 2, "completed", 5.0, 6.0),
        ("ship", 1, "in_flight", 7.0, None),
    ]


def test_par_branches_that_take_a_position_scope_are_drawn_under_it() -> None:
    saga = par(step(sagas.pack), step(sagas.label, name="label").timeout(2))
    assert plan_as_text(saga).splitlines() == [
        "saga",
        "└── par, 2 branches",
        "    ├── branch 0",
        "    │   └── pack  (no undo)",
        "    └── timeout 2s",
        "        └── label  (no undo)",
    ]
    recording = RecordingInterpreter()
    saga.run(recording)
    assert recording.paths("action") == ["#0/pack", "label"]
