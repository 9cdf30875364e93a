"""The post-swap watch: a new model that misbehaves at run time is rolled back.

For a window of samples after a swap the agent counts errors and alarms. Any
error, or an alarm rate far above what the manifest says training produced,
means the model is wrong for this device: the previous model goes back in and
the update is reported as failed (rolled_back), which the rollout counts.

`SwapWatch` is the pure count; `SwapGuard` arms one per swap and rolls back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from edge.config import WatchSection
from edge.scoring import LoadedModel, Scorer
from edge.store import ModelStore
from edge.updater import Report
from edgeloop.contract import Step


@dataclass
class SwapWatch:
    version: int
    window: int
    expected_alarm_rate: float | None
    max_factor: float
    min_margin: float
    samples: int = 0
    alarms: int = 0
    errors: int = 0

    @property
    def alarm_limit(self) -> float | None:
        if self.expected_alarm_rate is None:
            return None
        return max(
            self.expected_alarm_rate * self.max_factor, self.expected_alarm_rate + self.min_margin
        )

    def observe(self, samples: int, alarms: int, errors: int = 0) -> str | None:
        """Count a scored batch. Returns a reason to roll back, or None."""
        self.samples += samples
        self.alarms += alarms
        self.errors += errors
        if self.errors:
            return f"v{self.version} failed {self.errors} times while scoring"
        limit = self.alarm_limit
        if self.samples >= self.window and limit is not None:
            rate = self.alarms / self.samples
            if rate > limit:
                return (
                    f"v{self.version} alarms on {rate:.1%} of {self.samples} samples; training "
                    f"expected {self.expected_alarm_rate:.1%} (limit {limit:.1%})"
                )
        return None

    @property
    def done(self) -> bool:
        return self.samples >= self.window


class SwapGuard:
    """Watches each newly swapped model and puts the previous one back if it misbehaves."""

    def __init__(
        self, scorer: Scorer, store: ModelStore, settings: WatchSection, report: Report
    ) -> None:
        self._scorer, self._store, self._settings, self._report = scorer, store, settings, report
        self._lock = threading.Lock()
        self._watch: SwapWatch | None = None
        self._previous: LoadedModel | None = None

    def arm(self, new: LoadedModel, previous: LoadedModel | None) -> None:
        """Called by the updater once the new model is swapped in and committed."""
        stats = new.manifest.stats
        with self._lock:
            self._previous = previous
            self._watch = SwapWatch(
                version=new.version,
                window=self._settings.window,
                expected_alarm_rate=stats.get("alarm_rate") if new.is_anomaly_detector else None,
                max_factor=self._settings.max_alarm_factor,
                min_margin=self._settings.min_alarm_margin,
            )

    def watching(self) -> SwapWatch | None:
        """The watch in force now; taken before scoring, so a result is counted against it."""
        with self._lock:
            return self._watch

    def failed(self, watch: SwapWatch | None, error: Exception) -> None:
        """The model raised while scoring: one error is enough to roll back."""
        if watch is None:
            return
        reason = watch.observe(1, 0, errors=1)
        if reason:
            self._roll_back(watch, f"{reason}: {error}")

    def scored(self, watch: SwapWatch | None, version: int, alarm: bool) -> None:
        if watch is None or watch.version != version:
            return
        reason = watch.observe(1, int(alarm))
        if reason:
            self._roll_back(watch, reason)
        elif watch.done:
            with self._lock:
                if self._watch is watch:
                    self._watch = None

    def _roll_back(self, watch: SwapWatch, reason: str) -> None:
        with self._lock:
            previous, self._previous, self._watch = self._previous, None, None
        self._scorer.swap(previous)
        self._store.rollback(watch.version)
        self._report(Step.ROLLED_BACK, watch.version, reason)
