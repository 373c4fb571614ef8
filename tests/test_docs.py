"""Every ```python block in README.md and docs/*.md runs.

The blocks of one Markdown file run in order in one shared module namespace, so a later block
uses what an earlier one defined. A failure names the file, the block's number and its first
line in the file.

Expected output: a ```text block that directly follows a ```python block (nothing but blank
lines between them) is what that python block must print, compared exactly (trailing spaces and
blank lines at the end aside). Blocks can also check themselves with plain ``assert`` lines.
Other languages (```console, ```text after prose) are not run.

A block fenced ```python needs-servers runs against the session's PostgreSQL and Redis servers
(tests/servers.py): ``DATABASE_URL`` is the connection string of a database of the page's own
on the PostgreSQL server, ``REDIS_URL`` the URL of a Redis database of the page's own (emptied
first). Without the servers' binaries those blocks are skipped, and the others still run (under
``CI=true`` the page fails instead, as every test needing a server does). A block fenced
```python needs-temporal starts a Temporal server of its own (tests/temporal_env.py says from
where): without temporalio and the servers' packages it is skipped likewise.

A block fenced ```python pytest is a test module, as a user would write one: it runs like any
block (so later blocks see its names), and then pytest runs the tests it defines in a session of
their own (pytester), from a module that starts with the page's names so far and a conftest.py
that opts into fsaga's pytest plugin (``pytest_plugins``); every one of them must pass.

The blocks are also type-checked: each file's blocks, joined into one module, must pass
``mypy --strict`` with the project's mypy.ini (``--allow-redefinition`` aside, since examples
reuse names like ``outcome``).

The docs also point somewhere: every link of README.md and docs/*.md reaches a file of the
project (and a heading or anchor in it); every path of the project named in its text exists;
nothing cites a page outside the project; every "rule N" cited anywhere (the demo's output
included) is a rule of the contract in docs/concepts.md; and docs/design.md names, for every
rule, tests that exist.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import subprocess
import sys
import tomllib
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from temporal_env import TEMPORAL_HINT, temporal_installed

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```([\w+-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
NEEDS_SERVERS = "needs-servers"
"""What a python block's fence says after the language when it needs the database servers."""
NEEDS_TEMPORAL = "needs-temporal"
"""What a python block's fence says when it starts a Temporal server of its own (temporalio and
the servers' packages, the ``dev`` extra: tests/temporal_env.py)."""
PYTEST = "pytest"
"""What a python block's fence says after the language when it is a test module for pytest."""


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    language: str
    info: str  # what the opening fence says after the language
    code: str
    line: int  # the line of the opening fence, 1-based
    start: int  # offset of the opening fence in the text
    end: int  # offset just after the closing fence


