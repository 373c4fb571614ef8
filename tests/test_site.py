"""The documentation site (mkdocs.yml): built from docs/ with every warning an error, its API
reference read from the docstrings, and opened in headless Chromium.

The build is ``mkdocs build --strict`` into a temporary folder: a broken link or anchor, a page
left out of the nav, a docstring griffe cannot read, all fail it. The browser tests run Debian's
Chromium (``apt-get install chromium``) on the built files, as a reader who opens
``site/index.html`` would: the navigation and the search box are drawn, and the search, offline,
finds pages by a word. Without Chromium they skip and say how to install it; under ``CI=true``
they fail instead, as nothing skips in CI.

Marked ``site``: ``pytest -m "not site"`` leaves them out of a quick local run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest
from browser import headless, png_pixels

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytestmark = pytest.mark.site


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_site_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fence_doctests: Callable[[str], str] = load_hooks().fence_doctests


# -- the build --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built with ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=os.environ | {"NO_MKDOCS_2_WARNING": "1"},
    )
    log = built.stdout + built.stderr
    if built.returncode != 0:
        pytest.fail(f"mkdocs build --strict failed:\n{log}", pytrace=False)
    warnings = [line for line in log.splitlines() if line.startswith("WARNING")]
    assert warnings == []
    return out


def nav_pages() -> list[str]:
    """The Markdown files mkdocs.yml's nav lists, in order."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)$", nav, re.MULTILINE)


def test_every_page_of_docs_is_in_the_nav_once() -> None:
    listed = nav_pages()
    assert len(listed) == len(set(listed)), listed
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    missing = sorted(pages - set(listed))
    assert missing == [], (
        f"{missing} not in the site: add a line such as '      - Title: {missing[0]}' under "
        "its section of the nav in mkdocs.yml"
        if missing
        else ""
    )
    assert set(listed) <= pages


def test_the_site_builds_with_every_warning_an_error(site: Path) -> None:
    for page in nav_pages():
        assert (site / page).with_suffix(".html").is_file(), page
    # Searchable from the file system: the index inlined as a script, and the worker shim.
    assert (site / "search" / "search_index.js").is_file()
    assert (site / "assets" / "iframe-worker" / "shim.js").is_file()
    assert not (site / "hooks.py").exists()


def test_every_rule_of_the_contract_keeps_its_anchor(site: Path) -> None:
    concepts = (site / "concepts.html").read_text(encoding="utf-8")
    assert all(f'id="rule-{number}"' in concepts for number in range(1, 15))
    tutorial = (site / "index.html").read_text(encoding="utf-8")
    assert 'href="concepts.html#rule-10"' in tutorial


def test_the_site_loads_nothing_from_outside_itself(site: Path) -> None:
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        outside = re.findall(r"""<(?:script|link|img)\b[^>]*(?:src|href)="(https?:[^"]+)""", text)
        assert outside == [], f"{page.relative_to(site)} loads {outside}"


def test_the_api_reference_shows_docstrings_and_their_examples_as_code(site: Path) -> None:
    reference = (site / "reference" / "fsaga.html").read_text(encoding="utf-8")
    for name in ("fsaga.saga.step", "fsaga.saga.Saga.then", "fsaga.outcome.PartialFailure"):
        assert f'id="{name}"' in reference, name
    assert (
        "A step: an action (no argument) paired with the compensation that undoes it." in reference
    )
    # Highlighted as a Python console session: the prompts are marked as such.
    assert '<span class="gp">&gt;&gt;&gt; </span>' in reference
    for page in (site / "reference").glob("*.html"):
        # A ">>>" example Markdown read as a quote, three deep.
        assert "<blockquote>\n<blockquote>" not in page.read_text(encoding="utf-8"), page.name


def test_doctest_examples_become_pycon_blocks() -> None:
    docstring = "Adds.\n>>> 1 + 1\n2\n\nA table::\n\n    x | y\n\n  >>> f(\n  ... )\n  'f'"
    assert fence_doctests(docstring).splitlines() == [
        "Adds.",
        "",
        "```pycon",
        ">>> 1 + 1",
        "2",
        "```",
        "",
        "A table:",
        "",
        "    x | y",
        "",
        "  ```pycon",
        "  >>> f(",
        "  ... )",
        "  'f'",
        "  ```",
    ]
    assert fence_doctests("No example: see `x`.") == "No example: see `x`."


# -- in the browser ---------------------------------------------------------------------------


