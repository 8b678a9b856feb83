"""One-line text cells for the dashboard: cleaned of control characters, cut or padded to an
exact width, and the small formats its columns show (bytes, rates, a progress bar, a clock).

Invariants: `clean` returns text without line breaks or other control and format characters (a
newline in an error message becomes a space), so one row is always one terminal line; `fit`
returns exactly the width asked for, cutting with an ellipsis. The progress bar uses two different
characters, so it reads without colour. Knows nothing of the view or of the layout.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

from rich.text import Text

BAR_WIDTH = 8


def clean(text: str) -> str:
    """One line of printable text: control and format characters become spaces."""
    if text.isprintable():
        return text
    return "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") else ch
        for ch in text
    )


def styled(text: str, style: str = "") -> Text:
    """`text`, cleaned, in `style`."""
    return Text(clean(text), style=style)


def fit(text: Text, width: int, justify: str = "left") -> Text:
    """`text` in exactly `width` cells: cut with an ellipsis, or padded."""
    width = max(0, width)
    if width == 0:
        return Text("")
    out = text.copy()
    if out.cell_len > width:
        out.truncate(width, overflow="ellipsis")  # pads a wide character cut in half
    pad = width - out.cell_len
    if pad > 0:
        if justify == "right":
            out = Text(" " * pad) + out
        else:
            out.append(" " * pad)
    return out


def one_line(parts: Sequence[Text], style: str = "") -> Text:
    """`parts` as one terminal line that never wraps (it is cropped)."""
    line = Text(style=style, no_wrap=True, overflow="crop", end="\n")
    for part in parts:
        line.append_text(part)
    return line


def format_bytes(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit in ("B", "K") or abs(n) >= 100 else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.0f}"  # unreachable: the loop returns at "T"


def format_rate(per_s: float | None) -> str:
    if per_s is None:
        return "-"
    if per_s >= 1000:
        return f"{per_s / 1000:.1f}k"
    return f"{per_s:.1f}"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> Text:
    """A progress bar: ━ for done, ─ for to do (readable without colour)."""
    fraction = 1.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = round(width * fraction)
    text = Text("━" * filled, style="green" if filled == width else "yellow")
    text.append("─" * (width - filled), style="dim")
    return text


def clock(t: float, utc_offset_s: int) -> str:
    offset_s = max(-86399, min(86399, utc_offset_s))
    try:
        stamp = datetime.fromtimestamp(t, UTC).astimezone(timezone(timedelta(seconds=offset_s)))
    except (OverflowError, OSError, ValueError):
        return "--:--:--"
    return stamp.strftime("%H:%M:%S")
