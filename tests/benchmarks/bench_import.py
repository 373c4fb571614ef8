"""Benchmark of what ``import fsaga`` costs, against a baseline tree, in fresh interpreters.

Run: ``.venv/bin/python tests/benchmarks/bench_import.py [BASELINE]`` where BASELINE is the root
of another checkout of fsaga (``git worktree add /tmp/fsaga-main main``); without it only this
tree is measured, in absolute figures. ``--runs N`` sets how many fresh interpreters each figure
takes the median of; ``--uncached`` compiles fsaga's modules from source in every interpreter
(as under ``PYTHONDONTWRITEBYTECODE``, in trees holding no ``__pycache__``) instead of reading
bytecode cached by a warm-up run. Not part of the test suite: it measures, it does not assert.

Every figure is measured in this one process, the trees taking turns within each round (and
swapping who goes first every round) so that a change in the machine's load hits both alike:

- ``import fsaga``: the wall time of ``python -c "import fsaga"`` minus that of
  ``python -c "pass"``, each the median of its runs;
- ``-X importtime``: the cumulative import time Python reports for ``fsaga``;
- a sync run: ``import fsaga`` and one saga run with `SyncInterpreter`, minus ``pass``: what a
  user who never touches the async interpreter pays before their first outcome;
- the standard library the core cannot do without (``typing``, ``dataclasses``, ``logging``,
  ``random``), minus ``pass``: the floor under any import of fsaga that loads its core.

Target: ``import fsaga`` at a third of the baseline's cost or less (``AsyncInterpreter`` and
anyio load on first use, and ``returns`` only once a `returns` container is in play). The floor
row says how close an import that loads the core (values, engine, `SyncInterpreter`) can come.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

CURRENT_TREE: Final = Path(__file__).resolve().parents[2]

NOTHING: Final = "pass"
IMPORT: Final = "import fsaga"
SYNC_RUN: Final = (
    "import fsaga\n"
    "assert fsaga.step(lambda: 1).map(lambda n: n + 1).run(fsaga.SyncInterpreter()) "
    "== fsaga.Success(2)"
)
STDLIB_FLOOR: Final = "import dataclasses, logging, random, typing"
WHERE: Final = "import fsaga, sys; sys.stdout.write(fsaga.__file__)"


def environment(tree: Path, cache: Path | None) -> dict[str, str]:
    """The child's environment: this tree's fsaga first on the path, bytecode as asked."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    env["PYTHONPATH"] = str(tree)
    if cache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def run(code: str, env: Mapping[str, str], cwd: Path, *options: str) -> tuple[float, str]:
    """Seconds a fresh interpreter takes to run `code`, and what it wrote to stderr."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, *options, "-c", code],
        env=env,
        cwd=cwd,  # a directory holding no fsaga: ``-c`` puts the working directory on the path
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, completed.stderr


def importtime_of_fsaga(stderr: str) -> float:
    """The cumulative seconds ``-X importtime`` reports for the top-level ``fsaga`` import."""
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.rsplit("|", 1)[-1] == " fsaga":
            return int(line.split("|")[1]) / 1e6
    raise ValueError("no line for fsaga in the -X importtime report")


class Tree:
    """One checkout of fsaga and the figures measured for it."""

    def __init__(self, label: str, root: Path, cache: Path | None, cwd: Path) -> None:
        self.label = label
        self.env = environment(root, cache)
        self.cwd = cwd
        self.samples: dict[str, list[float]] = {
            "pass": [],
            "import": [],
            "importtime": [],
            "sync run": [],
            "stdlib": [],
        }
        imported = subprocess.run(
            [sys.executable, "-c", WHERE],
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if not Path(imported).resolve().is_relative_to(root.resolve()):
            raise SystemExit(f"{label}: fsaga was imported from {imported}, not from {root}")
        for code in (NOTHING, IMPORT, SYNC_RUN, STDLIB_FLOOR):  # warm-up: fills the bytecode cache
            run(code, self.env, cwd)

    def measure_once(self) -> None:
        self.samples["pass"].append(run(NOTHING, self.env, self.cwd)[0])
        self.samples["import"].append(run(IMPORT, self.env, self.cwd)[0])
        stderr = run(IMPORT, self.env, self.cwd, "-X", "importtime")[1]
        self.samples["importtime"].append(importtime_of_fsaga(stderr))
        self.samples["sync run"].append(run(SYNC_RUN, self.env, self.cwd)[0])
        self.samples["stdlib"].append(run(STDLIB_FLOOR, self.env, self.cwd)[0])

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def figures(self) -> dict[str, float]:
        nothing = self.median("pass")
        return {
            'import fsaga (wall minus "pass")': self.median("import") - nothing,
            "import fsaga (-X importtime)": self.median("importtime"),
            'import, one sync run (wall minus "pass")': self.median("sync run") - nothing,
            'stdlib floor (wall minus "pass")': self.median("stdlib") - nothing,
        }


IMPORT_ROW: Final = 'import fsaga (wall minus "pass")'


def report(trees: list[Tree]) -> None:
    tables = [tree.figures() for tree in trees]
    compared = len(tables) == 2
    width = max(len(name) for name in tables[0])
    header = "".join(f"{tree.label:>12}" for tree in trees) + (f"{'ratio':>8}" if compared else "")
    print(f"{'(medians)':<{width}}{header}")
    for name in tables[0]:
        cells = "".join(f"{table[name] * 1e3:>9.1f} ms" for table in tables)
        ratio = f"{tables[1][name] / tables[0][name]:>8.2f}" if compared else ""
        print(f"{name:<{width}}{cells}{ratio}")
    if compared:
        verdict = "meets" if tables[1][IMPORT_ROW] <= tables[0][IMPORT_ROW] / 3 else "MISSES"
        print(f"import fsaga {verdict} the target: at most a third of the baseline's cost")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("baseline", nargs="?", type=Path, help="root of the tree to compare with")
    parser.add_argument("--runs", type=int, default=30, help="fresh interpreters per figure")
    parser.add_argument("--quick", action="store_true", help="5 runs per figure")
    parser.add_argument(
        "--uncached", action="store_true", help="compile fsaga from source in every interpreter"
    )
    args = parser.parse_args(argv)
    runs = 5 if args.quick else args.runs
    with tempfile.TemporaryDirectory(prefix="fsaga-bench-import-") as scratch:
        cwd = Path(scratch, "cwd")
        cwd.mkdir()
        trees: list[Tree] = []
        if args.baseline is not None:
            cache = None if args.uncached else Path(scratch, "baseline")
            trees.append(Tree("baseline", args.baseline, cache, cwd))
        cache = None if args.uncached else Path(scratch, "current")
        trees.append(Tree("current", CURRENT_TREE, cache, cwd))
        bytecode = "compiled from source" if args.uncached else "bytecode cached"
        print(
            f"Python {platform.python_version()} on {platform.machine()}, {sys.platform}; "
            f"{bytecode}; {runs} fresh interpreters per figure"
        )
        for round_number in range(runs):
            order = trees if round_number % 2 == 0 else trees[::-1]
            for tree in order:
                tree.measure_once()
        report(trees)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
