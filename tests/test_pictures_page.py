"""The HTML page of a run's trace (`fsaga.pictures.trace_as_html`), opened in a real browser,
and ``fsaga journal show ID --mermaid / --html FILE``.

The browser test runs Debian's headless Chromium (``apt-get install chromium``) on the page
file, with no network: it dumps the DOM after the page's script ran and checks the lanes, bars,
labels and undo arrows it drew, and takes a screenshot that must be a PNG of the page, not a
blank one. Without Chromium the test skips and says how to install it; under ``CI=true`` it
fails instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import picture_sagas as sagas
import pytest
from browser import headless, png_pixels

from fsaga.__main__ import main
from fsaga.durable import DurableSagas
from fsaga.journal import SqliteJournal
from fsaga.pictures import (
    RunTrace,
    Span,
    trace_as_html,
    trace_as_mermaid,
    trace_of_journal,
)
from fsaga.pictures.trace import MAIN, Lane

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@dataclass
class Drawn:
    """What a page's DOM holds of the timeline: its SVG's mode, lanes, bars, labels, arrows."""

    mode: str | None = None
    lanes: list[str] = field(default_factory=list)
    lane_labels: list[str] = field(default_factory=list)
    bars: list[tuple[str, str, str]] = field(default_factory=list)  # (path, kind, status)
    bar_labels: list[str] = field(default_factory=list)
    undo_arrows: list[str] = field(default_factory=list)
    rows: int = 0
    drawn: bool = False


class DomReader(HTMLParser):
    """Reads the timeline out of a DOM dump."""

    def __init__(self) -> None:
        super().__init__()
        self.found = Drawn()
        self._text: list[str] | None = None
        self._in_body_rows = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        given = {name: value or "" for name, value in attrs}
        classes = given.get("class", "").split()
        if tag == "body":
            self.found.drawn = given.get("data-drawn") == "true"
        elif tag == "svg" and "data-mode" in given:
            self.found.mode = given["data-mode"]
        elif tag == "g" and "lane" in classes:
            self.found.lanes.append(given["data-lane"])
        elif tag == "g" and "span" in classes:
            self.found.bars.append((given["data-path"], classes[1], classes[2]))
        elif tag == "path" and "undo-arrow" in classes:
            self.found.undo_arrows.append(given["data-path"])
        elif tag == "text" and ("lane-label" in classes or "span-label" in classes):
            self._text = (
                self.found.lane_labels if "lane-label" in classes else self.found.bar_labels
            )
            self._text.append("")
        elif tag == "tbody":
            self._in_body_rows = True
        elif tag == "tr" and self._in_body_rows:
            self.found.rows += 1

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "text":
            self._text = None
        elif tag == "tbody":
            self._in_body_rows = False


def read_dom(dump: str) -> Drawn:
    reader = DomReader()
    reader.feed(dump)
    return reader.found


def test_the_page_in_chromium_draws_every_lane_bar_label_and_undo_arrow(tmp_path: Path) -> None:
    trace = sagas.failure()
    page = tmp_path / "trace.html"
    page.write_text(trace_as_html(trace), encoding="utf-8")

    dumped = headless(
        tmp_path / "profile-dom", "--window-size=1280,800", "--dump-dom", page.as_uri()
    )
    drawn = read_dom(dumped)

    assert drawn.drawn, "the page's script did not run to its end"
    assert drawn.mode == "time"
    assert drawn.lanes == [lane.key for lane in trace.lanes]
    assert drawn.lane_labels == ["main", "charge", "#1", "shipping"]
    assert drawn.bars == [(span.path, span.kind, span.status) for span in trace.spans]
    assert drawn.bar_labels == [
        "reserve",
        "charge",
        "step",
        "step#2",
        "pack",
        "label",
        "ship",
        "label",
        "pack",
        "charge",
        "reserve",
    ]
    assert drawn.undo_arrows == ["shipping/label", "shipping/pack", "charge", "reserve"]
    assert drawn.rows == len(trace.spans)

    shot = tmp_path / "trace.png"
    headless(
        tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,800", page.as_uri()
    )
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 800)
    pixels = [pixel for row in rows for pixel in row]
    colours = set(pixels)
    assert len(colours) > 50, "the screenshot is blank"
    # The bars are drawn in their colours: completed green, failed red, compensated blue.
    for colour in ((0x2F, 0x9E, 0x5B), (0xD6, 0x45, 0x41), (0x2F, 0x80, 0xED)):
        assert sum(1 for pixel in pixels if pixel == colour) > 200, f"no bar of colour {colour}"


def test_a_journal_page_in_chromium_lays_out_by_entry_and_shows_what_was_in_flight(
    tmp_path: Path,
) -> None:
    trace = sagas.journal_unfinished()
    page = tmp_path / "journal.html"
    page.write_text(trace_as_html(trace), encoding="utf-8")
    drawn = read_dom(headless(tmp_path / "profile", "--dump-dom", page.as_uri()))
    assert drawn.mode == "order"
    assert drawn.bars[-1] == ("ship", "action", "in_flight")
    assert drawn.bar_labels == ["reserve", "charge", "charge #2", "ship"]
    assert drawn.undo_arrows == []


# -- the page itself -------------------------------------------------------------------------


def test_the_page_is_self_contained() -> None:
    page = trace_as_html(sagas.failure())
    assert page.startswith("<!DOCTYPE html>")
    addresses = set(re.findall(r"https?://[^\s\"')]+", page))
    assert addresses == {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import|url\((?!#)", page)
    assert page.count("<script") == 2  # the data and the script, both inline


def test_text_from_the_run_cannot_escape_the_page() -> None:
    hostile = "</script><script>alert(1)</script><b>&amp;"
    trace = RunTrace(
        hostile,
        "failed",
        hostile,
        (Lane(MAIN, "main", None),),
        (Span("a", "action", 1, MAIN, "failed", 0.0, 1.0, hostile),),
    )
    page = trace_as_html(trace)
    assert page.count("<script") == 2
    assert "<b>&amp;" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page


# -- the command line ------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, list[str], list[str]]:
    output: list[str] = []
    errors: list[str] = []
    code = main(list(argv), write=output.append, write_error=errors.append)
    return code, "\n".join(output).splitlines(), errors


@pytest.fixture
def journal_file(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    with SqliteJournal(path) as journal:
        DurableSagas(journal, sagas.definitions).start("sync-branches", 0, saga_id="s-1")
    return path


def test_journal_show_mermaid_prints_the_trace_as_a_sequence_diagram(journal_file: Path) -> None:
    code, output, errors = run("journal", "show", "s-1", "--db", str(journal_file), "--mermaid")

    with SqliteJournal(journal_file) as journal:
        record = journal.get("s-1")
        assert record is not None
        expected = trace_as_mermaid(trace_of_journal(record, journal.entries("s-1")))
    assert (code, errors) == (0, [])
    assert output == expected.splitlines()
    assert output[:4] == [
        "sequenceDiagram",
        "    participant L0 as main",
        "    participant L1 as #35;2",
        "    Note over L0: saga s-1 started",
    ]


def test_journal_show_html_writes_the_page_and_prints_the_usual_text(
    journal_file: Path, tmp_path: Path
) -> None:
    page = tmp_path / "s-1.html"
    code, output, errors = run(
        "journal", "show", "s-1", "--db", str(journal_file), "--html", str(page)
    )
    plain = run("journal", "show", "s-1", "--db", str(journal_file))

    assert (code, errors) == (0, [])
    assert output == plain[1]
    assert 'id="fsaga-trace"' in page.read_text(encoding="utf-8")
    assert "<title>saga s-1</title>" in page.read_text(encoding="utf-8")


def test_journal_show_html_to_a_place_it_cannot_write_is_a_usage_error(
    journal_file: Path, tmp_path: Path
) -> None:
    nowhere = tmp_path / "missing" / "page.html"
    code, output, errors = run(
        "journal", "show", "s-1", "--db", str(journal_file), "--html", str(nowhere)
    )
    assert (code, output) == (2, [])
    assert errors == [
        f"fsaga journal: cannot write the page to {str(nowhere)!r}: No such file or directory"
    ]
