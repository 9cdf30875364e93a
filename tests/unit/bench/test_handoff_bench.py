"""The hand-off benchmark's README rows: what they judge from the results file."""

from __future__ import annotations

import copy
import json
from typing import Any

from bench import readme
from bench.common import RESULTS


def _big() -> dict[str, Any]:
    result: dict[str, Any] = json.loads((RESULTS / "handoff_big.json").read_text())
    return result


def test_the_big_rows_name_each_kind_and_read_the_results_file() -> None:
    rows = readme._handoff_big_rows(_big())
    assert [row[0].split(" streamed")[0] for row in rows] == [
        "logistic regression",
        "MLP (32)",
        "k-means",
    ]
    assert all(row[-1] == "`python -m bench.handoff --big`" for row in rows)
    assert "10M rows" in rows[0][2]
    assert "50M rows" in rows[2][2]


def test_memory_that_grows_with_the_rows_is_not_flat() -> None:
    grown = copy.deepcopy(_big())
    logistic = [r for r in grown["runs"] if r["kind"] == "logistic_classifier"]
    logistic[-1]["peak_rss_mb"] = 2 * logistic[0]["peak_rss_mb"]
    assert readme._handoff_big_rows(grown)[0][3] == "**no**"


def test_a_streamed_fit_far_below_the_in_memory_one_misses_the_goal() -> None:
    worse = copy.deepcopy(_big())
    for run in worse["runs"]:
        if run["kind"] == "kmeans_anomaly":
            run["silhouette_cost"] = 0.1
    assert readme._handoff_big_rows(worse)[2][3] == "**no**"
