"""Integration tests too long for every CI run (the run has a 30-minute limit): each runs only
when its environment variable is 1. Unset (or 0), the test is skipped and its reason names the
variable; set, nothing is skipped, so a missing Docker Engine or image fails it; any other value
is refused rather than guessed at."""

from __future__ import annotations

import os

import pytest


def require_opt_in(switch: str, what: str) -> None:
    value = os.environ.get(switch, "")
    if value in ("", "0"):
        pytest.skip(f"{what}: set {switch}=1 to run it")
    if value != "1":
        pytest.fail(f"{switch}={value!r}: set it to 1 to run this test, or unset it")
