"""swarmlet.logs: text or JSON lines on standard error, syslog priorities for the journal, and a
setting it cannot take refused, not replaced silently."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from swarmlet.logs import TextFormatter, configure_logging

PROGRAM = """
import logging
from swarmlet.logs import configure_logging
configure_logging()
log = logging.getLogger("swarmlet.test")
log.debug("hidden at INFO")
log.info("ready on %s", "127.0.0.1:7946")
log.error("two\\nlines")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("it failed")
"""


def run(env: dict[str, str]) -> list[str]:
    """The lines a process logs with `env` (and nothing else of the caller's environment)."""
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True
    )
    return proc.stderr.splitlines()


def test_text_by_default() -> None:
    lines = run({})
    assert lines[0].endswith(" INFO swarmlet.test: ready on 127.0.0.1:7946")
    assert not any("hidden" in line for line in lines)


def test_a_message_is_one_line_whatever_its_values_hold() -> None:
    """A value a peer filled (a task id, a node name) must not end the line and start one that
    looks like another record: control characters are written escaped; a traceback keeps its
    lines."""
    lines = run({})
    assert lines[1].endswith(" ERROR swarmlet.test: two\\nlines")
    assert lines[2].endswith(" ERROR swarmlet.test: it failed")
    assert lines[3] == "Traceback (most recent call last):"
    record = logging.LogRecord("x", logging.WARNING, "", 0, "task %s", ("t1\r\x1b[2J\x85",), None)
    assert TextFormatter("%(message)s").format(record) == "task t1\\r\\x1b[2J\\x85"


def test_json_lines_carry_level_logger_message_and_traceback() -> None:
    records = [json.loads(line) for line in run({"SWARMLET_LOG_FORMAT": "json"})]
    assert [(r["level"], r["logger"], r["msg"]) for r in records] == [
        ("info", "swarmlet.test", "ready on 127.0.0.1:7946"),
        ("error", "swarmlet.test", "two\nlines"),
        ("error", "swarmlet.test", "it failed"),
    ]
    assert records[0]["ts"].endswith("+00:00")
    assert "ZeroDivisionError" in records[2]["exc"]


def test_under_systemd_every_line_starts_with_its_syslog_priority() -> None:
    lines = run({"JOURNAL_STREAM": "8:12345", "SWARMLET_LOG_LEVEL": "debug"})
    assert lines[0] == "<7>DEBUG swarmlet.test: hidden at INFO"  # no time: journald stamps
    assert lines[1] == "<6>INFO swarmlet.test: ready on 127.0.0.1:7946"
    assert lines[2] == "<3>ERROR swarmlet.test: two\\nlines"  # a message is one line
    assert lines[3] == "<3>ERROR swarmlet.test: it failed"
    assert len(lines) > 5 and all(line.startswith("<3>") for line in lines[4:])  # traceback
    json_lines = run({"JOURNAL_STREAM": "8:1", "SWARMLET_LOG_FORMAT": "json"})
    assert json_lines[0].startswith("<6>{") and json.loads(json_lines[0][3:])["level"] == "info"


@pytest.mark.parametrize(
    ("variable", "value"), [("SWARMLET_LOG_LEVEL", "loud"), ("SWARMLET_LOG_FORMAT", "xml")]
)
def test_a_setting_it_cannot_take_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        with pytest.raises(ValueError, match=f"{variable}: expected one of .*{value!r}"):
            configure_logging()
        assert root.handlers  # the default is in place, so the refusal itself can be logged
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
