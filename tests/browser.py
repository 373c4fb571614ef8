"""Headless Chromium for the tests that open a page as a reader would (the pictures' HTML page,
the documentation site), and a PNG reader for their screenshots.

Debian's ``chromium`` is used (``apt-get install -y chromium``; ``.ci/run`` installs it when
missing). Without it those tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

__all__ = ["chromium", "headless", "png_pixels"]

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# What a headless Chromium needs here: no sandbox (the tests may run as root), no GPU, and
# nothing that reaches for the network on its own.
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def chromium() -> str:
    """The Chromium binary; skips the test without one (fails under CI, where nothing skips)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = (
            "this browser test needs Debian's Chromium: apt-get install -y chromium "
            "(.ci/run installs it when missing)"
        )
        if CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def headless(profile: Path, *arguments: str) -> str:
    """Run headless Chromium with `arguments`, in a new empty profile at `profile`; return what
    it printed on standard output. A Chromium that fails fails the test with its errors."""
    profile.mkdir()
    completed = subprocess.run(
        [chromium(), *_FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    if completed.returncode != 0:
        pytest.fail(f"chromium exited {completed.returncode}:\n{completed.stderr}", pytrace=False)
    return completed.stdout


def png_pixels(
    data: bytes, rows: int | None = None
) -> tuple[int, int, list[list[tuple[int, ...]]]]:
    """A PNG's width, height and its first `rows` rows (all, by default) of RGB pixels: an
    8-bit RGB or RGBA, non-interlaced PNG, as Chromium's screenshots are, its filters undone
    as a PNG decoder does."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, chunks, header = 8, b"", b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks += body
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour, interlace) in {(8, 2, 0), (8, 6, 0)}, (depth, colour, interlace)
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(chunks)
    stride = width * channels
    previous = bytearray(stride)
    pixels: list[list[tuple[int, ...]]] = []
    for row in range(height if rows is None else min(rows, height)):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for index in range(stride):
            left = line[index - channels] if index >= channels else 0
            up = previous[index]
            corner = previous[index - channels] if index >= channels else 0
            if kind == 1:
                line[index] = (line[index] + left) & 0xFF
            elif kind == 2:
                line[index] = (line[index] + up) & 0xFF
            elif kind == 3:
                line[index] = (line[index] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                nearest = min(
                    (abs(guess - left), 0, left),
                    (abs(guess - up), 1, up),
                    (abs(guess - corner), 2, corner),
                )[2]
                line[index] = (line[index] + nearest) & 0xFF
        pixels.append([tuple(line[i : i + 3]) for i in range(0, stride, channels)])
        previous = line
    return width, height, pixels