@dataclass(frozen=True)
class Example:
    """A python block to run and, if a text block follows it directly, what it must print."""

    number: int
    code: str
    line: int
    expected_output: str | None
    needs_servers: bool = False
    needs_temporal: bool = False
    pytest: bool = False


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order."""
    return [
        Block(
            match.group(1),
            match.group(2).strip(),
            match.group(3),
            text.count("\n", 0, match.start()) + 1,
            match.start(),
            match.end(),
        )
        for match in FENCE.finditer(text)
    ]


def examples(text: str) -> list[Example]:
    """The python blocks of a Markdown text, numbered from 1, with their expected output."""
    fenced = blocks(text)
    result: list[Example] = []
    number = 0
    for index, block in enumerate(fenced):
        if block.language != "python":
            continue
        number += 1
        expected = None
        following = fenced[index + 1] if index + 1 < len(fenced) else None
        if (
            following is not None
            and following.language == "text"
            and not text[block.end : following.start].strip()
        ):
            expected = following.code
        info = block.info.split()
        result.append(
            Example(
                number,
                block.code,
                block.line,
                expected,
                needs_servers=NEEDS_SERVERS in info,
                needs_temporal=NEEDS_TEMPORAL in info,
                pytest=PYTEST in info,
            )
        )
    return result


def tidy(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.rstrip().splitlines())


def label(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


RunTests = Callable[[str, str, list[str]], None]
"""Runs the tests a ```python pytest block defines: given the name of the page's module, the
block's code and the names of its tests."""


def run_examples(
    path: Path, *, servers: bool = True, temporal: bool = True, run_tests: RunTests | None = None
) -> None:
    """Run the python blocks of `path` in order in one namespace; fail on the first error.
    Without `servers`, the blocks that need them are skipped, and without `temporal` those that
    start a Temporal server; `run_tests` runs the tests of the
    ```python pytest blocks (a page with one needs it)."""
    name = f"docs_{path.stem.lower()}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module
    try:
        for example in examples(path.read_text(encoding="utf-8")):
            if (example.needs_servers and not servers) or (example.needs_temporal and not temporal):
                continue
            where = f"{label(path)}, python block {example.number} (line {example.line})"
            printed = io.StringIO()
            try:
                code = compile(example.code, f"<{where}>", "exec")
                with contextlib.redirect_stdout(printed):
                    exec(code, module.__dict__)
            except BaseException:
                pytest.fail(f"{where} raised:\n{traceback.format_exc()}", pytrace=False)
            if example.pytest:
                if run_tests is None:
                    pytest.fail(f"{where} is a pytest block, and nothing runs its tests")
                run_tests(name, example.code, defined_tests(example.code))
            if example.expected_output is not None:
                actual, expected = tidy(printed.getvalue()), tidy(example.expected_output)
                if actual != expected:
                    pytest.fail(
                        f"{where} printed:\n{actual}\n\nbut the text block after it says:\n"
                        f"{expected}",
                        pytrace=False,
                    )
    finally:
        del sys.modules[name]


def defined_tests(code: str) -> list[str]:
    """The test functions a block defines at top level, as pytest would collect them."""
    return sorted(
        node.name
        for node in ast.parse(code).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    )


def pytest_block_runner(request: pytest.FixtureRequest, path: Path) -> RunTests:
    """What runs a page's pytest blocks: each block, after ``from <page> import *``, as a test
    module in a pytester session whose conftest.py opts into fsaga's plugin."""

    def run_tests(module: str, code: str, tests: list[str]) -> None:
        assert tests, f"{label(path)}: a pytest block defines no test"
        pytester: pytest.Pytester = request.getfixturevalue("pytester")
        pytester.makeconftest('pytest_plugins = ["fsaga.testing.pytest_plugin"]\n')
        test_file = pytester.makepyfile(**{f"test_{module}": f"from {module} import *\n\n{code}"})
        result = pytester.runpytest_inprocess(
            "-p", "no:cacheprovider", *(f"{test_file.name}::{test}" for test in tests)
        )
        if result.ret != 0 or result.parseoutcomes().get("passed") != len(tests):
            pytest.fail(
                f"{label(path)}: the tests of a pytest block did not all pass:\n"
                + "\n".join(result.outlines),
                pytrace=False,
            )

    return run_tests


