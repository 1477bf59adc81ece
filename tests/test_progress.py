"""The rate behind every ETA: tasks over the last minute of work, the same for the CLI line and the dashboard."""

from __future__ import annotations

import io

import pytest

from orchestrator.execution import progress as progress_module
from orchestrator.execution.progress import Progress, window_rate


def test_window_rate_ignores_idle_time_before_the_window():
    # One task at t=0, then a 100 s gap (Ray starting, a paused run), then 10 tasks, one a second.
    times = [0.0, *range(100, 111)]
    assert window_rate(times) == pytest.approx(1.0)  # not 12 / 110
    assert window_rate([5.0, 5.0, 5.0]) == 0.0 and window_rate([1.0]) == 0.0
    # Batches: 3 tasks at t=0 (the window's start), 6 at t=2, 6 at t=4 -> 12 tasks in 4 s.
    assert window_rate([0, 2, 4], [3, 6, 6]) == pytest.approx(3.0)
    assert window_rate([4, 0, 2], [6, 3, 6]) == pytest.approx(3.0)  # order does not matter


def test_cli_line_uses_the_window_rate(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock["now"])
    line = Progress(20, stream=io.StringIO(), interval=1e9)  # starts at 0
    for t in (100.0, 101.0, 102.0, 103.0, 104.0):  # one task a second after 100 s of start-up
        clock["now"] = t
        line.update(ok=1)
    assert line.rate() == pytest.approx(1.0)  # 4 tasks after the window's first, in 4 s; not 5 / 104
    assert "ETA 00:15" in line.line()  # 15 tasks left at 1 task/s
