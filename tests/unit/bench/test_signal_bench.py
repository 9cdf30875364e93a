"""The signals-in benchmark's synthetic machine and its README rows."""

from __future__ import annotations

import json

import numpy as np

from bench import readme, signal
from bench.common import RESULTS


def test_the_machine_knocks_where_it_says() -> None:
    readings, stream, knocked = signal.machine(5, seed=0, knock_rate=1.0)
    assert stream.shape == (5 * signal.SEGMENT, 3) == (len(readings), 3)
    assert knocked.sum() == 5 * signal.SEGMENT // 2
    # z carries gravity.
    assert abs(stream[:, 2].mean() - 9.81) < 0.5
    assert np.isfinite(stream).all()


def test_the_readme_rows_read_the_results_file() -> None:
    rows = readme._signal_rows(json.loads((RESULTS / "signal.json").read_text()))
    assert len(rows) == 3
    assert all(row[-1] == "`python -m bench.run signal`" for row in rows)
    # The weights-only retrain row is judged against its 10% goal.
    assert rows[2][1] == "within 10%"
    assert rows[2][3] in ("yes", "**no**")
