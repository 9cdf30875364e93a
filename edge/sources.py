"""Where samples come from: a synthetic vibration signal, a CSV replay, JSON lines on stdin."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from edge.config import AgentConfig, SourceKind
from edge.errors import SourceError


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


def csv_replay(path: Path, n_features: int, label_column: str, loop: bool) -> Iterator[Sample]:
    while True:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise SourceError(f"{path} is empty")
            label = header.index(label_column) if label_column in header else None
            columns = [i for i in range(len(header)) if i != label]
            if len(columns) != n_features:
                raise SourceError(
                    f"{path} has {len(columns)} feature columns, the device takes {n_features}"
                )
            for line, row in enumerate(reader, start=2):
                try:
                    x = np.array([float(row[i]) for i in columns], dtype=np.float32)
                    y = int(float(row[label])) if label is not None else None
                except (ValueError, IndexError) as exc:
                    raise SourceError(f"{path}:{line}: {exc}") from exc
                yield Sample(x, y)
        if not loop:
            return


def json_lines(n_features: int, stream: TextIO | None = None) -> Iterator[Sample]:
    """One JSON object per line: {"x": [...], "y": optional label}."""
    for number, line in enumerate(stream or sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            x = np.asarray(doc["x"], dtype=np.float32)
            y = doc.get("y")
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f'stdin line {number}: expected {{"x": [...]}}: {exc}') from exc
        if x.shape != (n_features,) or not np.all(np.isfinite(x)):
            raise SourceError(f"stdin line {number}: x must be {n_features} finite numbers")
        yield Sample(x, int(y) if y is not None else None)


def source_from_config(config: AgentConfig) -> Iterator[Sample]:
    s, n = config.source, config.device.n_features
    if s.kind == SourceKind.SYNTHETIC:
        return synthetic_vibration(n, s.anomaly_rate, s.seed)
    if s.kind == SourceKind.CSV:
        assert s.path is not None  # the config refuses a csv source without a path
        return csv_replay(s.path, n, s.label_column, s.loop)
    return json_lines(n)
