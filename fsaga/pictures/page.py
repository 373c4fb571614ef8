"""A run's trace as one self-contained HTML page: a timeline with a lane per ``par`` branch.

The page needs nothing but a browser: its style, its script and its data are inline, it loads
nothing from the network, and it works from a file opened offline. Its script draws the
timeline as SVG: one lane per line of control (the main line, then each branch), one bar per
attempt (green completed, amber failed and retried, red failed, purple cut short with its
outcome unknown, grey in flight), the undo on each lane's lower row in blue with an arrow going
back from each compensation to the step it undoes. A switch lays the bars out by time or one
after another in the order they started. Below it, a table lists every attempt in words; it is
plain HTML, there without the script too.
"""

from __future__ import annotations

import html
import json
from typing import Final

from fsaga.pictures._words import seconds
from fsaga.pictures.trace import RunTrace, Span, describe_span

__all__ = ["trace_as_html"]


def trace_as_html(trace: RunTrace, *, title: str | None = None) -> str:
    """The trace as a self-contained HTML page (a string: write it to a ``.html`` file).

    Args:
        trace: the run's trace (`fsaga.pictures.trace_of_events`, `trace_of_journal`).
        title: the page's title; ``saga ID`` by default.
    """
    title = title if title is not None else f"saga {trace.saga_id}"
    status = trace.status.replace("_", " ")
    length = (
        f" after {seconds(trace.length)}"
        if trace.clock == "seconds" and trace.status != "running"
        else ""
    )
    outcome = trace.outcome or "no outcome recorded yet"
    times = (
        "times in seconds since the run started"
        if trace.clock == "seconds"
        else "the journal records no times: positions are its entry numbers"
    )
    return _PAGE.format(
        title=html.escape(title),
        status_class=html.escape(trace.status),
        status=html.escape(status + length),
        outcome=html.escape(outcome),
        times=html.escape(times),
        lanes=len(trace.lanes),
        rows="\n".join(_row(trace, number, span) for number, span in enumerate(trace.spans, 1)),
        style=_STYLE,
        data=_data(trace),
        script=_SCRIPT,
    )


