"""Static checks over the whole project: mypy (strict, mypy.ini) and ruff (lint and format).

Marked ``static`` so a quick local run can skip them: ``pytest -m "not static"``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.static


def test_mypy_is_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    from mypy import api

    # mypy reads mypy.ini (strict; files = fsaga, tests) from the working directory.
    monkeypatch.chdir(PROJECT_ROOT)
    stdout, stderr, status = api.run([])

    assert status == 0, stdout + stderr
    assert stdout.startswith("Success: no issues found"), stdout


def ruff(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )


def test_ruff_check_is_clean() -> None:
    completed = ruff("check", ".")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All checks passed!" in completed.stdout


def test_ruff_format_is_clean() -> None:
    completed = ruff("format", "--check", ".")

    assert completed.returncode == 0, completed.stdout + completed.stderr
