"""Mermaid diagrams of sagas: a plan as a flowchart, a run's trace as a sequence diagram.

Paste either into any Markdown renderer that draws Mermaid (GitHub, GitLab, MkDocs, Sphinx),
or the Mermaid live editor. Every label is escaped with Mermaid's entity codes, so a step name
or an error message cannot break the diagram.

>>> from fsaga import par, step
>>> print(plan_as_mermaid(step(lambda: 1, name="reserve").then(step(lambda: 2, name="ship"))))
flowchart TD
    start(["start"])
    n1["reserve<br/>no undo"]
    n2["ship<br/>no undo"]
    finish(["end"])
    start --> n1
    n1 --> n2
    n2 --> finish
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Final, final

from fsaga.pictures._words import seconds
from fsaga.pictures.plan import (
    Plan,
    PlanBind,
    PlanParallel,
    PlanSequence,
    PlanStep,
    PlanSubSaga,
    PlanTimeout,
    PlanValue,
    describe_step,
    keeps_its_name,
    plan_of,
)
from fsaga.pictures.trace import MAIN, RunTrace, Span, describe_span
from fsaga.saga import Saga

__all__ = ["escape", "plan_as_mermaid", "trace_as_mermaid"]

_ENTITIES: Final = {
    "#": "#35;",
    "&": "#amp;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    ";": "#59;",
}


def escape(text: str) -> str:
    """`text` made safe inside a Mermaid label or message: the characters Mermaid reads as
    syntax become its entity codes, line breaks become spaces.

    >>> escape('say "hi"; #1 <b>')
    'say #quot;hi#quot;#59; #35;1 #lt;b#gt;'
    """
    escaped = "".join(_ENTITIES.get(character, character) for character in text)
    return " ".join(escaped.split())


# -- plans -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Flowchart:
    """A flowchart being written: its node and subgraph lines in order, its edges, the nodes
    of each style."""

    lines: list[str] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    order: dict[str, int] = field(default_factory=lambda: {"start": 0})
    classes: dict[str, list[str]] = field(default_factory=dict)
    count: int = 0
    depth: int = 1

    def node(self, shape: str, label: str, *, style: str | None = None) -> str:
        self.count += 1
        name = f"n{self.count}"
        self.order[name] = self.count
        opening, closing = shape.split("|")
        self.lines.append(f'{"    " * self.depth}{name}{opening}"{label}"{closing}')
        if style is not None:
            self.classes.setdefault(style, []).append(name)
        return name

    def link(self, sources: Sequence[str], targets: Sequence[str], label: str = "") -> None:
        self.edges.extend((source, target, label) for source in sources for target in targets)

    def edge_lines(self) -> list[str]:
        """The edges, from the top of the chart down: by their source, then their target."""
        last = self.count + 1
        ordered = sorted(
            self.edges,
            key=lambda edge: (self.order.get(edge[0], last), self.order.get(edge[1], last)),
        )
        return [
            f'    {source} -->|"{escape(label)}"| {target}'
            if label
            else f"    {source} --> {target}"
            for source, target, label in ordered
        ]


@final
@dataclass(frozen=True, slots=True)
class _Ends:
    """Where a drawn part is entered and left: the nodes edges go to and come from."""

    entries: tuple[str, ...]
    exits: tuple[str, ...]


_STYLES: Final = {
    "bind": "stroke-dasharray: 5 5",
    "timeout": "stroke-dasharray: 3 3",
}


def plan_as_mermaid(saga: Saga[Any] | Plan) -> str:
    """A saga's plan (or a plan) as a Mermaid flowchart, top to bottom.

    A step is a box with what it declares (its undo, retries, timeouts); ``then`` is an
    arrow; ``par`` forks into its branches and joins them; a named sub-saga and a deadline
    are subgraphs around their parts; a ``bind`` continuation is a dashed box, since what it
    runs is only known at run time.
    """
    plan = plan_of(saga) if isinstance(saga, Saga) else saga
    chart = _Flowchart()
    chart.lines.append('    start(["start"])')
    ends = _draw(chart, plan)
    chart.lines.append('    finish(["end"])')
    chart.link(["start"], ends.entries)
    chart.link(ends.exits, ["finish"])
    lines = ["flowchart TD", *chart.lines, *chart.edge_lines()]
    for style, names in chart.classes.items():
        lines.append(f"    classDef {style} {_STYLES[style]}")
        lines.append(f"    class {','.join(names)} {style}")
    return "\n".join(lines)


def _draw(chart: _Flowchart, plan: Plan) -> _Ends:
    match plan:
        case PlanStep(name=name):
            label = "<br/>".join(escape(text) for text in [name, ", ".join(describe_step(plan))])
            node = chart.node("[|]", label)
            return _Ends((node,), (node,))
        case PlanSequence(parts=parts):
            drawn = [_draw(chart, part) for part in parts]
            for before, after in pairwise(drawn):
                chart.link(before.exits, after.entries)
            return _Ends(drawn[0].entries, drawn[-1].exits)
        case PlanParallel(branches=branches):
            fork = chart.node("{{|}}", escape(f"par: {len(branches)} branches"))
            exits: list[str] = []
            inner = [_draw(chart, branch) for branch in branches]
            join = chart.node("{{|}}", "join")
            for index, (branch, ends) in enumerate(zip(branches, inner, strict=True)):
                label = "" if keeps_its_name(branch) else f"branch {index}"
                chart.link([fork], ends.entries, label)
                exits.extend(ends.exits)
            chart.link(exits, [join])
            return _Ends((fork,), (join,))
        case PlanSubSaga(name=name, inner=inner):
            return _subgraph(chart, f"sub-saga {name}", inner)
        case PlanTimeout(seconds=limit, inner=inner):
            return _subgraph(chart, f"timeout {seconds(limit)}", inner, style="timeout")
        case PlanBind(function=function):
            label = f"bind {escape(function)}<br/>decided at run time"
            node = chart.node("[/|/]", label, style="bind")
            return _Ends((node,), (node,))
        case PlanValue():
            node = chart.node("([|])", "value")
            return _Ends((node,), (node,))


def _subgraph(chart: _Flowchart, title: str, inner: Plan, *, style: str | None = None) -> _Ends:
    chart.count += 1
    name = f"s{chart.count}"
    indent = "    " * chart.depth
    chart.lines.append(f'{indent}subgraph {name} ["{escape(title)}"]')
    if style is not None:
        chart.classes.setdefault(style, []).append(name)
    chart.depth += 1
    ends = _draw(chart, inner)
    chart.depth -= 1
    chart.lines.append(f"{indent}end")
    return ends


# -- traces ----------------------------------------------------------------------------------


_ARROWS: Final = {
    ("action", "completed"): "->>",
    ("action", "in_flight"): "-)",
    ("compensation", "completed"): "-->>",
    ("compensation", "in_flight"): "--)",
}
"""Forward work is a solid arrow, the undo a dotted one; an arrow that ends in a cross failed."""

_UNDO_BACKGROUND: Final = "rgba(200, 40, 40, 0.08)"
_FAILED: Final = frozenset({"failed", "unknown", "rejected"})


def trace_as_mermaid(trace: RunTrace) -> str:
    """A run's trace as a Mermaid sequence diagram: one participant per lane (the main line,
    then each ``par`` branch), one message per attempt in the order they started.

    Forward attempts are solid arrows on their lane (ending in a cross when they failed), a
    branch's first attempt follows a ``fork`` arrow from its parent lane, and a parent lane
    going on after its branches follows their ``join`` arrows. The undo is a shaded block of
    dotted arrows that go back from lane to lane, each to the lane of the step it undoes.
    """
    lanes = {lane.key: f"L{index}" for index, lane in enumerate(trace.lanes)}
    lines = ["sequenceDiagram"]
    lines += [f"    participant {lanes[lane.key]} as {escape(lane.label)}" for lane in trace.lanes]
    lines.append(f"    Note over {lanes[MAIN]}: {escape(f'saga {trace.saga_id} started')}")
    forked: set[str] = {MAIN}
    waiting: dict[str, list[str]] = {}  # lane -> its branches that ran and have not joined
    undoing = False
    previous: str = MAIN
    failed: str = MAIN  # the lane of the last failure: where the undo starts from
    for span in trace.spans:
        lane = span.lane
        if span.kind == "action" and not undoing:
            _fork_and_join(trace, lanes, lane, forked, waiting, lines)
        if span.kind == "compensation" and not undoing:
            undoing = True
            lines.append(f"    rect {_UNDO_BACKGROUND}")
            previous = failed
        source = previous if span.kind == "compensation" else lane
        if span.kind == "action" and span.status in _FAILED:
            failed = lane
        arrow = _ARROWS.get((span.kind, span.status))
        if arrow is None:
            arrow = "-x" if span.kind == "action" else "--x"
        indent = "        " if undoing else "    "
        lines.append(
            f"{indent}{lanes[source]}{arrow}{lanes[lane]}: {escape(_message(trace, span))}"
        )
        previous = lane
    if undoing:
        lines.append("    end")
    if trace.outcome is not None:
        first = trace.outcome.splitlines()[0]
        over = lanes[MAIN] if len(lanes) == 1 else f"{lanes[MAIN]},L{len(lanes) - 1}"
        lines.append(f"    Note over {over}: {escape(first)}")
    return "\n".join(lines)


def _fork_and_join(
    trace: RunTrace,
    lanes: dict[str, str],
    lane: str,
    forked: set[str],
    waiting: dict[str, list[str]],
    lines: list[str],
) -> None:
    """The fork arrows before a branch's first attempt (from each ancestor not yet forked),
    and the join arrows before a lane goes on after branches it forked."""
    for branch in waiting.pop(lane, []):
        lines.append(f"    {lanes[branch]}->>{lanes[lane]}: join")
    chain: list[str] = []
    key: str | None = lane
    while key is not None and key not in forked:
        chain.append(key)
        key = trace.lane(key).parent
    for branch in reversed(chain):
        parent = trace.lane(branch).parent or MAIN
        lines.append(f"    {lanes[parent]}->>{lanes[branch]}: fork")
        forked.add(branch)
        waiting.setdefault(parent, []).append(branch)


def _message(trace: RunTrace, span: Span) -> str:
    text = describe_span(span)
    if trace.clock == "seconds" and span.end is not None:
        return f"{text} [{seconds(span.end - span.start)}]"
    return text
