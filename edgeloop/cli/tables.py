"""Reading a user's data file the way the model expects it: columns by name, not position."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeloop.cli.errors import CliError


@dataclass(frozen=True)
class Table:
    X: npt.NDArray[np.float32]
    labels: list[str] | None  # as written in the file; None when it has no label column
    lines: list[int]  # the file line of each row (1-based, header is line 1), for messages
    columns: tuple[str, ...]  # the feature columns used, in the model's order


def read_table(
    path: str,
    n_features: int,
    feature_names: tuple[str, ...],
    label_column: str,
    label_required: bool = False,
) -> Table:
    """Rows of `path` (.csv with a header, or .npz with X and optional y).

    `label_required`: the caller named the label column, so a file without it is
    an error rather than a file without labels."""
    if path.lower().endswith(".npz"):
        if label_required:
            raise CliError(
                f"{path}: --label-column names a CSV column; an .npz file's labels are its "
                "'y' array"
            )
        return _read_npz(path, n_features)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise CliError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read it as UTF-8 text ({exc})") from exc
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not rows:
        raise CliError(f"{path} is empty: expected a header line and rows", "empty_data")
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1:
        raise CliError(f"{path} has a header but no rows", "empty_data")
    if label_column in header:
        label: int | None = header.index(label_column)
    elif label_required:
        raise CliError(
            f"{path} has no column {label_column!r} for the labels (its columns: "
            f"{', '.join(header[:8])}{' …' if len(header) > 8 else ''})",
            "missing_column",
        )
    else:
        label = None
    if feature_names:
        missing = [n for n in feature_names if n not in header]
        if missing:
            raise CliError(
                f"{path} has no column {', '.join(repr(m) for m in missing[:5])} "
                f"(the model's features are {', '.join(feature_names)})",
                "missing_column",
            )
        cols = [header.index(n) for n in feature_names]
    else:
        cols = [i for i in range(len(header)) if i != label]
        if len(cols) != n_features:
            raise CliError(
                f"{path} has {len(cols)} columns besides the label column {label_column!r}, "
                f"the model takes {n_features}; the model names no features, so every other "
                "column counts: name them in the config's model.feature_names (then extra "
                "columns such as a timestamp are ignored) or pass --config",
                "missing_column",
            )
    X = np.empty((len(rows) - 1, len(cols)), dtype=np.float32)
    labels: list[str] | None = [] if label is not None else None
    for r, row in enumerate(rows[1:]):
        line = r + 2
        if len(row) != len(header):
            raise CliError(f"{path}:{line}: {len(row)} cells, the header has {len(header)}")
        try:
            X[r] = [float(row[c]) for c in cols]
        except ValueError as exc:
            raise CliError(f"{path}:{line}: not a number ({exc})", "non_numeric") from exc
        if labels is not None and label is not None:
            labels.append(label_text(row[label]))
    return Table(X, labels, list(range(2, len(rows) + 1)), tuple(header[c] for c in cols))


def _read_npz(path: str, n_features: int) -> Table:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "X" not in npz.files:
                raise CliError(f"{path} has arrays {sorted(npz.files)}, no 'X'")
            X = np.asarray(npz["X"], dtype=np.float32)
            y = npz["y"] if "y" in npz.files else None
    except (OSError, ValueError) as exc:
        raise CliError(f"{path}: not a readable .npz file ({exc})") from exc
    if X.ndim != 2 or len(X) == 0:
        raise CliError(f"{path}: X has shape {X.shape}, expected rows x features", "empty_data")
    if X.shape[1] != n_features:
        raise CliError(f"{path}: rows have {X.shape[1]} features, the model takes {n_features}")
    labels = None if y is None else [label_text(v) for v in np.asarray(y).tolist()]
    return Table(X, labels, list(range(len(X))), tuple(f"X[:, {i}]" for i in range(n_features)))


def label_text(value: object) -> str:
    """One spelling per label: 10, 10.0 and "10" are the same class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text