@pytest.mark.parametrize("path", MARKDOWN, ids=[label(p) for p in MARKDOWN])
def test_python_blocks_run(
    path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    servers = any(example.needs_servers for example in examples(path.read_text("utf-8")))
    if servers:
        try:
            postgres = request.getfixturevalue("postgres")
            redis_url: str = request.getfixturevalue("redis_server_url")
        except pytest.skip.Exception:
            servers = False  # no binaries: the other blocks still run
        else:
            database, number = f"docs_{path.stem.lower()}", 1 + MARKDOWN.index(path) % 15
            with psycopg.connect(postgres.dsn, autocommit=True) as connection:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            page_redis = f"{redis_url.rsplit('/', 1)[0]}/{number}"
            with redis.Redis.from_url(page_redis) as client:
                client.flushdb()
            monkeypatch.setenv("DATABASE_URL", postgres.dsn_for(database))
            monkeypatch.setenv("REDIS_URL", page_redis)
    temporal = True
    if any(example.needs_temporal for example in examples(path.read_text("utf-8"))):
        temporal = temporal_installed()
        if not temporal and os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true and {TEMPORAL_HINT}", pytrace=False)
    run_examples(
        path, servers=servers, temporal=temporal, run_tests=pytest_block_runner(request, path)
    )


@pytest.mark.static
def test_python_blocks_type_check(tmp_path: Path) -> None:
    # Each Markdown file becomes one module; remember where each of its lines came from.
    origins: dict[str, list[tuple[int, str, int]]] = {}  # module -> (line, file, file line)
    for path in MARKDOWN:
        module = tmp_path / f"docs_{path.stem.lower()}.py"
        lines: list[str] = []
        origins[module.name] = []
        for example in examples(path.read_text(encoding="utf-8")):
            origins[module.name].append((len(lines) + 1, label(path), example.line + 1))
            lines.extend([*example.code.splitlines(), "", ""])
        module.write_text("\n".join(lines), encoding="utf-8")
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "mypy.ini"),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "docs"),
            "--allow-redefinition",
            "--no-error-summary",
            *(str(tmp_path / name) for name in origins),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    report = [where_in_markdown(line, origins) for line in checked.stdout.splitlines()]
    assert checked.returncode == 0, (
        "the python blocks of the docs do not type-check:\n" + "\n".join(report) + checked.stderr
    )


def where_in_markdown(message: str, origins: dict[str, list[tuple[int, str, int]]]) -> str:
    """A mypy message about a generated module, pointed back at the Markdown line."""
    found = re.match(r"^(?:.*[/\\])?(docs_\w+\.py):(\d+):(.*)$", message)
    if found is None or found.group(1) not in origins:
        return message
    line = int(found.group(2))
    starts = [origin for origin in origins[found.group(1)] if origin[0] <= line]
    if not starts:
        return message
    start, page, page_line = starts[-1]
    return f"{page}:{page_line + line - start}:{found.group(3)}"


def test_every_doc_has_python_blocks() -> None:
    """The docs teach by example: a page without a runnable block is probably a mistake."""
    expected = {"README.md", "index.md", "concepts.md", "testing.md", "design.md"}
    present = {path.name for path in MARKDOWN}
    assert expected <= present, f"missing pages: {sorted(expected - present)}"
    for path in MARKDOWN:
        if path.name in {"design.md", "changelog.md"}:
            continue  # design notes and the changelog may be prose only
        assert examples(path.read_text(encoding="utf-8")), f"{path.name} has no python block"


# -- the docs point somewhere ---------------------------------------------------------------

CONCEPTS = ROOT / "docs" / "concepts.md"
DESIGN_NOTES = ROOT / "docs" / "design.md"
RULES = set(range(1, 15))
"""The rules of the contract, numbered in docs/concepts.md."""

TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".ini", ".cfg"}


def project_files() -> list[Path]:
    """The project's own text: README.md, pyproject.toml, mypy.ini, and the text files of
    fsaga/, docs/ and tests/."""
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "mypy.ini"]
    for folder in ("fsaga", "docs", "tests"):
        files.extend(
            path
            for path in sorted((ROOT / folder).rglob("*"))
            if path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts
        )
    return files


def demo_output() -> str:
    from fsaga.demo import run_demo

    printed: list[str] = []
    run_demo(write=printed.append)
    return "\n".join(printed)


