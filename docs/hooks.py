"""What the documentation site adds to MkDocs and to griffe (mkdocs.yml names this file twice).

- `on_page_markdown`, a MkDocs hook: a page's ```` ```python needs-servers ```` fence (a block
  tests/test_docs.py runs against the test servers) is shown as a plain Python block.
- `DocstringsAsMarkdown`, a griffe extension for the API reference: fsaga's docstrings are
  Google-style Markdown with ``>>>`` examples that pytest runs as doctests. Markdown would read
  an example as a quote nested three deep, so each becomes a ```` ```pycon ```` block; a
  paragraph that ends in ``::`` (reStructuredText's "a code block follows") ends in ``:``.
"""

from __future__ import annotations

import re

import griffe

NEEDS_SERVERS_FENCE = re.compile(r"^(```python)[ \t]+needs-servers[ \t]*$", re.MULTILINE)


def on_page_markdown(markdown: str, **_: object) -> str:
    """The page's Markdown with its ``needs-servers`` fences made plain ``python`` ones."""
    return NEEDS_SERVERS_FENCE.sub(r"\1", markdown)


def fence_doctests(docstring: str) -> str:
    """A docstring with each ``>>>`` example (its prompt lines and the output after them, up to
    a blank line) fenced as ``pycon``, and ``::`` at the end of a line made ``:``.
    """
    lines: list[str] = []
    in_example, fence_indent = False, ""
    for line in docstring.splitlines():
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if in_example and not stripped:
            lines.append(f"{fence_indent}```")
            in_example = False
        elif not in_example and stripped.startswith(">>>"):
            if lines and lines[-1].strip():
                lines.append("")
            lines.append(f"{indent}```pycon")
            fence_indent, in_example = indent, True
        if not in_example and line.endswith("::") and not line.endswith(":::"):
            line = line[:-1]
        lines.append(line)
    if in_example:
        lines.append(f"{fence_indent}```")
    return "\n".join(lines)


class DocstringsAsMarkdown(griffe.Extension):
    """Makes the docstrings of a loaded package read as Markdown (see `fence_doctests`)."""

    def on_package(self, *, pkg: griffe.Module, **_: object) -> None:
        self._rewrite(pkg)

    def _rewrite(self, obj: griffe.Object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
        for member in obj.members.values():
            if isinstance(member, griffe.Object):
                self._rewrite(member)
