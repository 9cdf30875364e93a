"""Skipped input lines are counted and said: the first at once, then a count at most
every `every_seconds`, and what is left unsaid when the agent stops."""

from __future__ import annotations

import logging

import pytest

from edge.sources import SkippedLines


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "event=line_skipped" in r.getMessage()]


def test_a_run_of_bad_lines_is_said_once_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    skipped = SkippedLines(every_seconds=30.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        for i in range(57):
            clock.now = i * 0.1
            skipped.skip(f"line {i + 2}: not a number")
        assert len(_said(caplog)) == 1
        skipped.summary()
        skipped.summary()  # nothing new: nothing more said
    first, last = _said(caplog)
    assert "count=1 new=1" in first
    assert "count=57 new=56 last_reason='line 58: not a number'" in last


def test_a_steady_trickle_is_said_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    skipped = SkippedLines(every_seconds=30.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        for i in range(100):
            clock.now = float(i)  # one a second for 100 s
            skipped.skip("bad")
    said = _said(caplog)
    assert len(said) == 4  # at 0, 30, 60 and 90 s
    assert "count=31 new=30" in said[1]
    assert skipped.count == 100
