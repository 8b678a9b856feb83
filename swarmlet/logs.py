"""How every swarmlet process logs: the agent and its proxy worker processes alike.

To standard error, at `SWARMLET_LOG_LEVEL` (default INFO), as `SWARMLET_LOG_FORMAT` says:
`text` (default), or `json`: one JSON object a line (`ts`, `level`, `logger`, `msg`, and
`exc` with the traceback), for log shippers. Under systemd (it sets `JOURNAL_STREAM` for a
service whose standard error is the journal) each line starts with its syslog priority
(`<3>` for an error, sd-daemon(3)), which journald strips and keeps as the entry's level, so
`journalctl -p err` works; the journal stamps entries itself, so text lines carry no time then.
A value these variables cannot take is refused (ValueError: this module sits below the error
tree), not replaced silently.
"""

from __future__ import annotations

import datetime
import json
import logging
import os

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")

# sd-daemon(3): the kernel's syslog priorities, as journald reads them from a line's prefix.
_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JsonFormatter(logging.Formatter):
    """One JSON object a line; the time in UTC, RFC 3339 with microseconds."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


# C0 and C1 control characters (DEL too), as Python spells them in a string literal.
_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}


class TextFormatter(logging.Formatter):
    """A record's message on one line: its control characters (a newline, a terminal escape,
    from a field a peer filled or a file name) are written escaped, so that no value can end a
    line and start what looks like another record. A traceback, after it, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_ESCAPES)
        return super().formatMessage(record)


class JournalPrefix(logging.Formatter):
    """Another formatter's lines, each prefixed with the record's syslog priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in self.inner.format(record).split("\n"))


def formatter(log_format: str, *, journal: bool) -> logging.Formatter:
    if log_format == "json":
        base: logging.Formatter = JsonFormatter()
    elif journal:
        base = TextFormatter("%(levelname)s %(name)s: %(message)s")
    else:
        base = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return JournalPrefix(base) if journal else base


def configure_logging() -> None:
    """Log as the environment says (see the module's doc). Raises ValueError, after setting up
    the default so that the caller can log it, if a variable holds what it cannot take."""
    level_text = os.environ.get("SWARMLET_LOG_LEVEL", "INFO")
    format_text = os.environ.get("SWARMLET_LOG_FORMAT", "text")
    level, log_format = level_text.upper(), format_text.lower()
    journal = bool(os.environ.get("JOURNAL_STREAM"))
    refused = []
    if level not in LEVELS:
        refused.append(
            f"SWARMLET_LOG_LEVEL: expected one of {', '.join(LEVELS)}, got {level_text!r}"
        )
        level = "INFO"
    if log_format not in FORMATS:
        refused.append(
            f"SWARMLET_LOG_FORMAT: expected one of {', '.join(FORMATS)}, got {format_text!r}"
        )
        log_format = "text"
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format, journal=journal))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
    if refused:
        raise ValueError("; ".join(refused))
