"""The package a user installs: one version, a wheel and an sdist an index accepts, and a wheel
that installs into a new virtualenv and runs the demo.

The tests that build are marked ``packaging`` (deselect them with ``-m "not packaging"``); they
run in the default run and in CI. They build with ``python -m build --no-isolation`` (the
backend of ``[build-system]``, pinned in the ``dev`` extra, so nothing is downloaded), check
both files with ``twine check --strict``, and install the wheel with ``pip install --no-index``
from a folder of wheels: fsaga's and those of its dependencies, packed from the distributions
this interpreter has installed (they are pure Python), so the new virtualenv resolves fsaga's
declared requirements with no index at all.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import fsaga

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = fsaga.__version__


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    """Run a command in an environment of its own (no PYTHONPATH pointing at this checkout);
    fail with its output if it fails; return its standard output."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"} and not name.startswith("PIP_")
    }
    environment |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    completed = subprocess.run(
        [str(part) for part in argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=environment,
    )
    if completed.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, argv))} exited {completed.returncode}:\n"
            f"{completed.stdout}\n{completed.stderr}",
            pytrace=False,
        )
    return completed.stdout


# -- one version ------------------------------------------------------------------------------


def test_the_version_is_written_once_and_everything_reads_it() -> None:
    init = (ROOT / "fsaga" / "__init__.py").read_text(encoding="utf-8")
    assert re.findall(r'^__version__ = "([^"]+)"$', init, re.MULTILINE) == [VERSION]
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?", VERSION), VERSION
    assert "version" not in PYPROJECT["project"], "the version is written in fsaga/__init__.py"
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"] == {"path": "fsaga/__init__.py"}
    # What the installed distribution says (an editable install reads the same file).
    assert metadata.version("fsaga") == VERSION
    command_line = subprocess.run(
        [sys.executable, "-m", "fsaga", "--version"], capture_output=True, text=True, check=True
    )
    assert command_line.stdout == f"fsaga {VERSION}\n"


def test_the_changelog_has_an_entry_for_this_version() -> None:
    changelog = (ROOT / "docs" / "changelog.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {re.escape(VERSION)}\b", changelog, re.MULTILINE), (
        f"docs/changelog.md has no '## {VERSION}' heading for the version in fsaga/__init__.py"
    )


# -- the built files --------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``python -m build``: the sdist, then the wheel built from the sdist."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    assert sorted(path.name for path in out.iterdir()) == [
        f"fsaga-{VERSION}-py3-none-any.whl",
        f"fsaga-{VERSION}.tar.gz",
    ]
    return Built(out / f"fsaga-{VERSION}-py3-none-any.whl", out / f"fsaga-{VERSION}.tar.gz")


@pytest.mark.packaging
def test_twine_accepts_the_wheel_and_the_sdist(built: Built) -> None:
    printed = run(sys.executable, "-m", "twine", "check", "--strict", built.wheel, built.sdist)
    assert printed.count("PASSED") == 2, printed


