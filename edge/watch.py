"""The post-swap watch: a new model that misbehaves at run time is rolled back.

For a window of samples after a swap the agent counts errors and alarms. Any
error, or an alarm rate far above what the manifest says training produced,
means the model is wrong for this device: the previous model goes back in and
the update is reported as failed (rolled_back), which the rollout counts.
"""

from __future__ import annotations

from dataclasses import dataclass


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