def in_chromium(profile: Path, *arguments: str) -> str:
    """Headless Chromium at the site's window size; the page's scripts (and the search
    worker) run until idle, on virtual time."""
    return headless(profile, "--window-size=1280,900", "--virtual-time-budget=15000", *arguments)


class Page(HTMLParser):
    """What a dumped DOM shows: the nav's links, the search box, the search results."""

    def __init__(self) -> None:
        super().__init__()
        self.nav_links: list[tuple[str, str]] = []  # (text, href) of the primary nav
        self.nav_titles: list[str] = []  # the nav's section titles
        self.search_inputs: list[dict[str, str | None]] = []
        self.result_links: list[str] = []
        self.result_meta = ""
        self._open: list[tuple[str, str]] = []  # (tag, class) of the elements we are in
        self._link: str | None = None
        self._text = ""

    def _inside(self, css_class: str) -> bool:
        return any(css_class in classes.split() for _, classes in self._open)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = attributes.get("class") or ""
        if tag not in {"input", "img", "br", "meta", "link"}:
            self._open.append((tag, classes))
        if tag == "input" and "md-search__input" in classes.split():
            self.search_inputs.append(attributes)
        if tag == "a" and self._inside("md-nav--primary") and "md-nav__link" in classes.split():
            self._link, self._text = attributes.get("href") or "", ""
        if tag == "a" and self._inside("md-search-result__list"):
            self.result_links.append(attributes.get("href") or "")
        if tag == "label" and "md-nav__title" in classes.split():
            self._text = ""

    def handle_data(self, data: str) -> None:
        self._text += data
        if self._inside("md-search-result__meta"):
            self.result_meta += data

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open[-1][0] != tag:
            self._open.pop()
        if not self._open:
            return
        _, classes = self._open.pop()
        if tag == "a" and self._link is not None:
            self.nav_links.append((" ".join(self._text.split()), self._link))
            self._link = None
        if tag == "label" and "md-nav__title" in classes.split():
            self.nav_titles.append(" ".join(self._text.split()))


def dump(site: Path, profile: Path, page: str, query: str = "") -> Page:
    """The DOM of a page of the site once its scripts ran, opened from the file system."""
    parsed = Page()
    parsed.feed(in_chromium(profile, "--dump-dom", (site / page).as_uri() + query))
    return parsed


def test_the_index_in_chromium_draws_the_navigation_and_the_search_box(
    site: Path, tmp_path: Path
) -> None:
    page = dump(site, tmp_path / "profile", "index.html")
    titles = set(page.nav_titles)
    assert {"How-to guides", "Concepts", "API reference"} <= titles, page.nav_titles
    texts = [text for text, _ in page.nav_links]
    for expected in ("Tutorial", "Testing your sagas", "The contract", "Performance", "Changelog"):
        assert expected in texts, texts
    for text, href in page.nav_links:
        target = href.split("#", 1)[0]
        assert target == "" or (site / target).is_file(), f"the nav's {text!r} leads to {href}"
    assert len(page.search_inputs) == 1
    assert page.search_inputs[0].get("placeholder") == "Search"

    screenshot = tmp_path / "index.png"
    in_chromium(
        tmp_path / "profile-2", f"--screenshot={screenshot}", (site / "index.html").as_uri()
    )
    width, height, rows = png_pixels(screenshot.read_bytes(), rows=11)
    assert (width, height) == (1280, 900)
    # Drawn with the theme's stylesheet: the header bar across the top is its indigo.
    indigo = sum(
        1
        for red, green, blue in rows[10]
        if abs(red - 0x40) < 12 and abs(green - 0x51) < 12 and abs(blue - 0xB5) < 12
    )
    assert indigo > width // 2, f"{indigo} of {width} header pixels are the theme's indigo"


def test_the_search_finds_pages_offline_by_a_word(site: Path, tmp_path: Path) -> None:
    found = dump(site, tmp_path / "profile", "index.html", "?q=idempotency")
    assert re.fullmatch(r"\s*\d+ matching documents?\s*", found.result_meta), found.result_meta
    # The results link to pages of the site, as absolute file URLs once the scripts ran.
    pages = {
        re.split(r"[?#]", link.removeprefix(f"{site.as_uri()}/"), maxsplit=1)[0]
        for link in found.result_links
    }
    assert "concepts.html" in pages, pages
    assert all((site / page).is_file() for page in pages), pages

    nothing = dump(site, tmp_path / "profile-2", "index.html", "?q=zqxjvw")
    assert "No matching documents" in nothing.result_meta, nothing.result_meta
