"""Mutation testing of the engine and of the durability and store layers, on a random sample.

Run from the project root, after ``pip install -e '.[dev,mutation]'``::

    python tests/mutation.py engine              # 150 of the engine's mutants
    python tests/mutation.py durability          # 100 of the journal's, durable runs' and stores'
    python tests/mutation.py engine --all        # every mutant (hours, not minutes)

mutmut (configured under ``[tool.mutmut]`` in pyproject.toml) writes a mutated copy of the
package to ``mutants/``; each mutant is one small change to one function (a ``<`` made ``<=``, a
constant changed, a call's argument dropped). This script has mutmut generate them all, draws a
sample with a fixed seed (so two runs on the same code test the same mutants), runs the sample
against the tests that cover each mutated function, and prints the score: the share of mutants
some test fails on. A mutant that survives is a change to the code that no test notices; read it
with ``mutmut show NAME``. A mutant that makes the tests hang is counted as killed (the run is
cut off and fails).

Not part of the test suite: it takes from minutes to hours and is run by hand. The static checks
(``-m "not static"``) and the public-API tests are left out of the mutant runs, since they would
flag mutmut's own rewriting of the code (its helper names, its untyped trampolines) rather than
the mutation.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS: dict[str, tuple[str, ...]] = {
    "engine": (
        "fsaga/interpreter/_engine.py",
        "fsaga/interpreter/_walk.py",
        "fsaga/interpreter/_plan.py",
        "fsaga/interpreter/_attempts.py",
        "fsaga/interpreter/_unknown.py",
        "fsaga/interpreter/_undo.py",
    ),
    "durability": ("fsaga/_sqlite.py", "fsaga/durable/", "fsaga/journal/", "fsaga/stores/"),
}
SAMPLE_SIZES = {"engine": 150, "durability": 100}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
STATUS_BY_EXIT_CODE = {
    0: "survived",
    1: "killed",
    3: "killed",
    5: "no tests",
    33: "no tests",
    34: "skipped",
    36: "timeout",
    37: "caught by type check",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
    -9: "segfault",
    -11: "segfault",
}


def generate_mutants() -> None:
    """Have mutmut write the mutated package to ``mutants/`` (no test runs)."""
    mutmut_main = importlib.import_module("mutmut.__main__")
    file_utils = importlib.import_module("mutmut.utils.file_utils")
    Path("mutants").mkdir(exist_ok=True)
    file_utils.copy_src_dir()
    file_utils.copy_also_copy_files()
    mutmut_main.create_mutants(os.cpu_count() or 2)


def meta_files(layer: str) -> list[Path]:
    """The ``.meta`` files mutmut keeps for the layer's source files, in a stable order."""
    metas = sorted(Path("mutants", "fsaga").rglob("*.py.meta"))
    prefixes = LAYERS[layer]
    return [
        meta
        for meta in metas
        if str(meta.relative_to("mutants")).removesuffix(".meta").startswith(prefixes)
    ]


def exit_codes(layer: str) -> dict[str, int | None]:
    """Every mutant of the layer, by name, with its last recorded exit code."""
    codes: dict[str, int | None] = {}
    for meta in meta_files(layer):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def status(code: int | None) -> str:
    if code is None:
        return "not checked"
    return STATUS_BY_EXIT_CODE.get(code, "suspicious")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("layer", choices=sorted(LAYERS))
    parser.add_argument("--sample", type=int, help="how many mutants to draw (default per layer)")
    parser.add_argument("--seed", type=int, default=2026, help="the draw's seed (default 2026)")
    parser.add_argument("--all", action="store_true", help="run every mutant of the layer")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants at once")
    args = parser.parse_args(argv)
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or shutil.which("mutmut")
    if mutmut is None:
        parser.error("mutmut is not installed: pip install -e '.[dev,mutation]'")
    os.chdir(ROOT)

    generate_mutants()
    names = sorted(exit_codes(args.layer))
    if args.all:
        sample = names
    else:
        size = min(args.sample or SAMPLE_SIZES[args.layer], len(names))
        sample = sorted(random.Random(args.seed).sample(names, size))
    print(f"{args.layer}: {len(sample)} of {len(names)} mutants (seed {args.seed})", flush=True)

    # mutmut exits non-zero when a mutant survives; the score below is what counts.
    run = subprocess.run([mutmut, "run", "--max-children", str(args.jobs), *sample], check=False)

    codes = exit_codes(args.layer)
    statuses = {name: status(codes[name]) for name in sample}
    counts = Counter(statuses.values())
    if counts["not checked"] == len(sample):
        print(f"mutmut checked no mutant (it exited {run.returncode}): see its output above")
        return 1
    killed = sum(counts[kind] for kind in KILLED)
    print()
    for kind, count in sorted(counts.items()):
        print(f"  {kind}: {count}")
    print(f"score: {killed}/{len(sample)} killed ({killed / len(sample):.0%})")
    for name, kind in statuses.items():
        if kind not in KILLED:
            print(f"  {kind}: {name}   (mutmut show {name})")
    return 0 if counts["not checked"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
