"""Driver-side progress line: done / total, rate, ETA and failures."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Redraws one line on a terminal; prints a line every `interval` seconds otherwise."""

    def __init__(self, total: int, *, label: str = "tasks", stream: TextIO | None = None, interval: float | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.ok = 0
        self.failed = 0
        self.lost_workers = 0
        self.start = time.monotonic()
        self._last = 0.0

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def update(self, *, ok: int = 0, failed: int = 0) -> None:
        self.ok += ok
        self.failed += failed
        self.render()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = (
            f"{self.done}/{self.total} {self.label} ({pct:5.1f}%) | {rate:6.2f}/s | "
            f"elapsed {format_duration(elapsed)} | ETA {format_duration(eta)} | failed {self.failed}"
        )
        if self.lost_workers:
            text += f" | workers lost {self.lost_workers}"
        return text

    def render(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\033[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.render(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
