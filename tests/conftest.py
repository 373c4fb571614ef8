"""Shared test configuration.

Hypothesis runs derandomized by default, so every run of the suite (CI included) draws the same
examples and a failure reproduces exactly. ``HYPOTHESIS_PROFILE=explore`` draws fresh random
examples, and more of them, for a deeper search on demand.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    derandomize=False,
    deadline=None,
    max_examples=2_000,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
