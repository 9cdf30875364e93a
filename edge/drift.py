"""Drift: the rolling scores of the running model against what training saw."""

from __future__ import annotations

from collections import deque

import numpy as np

from edge.scoring import LoadedModel

DRIFT_WINDOW = 1000


class DriftWindow:
    def __init__(self, size: int = DRIFT_WINDOW) -> None:
        self._scores: deque[float] = deque(maxlen=size)

    def add(self, score: float) -> None:
        self._scores.append(score)

    @property
    def newest(self) -> float | None:
        """The score of the last sample scored, None before any: what its alarm was
        judged on (a benchmark reads a whole agent's scores here)."""
        return self._scores[-1] if self._scores else None

    def clear(self) -> None:
        """A new model scores on its own scale: start the window again."""
        self._scores.clear()

    def figures(self, model: LoadedModel | None) -> dict[str, float]:
        if model is None or not self._scores:
            return {}
        scores = np.fromiter(self._scores, dtype=np.float64)
        figures = {"score_mean": float(scores.mean()), "samples": float(len(scores))}
        stats = model.manifest.stats
        if "score_mean" in stats and stats.get("score_std"):
            figures["score_mean_shift"] = (figures["score_mean"] - stats["score_mean"]) / stats[
                "score_std"
            ]
        if model.manifest.decision_threshold is not None and model.is_anomaly_detector:
            figures["alarm_rate"] = float(np.mean(scores > model.manifest.decision_threshold))
            if "alarm_rate" in stats:
                figures["expected_alarm_rate"] = stats["alarm_rate"]
        return figures
