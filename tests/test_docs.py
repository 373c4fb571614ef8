"""Every ```python block in README.md and docs/*.md runs.

The blocks of one Markdown file run in order in one shared module namespace, so a later block
uses what an earlier one defined. A failure names the file, the block's number and its first
line in the file.

Expected output: a ```text block that directly follows a ```python block (nothing but blank
lines between them) is what that python block must print, compared exactly (trailing spaces and
blank lines at the end aside). Blocks can also check themselves with plain ``assert`` lines.
Other languages (```console, ```text after prose) are not run.

The blocks are also type-checked: each file's blocks, joined into one module, must pass
``mypy --strict`` with the project's mypy.ini (``--allow-redefinition`` aside, since examples
reuse names like ``outcome``).
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    language: str
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


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order."""
    return [
        Block(
            match.group(1),
            match.group(2),
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
        result.append(Example(number, block.code, block.line, expected))
    return result


def tidy(output: str) -> str:
    return "\n".join(line.rstrip() for line in output.rstrip().splitlines())


def label(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def run_examples(path: Path) -> None:
    """Run the python blocks of `path` in order in one namespace; fail on the first error."""
    name = f"docs_{path.stem.lower()}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module
    try:
        for example in examples(path.read_text(encoding="utf-8")):
            where = f"{label(path)}, python block {example.number} (line {example.line})"
            printed = io.StringIO()
            try:
                code = compile(example.code, f"<{where}>", "exec")
                with contextlib.redirect_stdout(printed):
                    exec(code, module.__dict__)
            except BaseException:
                pytest.fail(f"{where} raised:\n{traceback.format_exc()}", pytrace=False)
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


@pytest.mark.parametrize("path", MARKDOWN, ids=[label(p) for p in MARKDOWN])
def test_python_blocks_run(path: Path) -> None:
    run_examples(path)


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
        if path.name == "design.md":
            continue  # design notes may be prose only
        assert examples(path.read_text(encoding="utf-8")), f"{path.name} has no python block"


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
