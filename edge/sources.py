"""Where samples come from: a synthetic vibration signal, a CSV replay, JSON lines on stdin."""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from edge.config import AgentConfig, SourceKind
from edge.errors import SourceError, SourceGone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    x: npt.NDArray[np.float32]
    label: int | None = None
    # Ground truth of a synthetic source, so a run can be scored against it.
    planted_anomaly: bool = False


def vibration_modes(n_features: int) -> npt.NDArray[np.float64]:
    """The operating modes of the synthetic machine, the same on every device."""
    return np.random.default_rng(42).normal(0.0, 8.0, size=(4, n_features))


def synthetic_vibration(
    n_features: int, anomaly_rate: float, seed: int, count: int | None = None
) -> Iterator[Sample]:
    """A machine switching between four operating modes; planted anomalies lie far off them."""
    rng = np.random.default_rng(seed)
    modes = vibration_modes(n_features)
    mode = 0
    produced = 0
    while count is None or produced < count:
        if rng.random() < 0.01:
            mode = int(rng.integers(0, len(modes)))
        if rng.random() < anomaly_rate:
            x = rng.uniform(-30.0, 30.0, size=n_features)
            yield Sample(x.astype(np.float32), planted_anomaly=True)
        else:
            x = modes[mode] + rng.normal(0.0, 1.0, size=n_features)
            yield Sample(x.astype(np.float32))
        produced += 1


@dataclass
class SkippedLines:
    """Lines a source could not read: skipped, counted, the last reason kept for the status.

    The first is logged at once, then at most one line per `every_seconds` saying
    how many more, and `summary` says what is left unsaid when the agent stops:
    a broken sensor must not flood the log, nor may a run of bad lines hide behind
    the first."""

    count: int = 0
    last: str = ""
    every_seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _said: int = 0
    _said_at: float = -math.inf

    def skip(self, reason: str) -> None:
        self.count += 1
        self.last = reason
        now = self.clock()
        if self.count == 1 or now - self._said_at >= self.every_seconds:
            self._say(now)

    def summary(self) -> None:
        if self.count > self._said:
            self._say(self.clock())

    def _say(self, now: float) -> None:
        log.warning(
            "event=line_skipped count=%d new=%d last_reason=%r",
            self.count,
            self.count - self._said,
            self.last,
        )
        self._said, self._said_at = self.count, now


def csv_replay(
    path: Path,
    n_features: int,
    label_column: str,
    loop: bool,
    skipped: SkippedLines | None = None,
    feature_names: tuple[str, ...] = (),
) -> Iterator[Sample]:
    """Rows of a CSV file with a header. With `feature_names`, columns are found by name
    (other columns, a timestamp say, are ignored); without, every column but the label
    is a feature, in order."""
    skipped = skipped if skipped is not None else SkippedLines()
    while True:
        try:
            # Undecodable bytes become U+FFFD and fail as a bad cell: one line skipped.
            f = open(path, encoding="utf-8", errors="replace", newline="")  # noqa: SIM115
        except OSError as exc:
            raise SourceGone(f"csv source {path}: {exc.strerror}") from exc
        with f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise SourceGone(f"csv source {path} is empty: it has no header line")
            columns, label = _columns(path, header, n_features, label_column, feature_names)
            produced = 0
            for line, row in enumerate(_rows(reader, path, skipped), start=2):
                try:
                    if len(row) != len(header):
                        raise SourceError(f"{len(row)} cells, the header has {len(header)}")
                    x = np.array([float(row[i]) for i in columns], dtype=np.float32)
                    if not np.all(np.isfinite(x)):
                        raise SourceError("a feature is not a finite number")
                    y = int(float(row[label])) if label is not None else None
                except (ValueError, IndexError, ArithmeticError) as exc:
                    # ArithmeticError: int(float("inf")) is an OverflowError.
                    skipped.skip(f"{path}:{line}: {exc}")
                    continue
                produced += 1
                yield Sample(x, y)
        if not loop:
            return
        if not produced:
            # Replaying a file with no usable row would spin here forever.
            raise SourceGone(f"csv source {path} has no readable row to replay")


def _columns(
    path: Path,
    header: list[str],
    n_features: int,
    label_column: str,
    feature_names: tuple[str, ...],
) -> tuple[list[int], int | None]:
    """Which cells hold the features, in the model's order, and which holds the label."""
    names = [name.strip() for name in header]
    label = names.index(label_column) if label_column in names else None
    if feature_names:
        missing = [name for name in feature_names if name not in names]
        if missing:
            raise SourceGone(
                f"csv source {path} has no column {missing[0]!r}; the model's features are "
                f"{', '.join(feature_names)} (other columns are ignored)"
            )
        return [names.index(name) for name in feature_names], label
    columns = [i for i in range(len(names)) if i != label]
    if len(columns) != n_features:
        raise SourceGone(
            f"csv source {path} has {len(columns)} feature columns, the device takes "
            f"{n_features}; name the features (device.feature_names) to pick columns by name"
        )
    return columns, label


def _rows(reader: Iterator[list[str]], path: Path, skipped: SkippedLines) -> Iterator[list[str]]:
    """The reader's rows; a line the csv module cannot tokenise is skipped, not fatal."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            skipped.skip(f"{path}: {exc}")


def json_lines(
    n_features: int,
    stream: TextIO | None = None,
    skipped: SkippedLines | None = None,
    feature_names: tuple[str, ...] = (),
) -> Iterator[Sample]:
    """One JSON object per line: {"x": [...], "y": optional label}; with feature names,
    "x" may also be an object of named values, {"x": {"rpm": 3.1, ...}}."""
    skipped = skipped if skipped is not None else SkippedLines()
    for number, line in enumerate(stream or sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            values = doc["x"]
            if isinstance(values, dict):
                if not feature_names:
                    raise SourceError("named fields need the model's feature names")
                values = [values[name] for name in feature_names]
            x = np.asarray(values, dtype=np.float32)
            y = doc.get("y")
            if x.shape != (n_features,) or not np.all(np.isfinite(x)):
                raise SourceError(f"x must be {n_features} finite numbers")
            label = int(y) if y is not None else None
        except KeyError as exc:
            skipped.skip(f"stdin line {number}: no field {exc}")
            continue
        except (ValueError, TypeError, AttributeError, RecursionError, ArithmeticError) as exc:
            # ArithmeticError: a label of 1e400 is inf, and int(inf) an OverflowError.
            skipped.skip(f'stdin line {number}: expected {{"x": [...]}}: {exc}')
            continue
        yield Sample(x, label)


def source_from_config(
    config: AgentConfig, skipped: SkippedLines, feature_names: tuple[str, ...] = ()
) -> Iterator[Sample]:
    s, n = config.source, config.device.n_features
    if s.kind == SourceKind.SYNTHETIC:
        return synthetic_vibration(n, s.anomaly_rate, s.seed)
    if s.kind == SourceKind.CSV:
        assert s.path is not None  # the config refuses a csv source without a path
        return csv_replay(s.path, n, s.label_column, s.loop, skipped, feature_names)
    return json_lines(n, skipped=skipped, feature_names=feature_names)