def _data(trace: RunTrace) -> str:
    """The trace as JSON the page's script reads, safe inside a ``<script>`` element."""
    document = {
        "sagaId": trace.saga_id,
        "status": trace.status,
        "clock": trace.clock,
        "length": trace.length,
        "lanes": [
            {"key": lane.key, "label": lane.label, "parent": lane.parent} for lane in trace.lanes
        ],
        "spans": [
            {
                "path": span.path,
                "kind": span.kind,
                "attempt": span.attempt,
                "lane": span.lane,
                "status": span.status,
                "start": span.start,
                "end": span.end,
                "label": _label(trace, span),
                "what": describe_span(span),
                "took": _took(trace, span),
            }
            for span in trace.spans
        ],
    }
    text = json.dumps(document, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _label(trace: RunTrace, span: Span) -> str:
    """A span's label on its bar: its path, less its lane's scope (a compensation's bar is on
    its lane's undo row, so it needs no word more)."""
    scope = trace.lane(span.lane).label + "/"
    return span.path.removeprefix(scope) if span.lane else span.path


def _took(trace: RunTrace, span: Span) -> str:
    if span.end is None:
        return "in flight"
    if trace.clock == "seconds":
        return seconds(span.end - span.start)
    return f"#{span.start:g} to #{span.end:g}"


def _row(trace: RunTrace, number: int, span: Span) -> str:
    start = seconds(span.start) if trace.clock == "seconds" else f"#{span.start:g}"
    cells = [
        str(number),
        start,
        _took(trace, span),
        trace.lane(span.lane).label,
        describe_span(span),
    ]
    return (
        f'<tr class="{span.kind} {span.status}">'
        + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
        + "</tr>"
    )


_STYLE: Final = """
:root { color-scheme: light; --ink: #1d2330; --muted: #5f6b7a; --line: #d9dee5; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI",
  Roboto, "DejaVu Sans", sans-serif; color: var(--ink); background: #fbfcfd; }
h1 { font-size: 20px; margin: 0 0 4px; }
.summary { margin: 0 0 4px; }
.status { font-weight: 600; padding: 1px 8px; border-radius: 10px; background: #e7ebf0; }
.status.succeeded { background: #d8f1e0; color: #1e6b3a; }
.status.failed { background: #fde2d8; color: #8a3210; }
.status.partially_failed, .status.dead { background: #f9d6d6; color: #8b1a1a; }
.outcome { white-space: pre-wrap; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-size: 12.5px; background: #f1f3f6; padding: 8px 12px; border-radius: 6px; }
.note { color: var(--muted); font-size: 12.5px; }
.controls { margin: 12px 0 6px; display: flex; gap: 16px; align-items: center;
  flex-wrap: wrap; }
.controls button { font: inherit; padding: 3px 10px; border: 1px solid var(--line);
  background: white; border-radius: 4px; cursor: pointer; }
.controls button[aria-pressed="true"] { background: #1d2330; color: white; }
.legend { display: flex; gap: 12px; flex-wrap: wrap; font-size: 12.5px; color: var(--muted); }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  margin-right: 4px; vertical-align: -1px; }
#timeline { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px;
  background: white; }
svg { display: block; font: 12px system-ui, -apple-system, "Segoe UI", Roboto,
  "DejaVu Sans", sans-serif; }
.lane-band { fill: #f6f8fa; }
.lane:nth-of-type(even) .lane-band { fill: #eef1f5; }
.lane-label { font-weight: 600; fill: var(--ink); }
.row-label { fill: var(--muted); font-size: 10.5px; }
.axis line { stroke: var(--line); }
.axis text { fill: var(--muted); font-size: 10.5px; }
.fork { stroke: #9aa5b1; stroke-dasharray: 2 3; }
.undo-start { stroke: #c0392b; stroke-dasharray: 4 3; }
.undo-start-label { fill: #c0392b; font-size: 11px; font-weight: 600; }
.span rect { stroke: rgba(0, 0, 0, 0.25); rx: 3px; }
.span-label { fill: white; font-size: 11.5px; pointer-events: none; }
.span-label.outside { fill: var(--ink); }
.undo-arrow { fill: none; stroke: #2f80ed; stroke-width: 1.6; }
.undo-arrow.failed { stroke: #7b1e1e; }
.c-completed, i.c-completed { fill: #2f9e5b; background: #2f9e5b; }
.c-retried, i.c-retried { fill: #e09b2d; background: #e09b2d; }
.c-failed, i.c-failed { fill: #d64541; background: #d64541; }
.c-unknown, i.c-unknown { fill: #8e44ad; background: #8e44ad; }
.c-rejected, i.c-rejected { fill: #b03a2e; background: #b03a2e; }
.c-in_flight, i.c-in_flight { fill: #95a5a6; background: #95a5a6; }
.c-undone, i.c-undone { fill: #2f80ed; background: #2f80ed; }
.c-undo-failed, i.c-undo-failed { fill: #7b1e1e; background: #7b1e1e; }
.c-undo-retried, i.c-undo-retried { fill: #6fa8f5; background: #6fa8f5; }
table.spans { border-collapse: collapse; margin-top: 16px; font-size: 12.5px; }
table.spans th, table.spans td { text-align: left; padding: 3px 10px;
  border-bottom: 1px solid var(--line); vertical-align: top; }
table.spans td:nth-child(5) { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
table.spans tr.compensation td { color: #1c4f99; }
table.spans tr.failed td, table.spans tr.unknown td { color: #8b1a1a; }
"""

_SCRIPT: Final = r"""
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("fsaga-trace").textContent);
  var GUTTER = 160, RIGHT = 110, ROW = 24, GAP = 6, PAD = 10, AXIS = 26, MIN_BAR = 24;
  var LANE_HEIGHT = PAD + ROW + GAP + ROW + PAD;

  function el(name, attributes, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attributes || {}).forEach(function (key) {
      node.setAttribute(key, attributes[key]);
    });
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, content, attributes) {
    var node = el("text", Object.assign({ x: x, y: y }, attributes || {}), parent);
    node.textContent = content;
    return node;
  }
  function shorten(node, label, room) {
    for (var keep = label.length - 1; keep > 0; keep--) {
      node.textContent = label.slice(0, keep) + "\u2026";
      if (node.getComputedTextLength() <= room) return;
    }
    node.textContent = "";
  }
  function colour(span) {
    if (span.kind === "action") return "c-" + span.status;
    if (span.status === "completed") return "c-undone";
    if (span.status === "retried") return "c-undo-retried";
    return span.status === "in_flight" ? "c-in_flight" : "c-undo-failed";
  }

  var lanes = data.lanes, spans = data.spans;
  var laneIndex = {};
  lanes.forEach(function (lane, index) { laneIndex[lane.key] = index; });
  var depth = {};
  lanes.forEach(function (lane) {
    depth[lane.key] = lane.parent === null ? 0 : (depth[lane.parent] || 0) + 1;
  });
  var first = spans.length ? Math.min.apply(null, spans.map(function (s) { return s.start; })) : 0;
  var last = Math.max.apply(null, [data.length, first + 1].concat(spans.map(function (s) {
    return s.end === null ? s.start : s.end;
  })));
  first = data.clock === "seconds" ? Math.min(first, 0) : Math.min(first, 1);

  function timeLayout(width) {
    var scale = (width - GUTTER - RIGHT) / Math.max(last - first, 1e-9);
    return spans.map(function (span) {
      var end = span.end === null ? last : span.end;
      var x = GUTTER + (span.start - first) * scale;
      return { x: x, width: Math.max((end - span.start) * scale, 3) };
    });
  }
  function niceStep(raw) {
    var magnitude = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1e-9))));
    var factors = data.clock === "seconds" ? [1, 2, 2.5, 5, 10] : [1, 2, 5, 10];
    for (var i = 0; i < factors.length; i++) {
      if (factors[i] * magnitude >= raw) return Math.max(factors[i] * magnitude, 1e-9);
    }
    return 10 * magnitude;
  }
  function slot() {
    var room = (naturalWidth() - GUTTER - 24) / Math.max(spans.length, 1);
    return Math.min(Math.max(room, 84), 140);
  }
  function orderLayout() {
    var width = slot();
    return spans.map(function (span, index) {
      return { x: GUTTER + index * width + 4, width: width - 8 };
    });
  }
  function naturalWidth() {
    return Math.max(document.getElementById("timeline").clientWidth || 960, 640);
  }
  function defaultMode() {
    if (data.clock !== "seconds" || !spans.length) return "order";
    var narrowest = Math.min.apply(null, timeLayout(naturalWidth()).map(function (b) {
      return b.width;
    }));
    return narrowest >= MIN_BAR ? "time" : "order";
  }

  function draw(mode) {
    var holder = document.getElementById("timeline");
    holder.textContent = "";
    var width = mode === "time" ? naturalWidth() : GUTTER + spans.length * slot() + 24;
    var height = AXIS + lanes.length * LANE_HEIGHT + 8;
    var svg = el("svg", {
      width: width, height: height, viewBox: "0 0 " + width + " " + height,
      role: "img", "aria-label": "timeline of saga " + data.sagaId, "data-mode": mode
    }, holder);
    var defs = el("defs", {}, svg);
    ["undone", "undo-failed"].forEach(function (name) {
      var marker = el("marker", {
        id: "arrow-" + name, viewBox: "0 0 10 10", refX: 9, refY: 5,
        markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"
      }, defs);
      el("path", { d: "M0,0 L10,5 L0,10 z", "class": "c-" + name }, marker);
    });
    var boxes = mode === "time" ? timeLayout(width) : orderLayout();
    var top = function (span) {
      var y = AXIS + laneIndex[span.lane] * LANE_HEIGHT + PAD;
      return span.kind === "action" ? y : y + ROW + GAP;
    };

    var axis = el("g", { "class": "axis" }, svg);
    if (mode === "time") {
      var scale = (width - GUTTER - RIGHT) / Math.max(last - first, 1e-9);
      var step = niceStep((last - first) / 6);
      for (var value = Math.ceil(first / step) * step; value <= last + 1e-9; value += step) {
        var x = GUTTER + (value - first) * scale;
        el("line", { x1: x, x2: x, y1: AXIS - 6, y2: height - 4 }, axis);
        var shown = data.clock === "seconds"
          ? (+value.toPrecision(4)) + "s" : "#" + Math.round(value);
        var end = x > width - 60;
        text(axis, x + (end ? -3 : 3), AXIS - 10, shown, { "text-anchor": end ? "end" : "start" });
      }
    } else {
      spans.forEach(function (span, index) {
        text(axis, boxes[index].x, AXIS - 10, String(index + 1));
      });
    }

    lanes.forEach(function (lane, index) {
      var group = el("g", { "class": "lane", "data-lane": lane.key }, svg);
      var y = AXIS + index * LANE_HEIGHT;
      el("rect", { "class": "lane-band", x: 0, y: y, width: width, height: LANE_HEIGHT }, group);
      text(group, 10 + 12 * depth[lane.key], y + PAD + 16, lane.label, { "class": "lane-label" });
      text(group, 10 + 12 * depth[lane.key], y + PAD + ROW + GAP + 15, "undo", {
        "class": "row-label"
      });
      if (lane.parent !== null) {
        var opening = spans.findIndex(function (s) { return s.lane === lane.key; });
        if (opening >= 0) {
          var forkX = boxes[opening].x;
          el("line", {
            "class": "fork", x1: forkX, x2: forkX,
            y1: AXIS + laneIndex[lane.parent] * LANE_HEIGHT + PAD + ROW, y2: y + PAD
          }, svg);
        }
      }
    });

    var undoStarts = spans.findIndex(function (s) { return s.kind === "compensation"; });
    if (undoStarts >= 0) {
      var undoX = boxes[undoStarts].x - 2;
      el("line", { "class": "undo-start", x1: undoX, x2: undoX, y1: AXIS - 4, y2: height - 4 },
        svg);
      text(svg, undoX + 4, height - 8, "undo begins", { "class": "undo-start-label" });
    }

    var arrows = el("g", { "class": "undo-arrows" }, svg);  // under the bars
    var drawn = [];
    spans.forEach(function (span, index) {
      var box = boxes[index], y = top(span);
      var group = el("g", {
        "class": "span " + span.kind + " " + span.status, "data-path": span.path,
        "data-lane": span.lane, "data-attempt": span.attempt
      }, svg);
      var title = el("title", {}, group);
      title.textContent = span.what + " (" + span.took + ")";
      el("rect", {
        "class": colour(span), x: box.x, y: y, width: box.width, height: ROW
      }, group);
      drawn.push({ span: span, box: box, y: y, group: group });
    });
    drawn.forEach(function (bar) {
      // The label goes inside its bar, or else just after it when the row is free up to the
      // next bar, or else where there is more room, cut short.
      var next = width - 8;
      drawn.forEach(function (other) {
        if (other.y === bar.y && other.box.x > bar.box.x) next = Math.min(next, other.box.x);
      });
      var label = bar.span.label + (bar.span.attempt > 1 ? " #" + bar.span.attempt : "");
      var node = text(bar.group, bar.box.x + 5, bar.y + 16, label, { "class": "span-label" });
      var inside = bar.box.width - 10;
      var after = next - (bar.box.x + bar.box.width) - 8;
      var needed = node.getComputedTextLength();
      if (needed <= inside) return;
      if (needed > after && inside >= after) {
        shorten(node, label, inside);
        return;
      }
      node.setAttribute("x", bar.box.x + bar.box.width + 4);
      node.setAttribute("class", "span-label outside");
      if (needed > after) shorten(node, label, after);
    });

    drawn.forEach(function (undo) {
      if (undo.span.kind !== "compensation") return;
      var undone = null;
      drawn.forEach(function (done) {
        if (done.span.kind === "action" && done.span.path === undo.span.path &&
            done.span.status !== "failed" && done.box.x <= undo.box.x) undone = done;
      });
      if (undone === null) return;
      var fromX = undo.box.x + 2, fromY = undo.y + 2;
      var toX = undone.box.x + undone.box.width, toY = undone.y + ROW;
      var bend = Math.max((fromX - toX) / 3, 18);
      var failed = undo.span.status !== "completed";
      el("path", {
        "class": "undo-arrow" + (failed ? " failed" : ""), "data-path": undo.span.path,
        d: "M" + fromX + "," + fromY + " C" + (fromX - bend) + "," + fromY + " " +
          (toX + bend) + "," + (toY + 14) + " " + toX + "," + toY,
        "marker-end": "url(#arrow-" + (failed ? "undo-failed" : "undone") + ")"
      }, arrows);
    });

    document.querySelectorAll(".controls button").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.mode === mode));
    });
  }

  document.querySelectorAll(".controls button").forEach(function (button) {
    button.addEventListener("click", function () { draw(button.dataset.mode); });
  });
  draw(defaultMode());
  document.body.setAttribute("data-drawn", "true");
})();
"""

_PAGE: Final = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<p class="summary"><span class="status {status_class}">{status}</span>
<span class="note">{lanes} lane(s); {times}</span></p>
<pre class="outcome">{outcome}</pre>
<div class="controls">
<span>lay out by</span>
<button type="button" data-mode="time" aria-pressed="false">time</button>
<button type="button" data-mode="order" aria-pressed="false">order</button>
<span class="legend">
<span><i class="c-completed"></i>completed</span>
<span><i class="c-retried"></i>failed, retried</span>
<span><i class="c-failed"></i>failed</span>
<span><i class="c-unknown"></i>outcome unknown</span>
<span><i class="c-in_flight"></i>in flight</span>
<span><i class="c-undone"></i>compensated</span>
<span><i class="c-undo-failed"></i>compensation failed</span>
</span>
</div>
<div id="timeline"><noscript>The timeline needs JavaScript; the table below lists the same
attempts.</noscript></div>
<table class="spans">
<thead><tr><th>#</th><th>start</th><th>took</th><th>lane</th><th>what</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<script type="application/json" id="fsaga-trace">{data}</script>
<script>{script}</script>
</body>
</html>
"""