def wheel_metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]]]:
    """A wheel's file names and its METADATA's headers (each with all its values)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        text = archive.read(f"fsaga-{VERSION}.dist-info/METADATA").decode()
    headers = HeaderParser().parsestr(text)
    return names, {key: headers.get_all(key) or [] for key in set(headers.keys())}


@pytest.mark.packaging
def test_the_wheel_holds_the_package_its_types_and_what_pyproject_declares(built: Built) -> None:
    names, headers = wheel_metadata(built.wheel)
    sources = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "fsaga").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    assert {name for name in names if name.startswith("fsaga/")} == sources
    assert "fsaga/py.typed" in names
    assert not [name for name in names if name.startswith(("tests/", "docs/"))]
    assert f"fsaga-{VERSION}.dist-info/licenses/LICENSE" in names

    project = PYPROJECT["project"]
    assert headers["Version"] == [VERSION]
    assert headers["Requires-Python"] == [project["requires-python"]]
    assert headers["License-Expression"] == [project["license"]]
    assert headers["Description-Content-Type"] == ["text/markdown"]
    assert sorted(headers["Classifier"]) == sorted(project["classifiers"])
    assert set(headers["Provides-Extra"]) == set(project["optional-dependencies"])
    required = {
        str(Requirement(line)) for line in headers["Requires-Dist"] if "extra ==" not in line
    }
    assert required == {str(Requirement(line)) for line in project["dependencies"]}
    with zipfile.ZipFile(built.wheel) as archive:
        entry_points = archive.read(f"fsaga-{VERSION}.dist-info/entry_points.txt").decode()
    assert "fsaga = fsaga.__main__:main" in entry_points


@pytest.mark.packaging
def test_the_sdist_holds_the_checkout_and_nothing_it_generates(built: Built) -> None:
    with tarfile.open(built.sdist) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    included = [
        entry.strip("/")
        for entry in PYPROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    ]
    tracked = subprocess.run(
        ["git", "ls-files", "--", *included],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    assert set(tracked) <= members, sorted(set(tracked) - members)
    outside = {
        name
        for name in members
        if name not in {"PKG-INFO", ".gitignore"}
        and not any(name == entry or name.startswith(f"{entry}/") for entry in included)
    }
    assert outside == set()
    assert not [name for name in members if "__pycache__" in name or name.endswith(".pyc")]


# -- a new virtualenv -------------------------------------------------------------------------


def requirements_of(requirements: list[str], environment: dict[str, str]) -> set[str]:
    """The distributions `requirements` need here, recursively (no extras), as installed."""
    needed: set[str] = set()
    pending = list(requirements)
    while pending:
        requirement = Requirement(pending.pop())
        if requirement.marker is not None and not requirement.marker.evaluate(
            environment | {"extra": ""}
        ):
            continue
        name = canonicalize_name(requirement.name)
        if name not in needed:
            needed.add(name)
            pending.extend(metadata.distribution(name).requires or [])
    return needed


def pack_installed(name: str, into: Path) -> Path:
    """A wheel made of an installed pure-Python distribution's files, as its RECORD lists
    them (compiled files, scripts outside site-packages and installer records left out)."""
    distribution = metadata.distribution(name)
    wheel_info = distribution.read_text("WHEEL") or ""
    if "Root-Is-Purelib: true" not in wheel_info:
        pytest.fail(f"{name} is not pure Python: it cannot be packed from its installed files")
    left_out = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    project = re.sub(r"[-_.]+", "_", distribution.metadata["Name"])
    wheel = into / f"{project}-{distribution.version}-py3-none-any.whl"
    rows: list[tuple[str, str, str]] = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in distribution.files or []:
            path = file.as_posix()
            if (
                path.startswith("..")
                or "__pycache__" in file.parts
                or path.endswith(".pyc")
                or (file.parts[0].endswith(".dist-info") and file.name in left_out)
            ):
                continue
            data = Path(str(file.locate())).read_bytes()
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            rows.append((path, f"sha256={digest.decode()}", str(len(data))))
        dist_info = next(
            part
            for file in distribution.files or []
            for part in file.parts[:1]
            if part.endswith(".dist-info")
        )
        record = io.StringIO()
        csv.writer(record, lineterminator="\n").writerows([*rows, (f"{dist_info}/RECORD", "", "")])
        archive.writestr(f"{dist_info}/RECORD", record.getvalue())
    return wheel


@pytest.mark.packaging
def test_the_wheel_installs_into_a_new_virtualenv_without_an_index_and_runs_the_demo(
    built: Built, tmp_path: Path
) -> None:
    _, headers = wheel_metadata(built.wheel)
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    dependencies = [line for line in headers["Requires-Dist"] if "extra ==" not in line]
    here = {key: str(value) for key, value in default_environment().items()}
    for name in sorted(requirements_of(dependencies, here)):
        pack_installed(name, wheelhouse)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "--no-index", "--find-links", wheelhouse, built.wheel)
    run(python, "-m", "pip", "check")

    # Run from an empty folder, so nothing of this checkout is importable.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(python, "-c", "import fsaga; print(fsaga.__file__)", cwd=elsewhere)
    assert Path(where.strip()).is_relative_to(venv), where
    assert run(venv / "bin" / "fsaga", "--version", cwd=elsewhere) == f"fsaga {VERSION}\n"

    demo = run(python, "-m", "fsaga", "demo", cwd=elsewhere)
    for outcome in ("Success", "Failure", "PartialFailure"):
        assert re.search(rf"\b{outcome}\b", demo), f"the demo printed no {outcome}:\n{demo}"
    assert "recover" in demo
