"""swarmlet.executor.driver.start_error: what a task that did not start says."""

from __future__ import annotations

import pytest

from swarmlet.errors import RuntimeAdapterError, SecretsUnavailableError
from swarmlet.executor.driver import start_error


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (KeyError(("db", False)), "missing secret db"),  # `secretfiles.materialize`
        (KeyError(("settings", True)), "missing config settings"),
        (KeyError("other"), "'other'"),
        (RuntimeAdapterError("no such image"), "no such image"),
        (SecretsUnavailableError("m1 refused: no task t9"), "m1 refused: no task t9"),
    ],
)
def test_a_failed_start_says_what_is_missing(exc: Exception, message: str) -> None:
    assert start_error(exc) == message
