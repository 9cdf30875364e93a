"""The drift window's newest score: what a whole agent's last sample was judged on."""

from __future__ import annotations

from edge.drift import DriftWindow


def test_the_newest_score_is_the_last_added_and_none_after_a_clear() -> None:
    window = DriftWindow(size=2)
    assert window.newest is None
    for score in (0.5, 2.0, 1.25):
        window.add(score)
    assert window.newest == 1.25
    window.clear()
    assert window.newest is None
