"""Raw samples in, windows out: the device's half of a signal model (docs/DESIGN.md,
"Signals in").

A source of named channels (stdin JSON lines, a local MQTT topic) delivers one
reading per sample: an optional timestamp and a value per channel. The
windower keeps a ring buffer of the last `window` samples and hands out one row
every `hop` samples, sample-major in the model's channel order, which is the
input row the signal model's graph takes. The window spec is read per sample
from whatever model is installed (or the config's own before any is), so a
model update that changes the windowing takes effect on the next sample.

A reading whose timestamp is more than `max_gap` sample periods after the last
one (samples were lost), or not after it at all (the clock was set back, or a
sensor restarted its counter), cannot continue the window: the buffer starts
over at it, and the event is counted for the status and the log. Readings
without a timestamp are taken as contiguous.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.scoring import Scorer
from edge.sources import Sample
from edgeloop.contract import WindowSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """One sample of every channel a source delivers, with its time in seconds if known."""

    t: float | None
    values: Mapping[str, float]
    # Ground truth of a synthetic source, so a run can be scored against it.
    planted_anomaly: bool = False


@dataclass
class WindowCounts:
    """What windowing saw: read by the status report and the tests."""

    windows: int = 0
    gaps: int = 0
    clock_jumps: int = 0
    # A reading lacking a channel the installed model needs: skipped, not a gap.
    incomplete: int = 0
    last: str = ""

    def note(self, kind: str, reason: str) -> None:
        self.last = reason
        total = self.gaps + self.clock_jumps + self.incomplete
        if total == 1 or total % 1000 == 0:
            # The first and every thousandth: a flaky sensor must not flood the log.
            log.warning(
                "event=window_restarted kind=%s gaps=%d clock_jumps=%d incomplete=%d reason=%r",
                kind,
                self.gaps,
                self.clock_jumps,
                self.incomplete,
                reason,
            )

    def summary(self) -> str:
        if not (self.gaps or self.clock_jumps or self.incomplete):
            return ""
        return (
            f"windowing: {self.gaps} gaps, {self.clock_jumps} clock jumps, "
            f"{self.incomplete} incomplete readings, last: {self.last}"
        )


class Windower:
    """A ring buffer of the last `window` samples of the channels the spec names."""

    def __init__(
        self,
        spec_of: Callable[[], WindowSpec],
        counts: WindowCounts | None = None,
        max_gap: float = 1.5,
    ) -> None:
        self._spec_of = spec_of
        self.counts = counts if counts is not None else WindowCounts()
        self._max_gap = max_gap
        self._spec: WindowSpec | None = None
        self._buf: npt.NDArray[np.float32] = np.empty((0, 0), dtype=np.float32)
        self._pos = 0  # where the next sample goes
        self._filled = 0  # samples since the buffer last started over
        self._due = 0  # samples still to come before the next row
        self._last_t: float | None = None

    def _restart(self, spec: WindowSpec) -> None:
        if spec != self._spec:
            self._spec = spec
            self._buf = np.zeros((spec.window, len(spec.channels)), dtype=np.float32)
        self._pos = self._filled = 0
        self._due = spec.window

    def push(self, reading: Reading) -> npt.NDArray[np.float32] | None:
        """Take one reading; return a window row when one is due, else None."""
        spec = self._spec_of()
        if spec != self._spec:
            # A new model windows differently: its first row is all its own samples.
            self._restart(spec)
        try:
            row = [reading.values[c] for c in spec.channels]
        except KeyError as exc:
            self.counts.incomplete += 1
            self.counts.note("incomplete", f"a reading has no channel {exc}")
            return None
        t = reading.t
        if t is not None and self._last_t is not None:
            step = t - self._last_t
            if step <= 0.0:
                self.counts.clock_jumps += 1
                self.counts.note("clock_jump", f"time went from {self._last_t:g} to {t:g}")
                self._restart(spec)
            elif step > self._max_gap / spec.sample_rate:
                self.counts.gaps += 1
                self.counts.note(
                    "gap", f"{step:g} s between samples at {spec.sample_rate:g} Hz, after {t:g}"
                )
                self._restart(spec)
        if t is not None:
            self._last_t = t
        self._buf[self._pos] = row
        self._pos = (self._pos + 1) % spec.window
        self._filled += 1
        self._due -= 1
        if self._due > 0:
            return None
        self._due = spec.hop
        self.counts.windows += 1
        # Oldest sample first: from the write position round to it.
        out: npt.NDArray[np.float32] = np.concatenate(
            (self._buf[self._pos :], self._buf[: self._pos])
        ).reshape(-1)
        return out


def installed_window(scorer: Scorer, default: WindowSpec) -> Callable[[], WindowSpec]:
    """The running model's windowing, read per sample: a swap, an update or a rollback
    changes it with the model; `default` while no signal model runs."""

    def spec() -> WindowSpec:
        model = scorer.model
        if model is not None and model.manifest.window is not None:
            return model.manifest.window
        return default

    return spec


def windowed(readings: Iterable[Reading], windower: Windower) -> Iterator[Sample]:
    """The rows a stream of readings makes, as samples for the scoring loop."""
    for reading in readings:
        row = windower.push(reading)
        if row is not None:
            yield Sample(row)
