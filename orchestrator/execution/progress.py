"""Driver-side progress line: done / total, rate, ETA and failures."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import TextIO

import numpy as np

__all__ = ["Progress", "format_duration", "window_rate", "RATE_WINDOW_S"]

# The rate behind every ETA (this line and the dashboard's): tasks finished over the last
# minute of work, so the start-up of Ray and idle time before the first row do not count.
RATE_WINDOW_S = 60.0


def window_rate(times: Sequence[float], counts: Sequence[float] | None = None, *,
                window_s: float = RATE_WINDOW_S) -> float:
    """Tasks per second over the last ``window_s`` seconds of work: the tasks finished
    after the first event of that window, divided by the time from that event to the
    last. ``times``: when tasks (or batches of ``counts`` tasks) finished, any order.
    0 when fewer than two events fall in the window."""
    t = np.asarray(times, np.float64)
    c = np.ones(len(t)) if counts is None else np.asarray(counts, np.float64)
    if len(t) < 2:
        return 0.0
    order = np.argsort(t, kind="stable")
    t, c = t[order], c[order]
    recent = t >= t[-1] - window_s
    t, c = t[recent], c[recent]
    span = t[-1] - t[0]
    if len(t) < 2 or span <= 0:
        return 0.0
    return float(c[1:].sum() / span)


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
        self._events: deque[tuple[float, int]] = deque()

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def update(self, *, ok: int = 0, failed: int = 0) -> None:
        self.ok += ok
        self.failed += failed
        now = time.monotonic()
        self._events.append((now, ok + failed))
        while self._events and self._events[0][0] < now - 2 * RATE_WINDOW_S:
            self._events.popleft()
        self.render()

    def rate(self) -> float:
        """Tasks per second over the last minute of work (:func:`window_rate`); before two
        results came back, the mean since the start."""
        if len(self._events) >= 2:
            times, counts = zip(*self._events)
            rate = window_rate(times, counts)
            if rate > 0:
                return rate
        return self.done / max(time.monotonic() - self.start, 1e-9)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.rate()
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
