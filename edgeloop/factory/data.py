"""Data batches: read, check, and quarantine what cannot be trained on.

A bad batch never stops a run. It is set aside with a reason, and the run goes
on with the good ones; only a run left with no good data fails.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.factory.config import ModelConfig

# One batch is one device upload; the presign cap keeps them far below this.
MAX_BATCH_BYTES = 64 * 1024 * 1024


class NoUsableData(ValueError):
    """Every batch of a run was quarantined, or there were none."""


@dataclass(frozen=True)
class Batch:
    key: str
    sha256: str
    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64] | None

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])


@dataclass(frozen=True)
class Quarantined:
    key: str
    sha256: str
    reason: str  # a short code: wrong_width, non_finite, empty, non_numeric, ...
    detail: str

    def to_json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "sha256": self.sha256,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Dataset:
    """The good rows of a run and where every batch went."""

    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64] | None
    batches: tuple[Batch, ...]
    quarantined: tuple[Quarantined, ...] = field(default=())

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])

    def snapshot(self) -> dict[str, Any]:
        """What the run was trained on, to record with it."""
        return {
            "batches": [{"key": b.key, "sha256": b.sha256, "rows": b.rows} for b in self.batches],
            "quarantined": [q.to_json() for q in self.quarantined],
            "rows": self.rows,
        }


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _check_matrix(X: Any, config: ModelConfig) -> npt.NDArray[np.float64]:
    arr = np.asarray(X)
    if arr.dtype.kind not in "iuf":
        raise _Reject("non_numeric", f"X has dtype {arr.dtype}, not numbers")
    if arr.ndim != 2:
        raise _Reject("wrong_shape", f"X has {arr.ndim} dimensions, expected rows x features")
    if arr.shape[0] == 0:
        raise _Reject("empty", "the batch has no rows")
    if arr.shape[1] != config.model.n_features:
        raise _Reject(
            "wrong_width",
            f"rows have {arr.shape[1]} features, the model takes {config.model.n_features}",
        )
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise _Reject(
            "non_finite", f"{int(bad.sum())} NaN/inf values, first at row {row}, column {col}"
        )
    return out


def _check_labels(y: Any, rows: int, config: ModelConfig) -> npt.NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise _Reject("label_mismatch", f"y has shape {arr.shape}, expected ({rows},)")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise _Reject("bad_labels", "labels must be whole numbers")
    elif arr.dtype.kind not in "iu":
        raise _Reject("bad_labels", f"labels have dtype {arr.dtype}, not integers")
    labels = arr.astype(np.int64)
    if config.model.classes:
        unknown = sorted(set(labels.tolist()) - set(config.model.classes))
        if unknown:
            raise _Reject("unknown_class", f"labels {unknown[:5]} are not in model.classes")
    return labels


def _read_npz(data: bytes, config: ModelConfig) -> tuple[Any, Any]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "X" not in npz.files:
                raise _Reject("missing_array", f"npz has arrays {sorted(npz.files)}, no 'X'")
            X = npz["X"]
            y = npz["y"] if "y" in npz.files else None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise _Reject("unreadable", f"not a readable .npz file: {exc}") from exc
    return X, y


def _read_csv(data: bytes, config: ModelConfig) -> tuple[Any, Any]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Reject("unreadable", f"CSV is not UTF-8 (byte {exc.start})") from exc
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise _Reject("unreadable", f"not a readable CSV file: {exc}") from exc
    if not rows:
        raise _Reject("empty", "the CSV file is empty")
    header = [h.strip() for h in rows[0]]
    label = config.model.label_column if config.is_classifier else None
    if label is not None and label not in header:
        raise _Reject("missing_labels", f"CSV header has no label column {label!r}")
    if config.model.feature_names:
        missing = [n for n in config.model.feature_names if n not in header]
        if missing:
            raise _Reject("wrong_width", f"CSV header lacks feature columns {missing[:5]}")
        feature_cols = [header.index(n) for n in config.model.feature_names]
    else:
        feature_cols = [i for i, h in enumerate(header) if h != label]
    X = np.empty((len(rows) - 1, len(feature_cols)), dtype=np.float64)
    y = np.empty(len(rows) - 1, dtype=np.float64) if label is not None else None
    label_col = header.index(label) if label is not None else -1
    for r, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise _Reject(
                "wrong_width", f"line {r + 2} has {len(row)} cells, the header {len(header)}"
            )
        try:
            X[r] = [float(row[c]) for c in feature_cols]
            if y is not None:
                y[r] = float(row[label_col])
        except ValueError as exc:
            raise _Reject("non_numeric", f"line {r + 2}: {exc}") from exc
    return X, y


def read_batch(key: str, data: bytes, config: ModelConfig) -> Batch | Quarantined:
    digest = hashlib.sha256(data).hexdigest()
    try:
        if len(data) > MAX_BATCH_BYTES:
            raise _Reject("too_large", f"{len(data)} bytes, over the {MAX_BATCH_BYTES} cap")
        lower = key.lower()
        if lower.endswith(".npz"):
            X, y = _read_npz(data, config)
        elif lower.endswith(".csv"):
            X, y = _read_csv(data, config)
        else:
            raise _Reject("unknown_format", "batches are .npz (X, y) or .csv with a header")
        matrix = _check_matrix(X, config)
        labels = None
        if config.is_classifier:
            if y is None:
                raise _Reject("missing_labels", "a classifier batch needs labels (y)")
            labels = _check_labels(y, matrix.shape[0], config)
        return Batch(key=key, sha256=digest, X=matrix, y=labels)
    except _Reject as rejected:
        return Quarantined(key=key, sha256=digest, reason=rejected.reason, detail=rejected.detail)


def assemble(items: Iterable[Batch | Quarantined], config: ModelConfig) -> Dataset:
    """Join the good batches in key order; refuse a run with none."""
    ordered = sorted(items, key=lambda b: b.key)
    good = tuple(b for b in ordered if isinstance(b, Batch))
    bad = tuple(b for b in ordered if isinstance(b, Quarantined))
    if not good:
        reasons = "; ".join(f"{q.key}: {q.reason} ({q.detail})" for q in bad[:5]) or "no batches"
        raise NoUsableData(
            f"no usable data for model {config.model.name}: {reasons}. "
            "Upload batches that match the model config."
        )
    X = np.concatenate([b.X for b in good])
    y = np.concatenate([b.y for b in good if b.y is not None]) if config.is_classifier else None
    return Dataset(X=X, y=y, batches=good, quarantined=bad)


def load_files(paths: Sequence[str], config: ModelConfig) -> Dataset:
    from pathlib import Path

    items: list[Batch | Quarantined] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            items.append(Quarantined(path, "", "unreadable", f"cannot read: {exc.strerror}"))
            continue
        items.append(read_batch(path, data, config))
    return assemble(items, config)