def without_code(text: str) -> str:
    """Markdown text with its fenced blocks and inline code spans blanked (lines kept)."""
    text = FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file: its headings' slugs and its explicit ``id``s."""
    text = path.read_text(encoding="utf-8")
    found: set[str] = set(re.findall(r"""<a\s+id=["']([^"']+)["']""", text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", text), re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """The links of a Markdown file that lead nowhere: to no file of the project, or to an
    anchor the file does not have."""
    broken: list[str] = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", without_code(path.read_text("utf-8"))):
        if re.match(r"^(https?|mailto):", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if file_part and (not linked.is_relative_to(ROOT) or not linked.exists()):
            broken.append(f"{label(path)}: {target}: no such file in the project")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{label(path)}: {target}: {label(linked)} has no such anchor")
    return broken


@pytest.mark.parametrize("path", MARKDOWN, ids=[label(p) for p in MARKDOWN])
def test_every_link_leads_to_a_file_and_anchor_of_the_project(path: Path) -> None:
    assert broken_links(path) == []


PROJECT_PATH = re.compile(
    r"(?<![\w./-])"  # not the tail of a longer path
    r"((?:docs|tests|fsaga)/(?:[\w-]+/)*(?:[\w-]+\.(?:py|md|txt|toml|ini|json|db)\b|[\w-]+/))"
    r"(?:#([\w-]+))?"
)
"""A file (``docs/concepts.md#rule-3``, ``tests/virtual_time.py``) or folder (``fsaga/demo/``)
of the project, named in its text."""


def test_every_path_of_the_project_named_in_its_text_exists() -> None:
    missing: list[str] = []
    for path in project_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for match in PROJECT_PATH.finditer(line):
                named, anchor = ROOT / match.group(1), match.group(2)
                where = f"{label(path)}:{number}: {match.group(0)}"
                if not named.exists():
                    missing.append(f"{where}: no such file")
                elif anchor and named.suffix == ".md" and anchor not in anchors(named):
                    missing.append(f"{where}: no such anchor")
    assert missing == []


# A bracket in each pattern keeps it from matching its own source here.
OUTSIDE = [
    re.compile(r"\bDESIG[N]\b"),  # the internal design page, its rules and sections
    re.compile(r"\bsectio[n]\s+\d", re.IGNORECASE),  # a numbered section of some other page
    re.compile(r"/wor[k]/|\bshare[d]/|\bsee[d]/"),  # paths of the machine the project grew on
    re.compile(r"-anchor[s]\b"),  # internal reference pages
]


def outside_citations(text: str, where: str) -> list[str]:
    return [
        f"{where}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if any(pattern.search(line) for pattern in OUTSIDE)
    ]


def test_nothing_in_the_project_cites_a_page_outside_it() -> None:
    found = [
        citation
        for path in project_files()
        for citation in outside_citations(path.read_text(encoding="utf-8"), label(path))
    ]
    assert found == []


RULE_CITATION = re.compile(
    r"\brules?\s+\d+(?:\s*(?:,|and|or|to|\u2013|-|\+)\s*(?:rules?\s+)?\d+)*", re.IGNORECASE
)


def cited_rules(text: str) -> set[int]:
    """The numbers of the rules a text cites: "rule 3", "rules 11 to 13", "rule 5 + rule 3"."""
    return {
        int(number)
        for citation in RULE_CITATION.finditer(text)
        for number in re.findall(r"\d+", citation.group(0))
    }


def defined_rules() -> list[int]:
    """The rules docs/concepts.md states, in order: each a ``### Rule N — ...`` heading with an
    ``<a id="rule-N">`` anchor right above it."""
    text = CONCEPTS.read_text(encoding="utf-8")
    headed = re.findall(r'^<a id="rule-(\d+)"></a>\n\n### Rule (\d+) — \S', text, re.MULTILINE)
    assert all(anchor == number for anchor, number in headed), headed
    return [int(number) for _, number in headed]


def test_the_contract_numbers_its_rules_1_to_14_in_order() -> None:
    assert defined_rules() == sorted(RULES)


def test_every_rule_cited_in_the_project_is_a_rule_of_the_contract() -> None:
    defined = set(defined_rules())
    unknown = [
        f"{label(path)}: rule {number}"
        for path in project_files()
        for number in sorted(cited_rules(path.read_text(encoding="utf-8")) - defined)
    ]
    assert unknown == []


def test_the_demo_cites_the_contract_and_nothing_outside_the_project() -> None:
    output = demo_output()
    assert outside_citations(output, "the demo's output") == []
    assert cited_rules(output) <= set(defined_rules())
    assert "docs/concepts.md" in output


def rule_test_table() -> dict[int, dict[str, list[str]]]:
    """docs/design.md's "Where each rule is tested": rule -> module -> test functions."""
    text = DESIGN_NOTES.read_text(encoding="utf-8")
    section = text.split("\n## Where each rule is tested\n", 1)[1].split("\n## ", 1)[0]
    table: dict[int, dict[str, list[str]]] = {}
    rule = None
    for row in re.findall(r"^\|(.*)\|\s*$", section, re.MULTILINE):
        cells = [cell.strip() for cell in row.split("|")]
        numbered = re.search(r"concepts\.md#rule-(\d+)", cells[0])
        if numbered is not None:
            rule = int(numbered.group(1))
        module = re.fullmatch(r"`(test_\w+\.py)`", cells[1])
        if module is None:
            continue  # the header and its rule
        assert rule is not None, f"a row before the first rule: {row}"
        tests = re.findall(r"`(\w+)`", cells[2])
        table.setdefault(rule, {}).setdefault(module.group(1), []).extend(tests)
    return table


def collected_tests(module: Path) -> set[str]:
    """The test functions pytest collects from a module: top-level ``test_*`` functions."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_rule_names_the_tests_that_pin_it() -> None:
    table = rule_test_table()
    assert set(table) == RULES
    missing: list[str] = []
    for rule, modules in sorted(table.items()):
        for module, tests in modules.items():
            path = ROOT / "tests" / module
            assert tests, f"rule {rule}: {module} names no test"
            existing = collected_tests(path) if path.exists() else set()
            missing.extend(
                f"rule {rule}: {module}::{test}" for test in tests if test not in existing
            )
    assert missing == [], "docs/design.md names tests that do not exist"


# -- installing ------------------------------------------------------------------------------


def console_commands(path: Path) -> list[str]:
    """The commands of a Markdown file's ```console blocks, ``$`` prompts dropped."""
    return [
        line.strip().removeprefix("$ ")
        for block in blocks(path.read_text(encoding="utf-8"))
        if block.language == "console"
        for line in block.code.splitlines()
        if line.strip()
    ]


def declared_extras() -> set[str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return set(tomllib.load(file)["project"]["optional-dependencies"])


def test_the_tutorial_sets_a_checkout_up_with_the_readmes_commands() -> None:
    readme = console_commands(ROOT / "README.md")
    tutorial = console_commands(ROOT / "docs" / "index.md")
    setup = [command for command in readme if "pip install" in command or "pytest" in command]
    assert len(setup) == 2, setup  # one sets up and runs the demo, one runs the tests
    assert all(command in tutorial for command in setup)
    assert [command for command in tutorial if "pip install -e" in command] == setup[:1]


def test_every_pip_install_in_the_project_names_extras_it_declares() -> None:
    named: set[str] = set()
    for path in project_files():
        for command in re.findall(r"pip install [^\n`]*", path.read_text(encoding="utf-8")):
            for extras in re.findall(r"\[([\w,-]+)\]", command):
                named.update(extras.split(","))
    assert named <= declared_extras()


def test_the_tutorial_says_what_each_extra_gives() -> None:
    text = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    install = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    assert "pip install fsaga\n" in install
    assert {extra for extra in declared_extras() if f"| `{extra}` |" not in install} == set()


def test_step_and_the_tutorial_say_the_sync_interpreter_does_not_enforce_timeouts() -> None:
    """Where users look for `timeout=`: `step`'s own docstring and the tutorial, not only the
    async guide."""
    import fsaga

    docstring = " ".join((fsaga.step.__doc__ or "").split())
    assert "`SyncInterpreter` does not enforce it" in docstring
    assert "enforced by `AsyncInterpreter` and not by `SyncInterpreter`" in docstring
    tutorial = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert "**`SyncInterpreter` does not enforce `timeout=`.**" in tutorial


# -- the harness itself ----------------------------------------------------------------------


def test_examples_are_numbered_and_pair_with_directly_following_output() -> None:
    text = (
        "intro\n"
        "```python\nprint('a')\n```\n"
        "\n"
        "```text\na\n```\n"
        "prose\n"
        "```console\n$ ls\n```\n"
        "```python\nx = 1\n```\n"
        "more prose\n"
        "```text\nnot output\n```\n"
    )
    found = examples(text)
    assert [(e.number, e.line, e.expected_output) for e in found] == [
        (1, 2, "a\n"),
        (2, 13, None),
    ]


def test_blocks_that_need_the_servers_are_marked_and_skipped_without_them(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nx = 1\n```\n\n```python needs-servers\nraise SystemExit\n```\n",
        encoding="utf-8",
    )
    assert [example.needs_servers for example in examples(page.read_text("utf-8"))] == [
        False,
        True,
    ]
    run_examples(page, servers=False)


def test_a_failing_block_is_reported_with_file_and_number(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nx = 1\n```\n\n```python\nassert x == 2\n```\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception, match=r"page.md, python block 2 \(line 5\)"):
        run_examples(page)


def test_mypy_messages_point_at_the_markdown_line() -> None:
    origins = {"docs_index.py": [(1, "docs/index.md", 10), (20, "docs/index.md", 50)]}
    message = "/tmp/x/docs_index.py:22: error: Bad thing  [misc]"
    assert where_in_markdown(message, origins) == "docs/index.md:52: error: Bad thing  [misc]"
    assert where_in_markdown("Found 1 error", origins) == "Found 1 error"


def test_wrong_output_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python\nprint('yes')\n```\n```text\nno\n```\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception, match="but the text block after it says"):
        run_examples(page)


def test_cited_rules_reads_single_rules_lists_and_ranges() -> None:
    three, five = 3, 5
    assert cited_rules(f"settled by rule {three} (see rules 11 to 13, rule {five} + rule 1)") == {
        3,
        11,
        13,
        5,
        1,
    }
    assert cited_rules("the rules of a run, the ruler 4") == set()


def test_slugs_and_explicit_anchors(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Timeouts and unknown outcomes\n"
        "## current_context(): what a running effect knows\n"
        "## Again\n## Again\n"
        '<a id="rule-1"></a>\n'
        "```python\n# not a heading\n```\n",
        encoding="utf-8",
    )
    assert anchors(page) == {
        "timeouts-and-unknown-outcomes",
        "current_context-what-a-running-effect-knows",
        "again",
        "again-1",
        "rule-1",
    }


def test_a_link_to_a_missing_file_or_anchor_is_reported(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Top\n[ok](#top) [gone](#gone) [out](missing.md) `[code](x.md)`\n", "utf-8")
    assert [report.split(": ", 1)[1] for report in broken_links(page)] == [
        "#gone: page.md has no such anchor",
        "missing.md: no such file in the project",
    ]


def test_outside_citations_are_found() -> None:
    page = "DESIG" + "N.md"
    assert outside_citations(f"see {page}, rule 3\nfine\n", "x") == [f"x:1: see {page}, rule 3"]


def test_a_pytest_block_runs_its_tests_with_the_plugin_and_the_pages_names(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nfrom fsaga import step\n\nanswer = step(lambda: 42)\n```\n\n"
        "```python pytest\n"
        "def test_answer(saga_interpreter):\n"
        "    assert answer.run(saga_interpreter).unwrap() == 42\n\n\n"
        "def test_journal(saga_journal):\n"
        "    assert saga_journal.sagas() == []\n"
        "```\n",
        encoding="utf-8",
    )
    assert [example.pytest for example in examples(page.read_text("utf-8"))] == [False, True]
    run_examples(page, run_tests=pytest_block_runner(request, page))


def test_a_failing_test_of_a_pytest_block_fails_the_page(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    page = tmp_path / "page.md"
    page.write_text("```python pytest\ndef test_no():\n    assert 1 == 2\n```\n", "utf-8")
    with pytest.raises(pytest.fail.Exception, match="the tests of a pytest block did not all"):
        run_examples(page, run_tests=pytest_block_runner(request, page))
    with pytest.raises(pytest.fail.Exception, match="is a pytest block, and nothing runs its"):
        run_examples(page)
