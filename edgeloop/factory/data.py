"""Data batches: read, check, and quarantine what cannot be trained on.

A bad batch never stops a run. It is set aside with a reason, and the run goes
on with the good ones; only a run left with no good data fails.

Every upload is checked against what its headers declare before anything is
decoded: a few hundred bytes of `.npz` can declare a terabyte array, and a CSV
header can declare a million columns. Decoding allocates what the header says,
so the header is judged first, against a budget of decoded bytes per batch.

Each batch knows the device it came from, and no device may hold more than its
share of a run's rows (`train.max_device_share`), so one device cannot outvote
the rest of the fleet by uploading more.
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeloop.factory.config import ModelConfig

# One batch is one device upload; the presign cap keeps them far below this.
MAX_BATCH_BYTES = 64 * 1024 * 1024
# What one batch may occupy once decoded (float64 features and int64 labels).
# A valid compressed .npz inflates about 1,000:1, so the bytes on the wire say
# little about the memory a batch takes; the headers say it exactly.
MAX_DECODED_BYTES = 256 * 1024 * 1024
# npy headers are a few hundred bytes; numpy's own default limit.
_MAX_NPY_HEADER = 10_000
# Extra CSV columns (a timestamp, a device id) are allowed beside declared
# feature names, up to this many; without names every column is a feature.
MAX_EXTRA_CSV_COLUMNS = 64
# Where a batch came from when it is not a device upload (files given to the CLI).
LOCAL_DEVICE = "local"


class NoUsableData(ValueError):
    """Every batch of a run was quarantined, or there were none."""


class ReferenceUnusable(ValueError):
    """The reference set could not be read in full; it is never trained or judged on in part."""


def device_from_key(key: str) -> str:
    """The device (thing name) of an upload key `data/{model}/{thing}/{id}.{ext}`.

    The key is written by the cloud (the presign grant scopes it to the
    thing), never chosen by the payload. Any other path (a file given to the
    CLI) belongs to LOCAL_DEVICE.
    """
    parts = key.split("/")
    if len(parts) == 4 and parts[0] == "data" and parts[2]:
        return parts[2]
    return LOCAL_DEVICE


@dataclass(frozen=True)
class Batch:
    key: str
    sha256: str
    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64] | None
    device: str = LOCAL_DEVICE

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def decoded_bytes(self) -> int:
        """What this batch occupies in memory: what a training budget should count."""
        return int(self.X.nbytes) + (0 if self.y is None else int(self.y.nbytes))


@dataclass(frozen=True)
class Quarantined:
    key: str
    sha256: str
    reason: str  # a short code: wrong_width, too_large, bomb, out_of_memory, ...
    detail: str
    device: str = LOCAL_DEVICE

    def to_json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "sha256": self.sha256,
            "reason": self.reason,
            "detail": self.detail,
            "device": self.device,
        }


@dataclass(frozen=True)
class DeviceShare:
    """How many of a device's rows a run was given, and how many it kept."""

    device: str
    uploaded: int
    kept: int

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "uploaded": self.uploaded, "kept": self.kept}


@dataclass(frozen=True)
class Dataset:
    """The good rows of a run, the device of each row, and where every batch went."""

    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64] | None
    batches: tuple[Batch, ...]
    quarantined: tuple[Quarantined, ...] = field(default=())
    # Row i came from device_names[row_device[i]]; None when unknown (then the
    # held-out split falls back to a hash of each row).
    device_names: tuple[str, ...] = ()
    row_device: npt.NDArray[np.intp] | None = None
    devices: tuple[DeviceShare, ...] = ()
    device_cap: int | None = None  # the most rows one device kept, when the cap applied

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])

    def snapshot(self) -> dict[str, Any]:
        """What the run was trained on, to record with it."""
        return {
            "batches": [
                {"key": b.key, "sha256": b.sha256, "rows": b.rows, "device": b.device}
                for b in self.batches
            ],
            "quarantined": [q.to_json() for q in self.quarantined],
            "rows": self.rows,
            "devices": [d.to_json() for d in self.devices],
            "device_cap_rows": self.device_cap,
            "trimmed": self.trimmed(),
        }

    def trimmed(self) -> list[str]:
        """Why rows a device uploaded are not in the run, one line per device trimmed."""
        if self.device_cap is None:
            return []
        return [
            f"{d.device}: kept {d.kept} of its {d.uploaded} rows, so that no device holds more "
            f"than its share of the run (train.max_device_share, or 1/{len(self.devices)} "
            f"with {len(self.devices)} devices): at most {self.device_cap} rows each"
            for d in self.devices
            if d.kept < d.uploaded
        ]


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
    if arr.shape[1] != config.input_width:
        raise _Reject(
            "wrong_width",
            f"rows have {arr.shape[1]} features, the model takes {config.input_width}",
        )
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise _Reject(
            "non_finite", f"{int(bad.sum())} NaN/inf values, first at row {row}, column {col}"
        )
    bound = config.model.max_abs_value
    large = np.abs(out) > bound
    if large.any():
        row, col = (int(i) for i in np.argwhere(large)[0])
        raise _Reject(
            "out_of_range",
            f"{int(large.sum())} values beyond ±{bound:g} (model.max_abs_value), first "
            f"{out[row, col]:g} at row {row}, column {col}",
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


def _decoded(rows: int, width: int, itemsize: int) -> int:
    # Decoding makes float64/int64 arrays whatever the stored type; a wider
    # stored type (longdouble) costs its own size while it is converted.
    return rows * width * max(itemsize, 8)


def _too_large(what: str, rows: int, width: int, decoded: int, budget: int) -> _Reject:
    return _Reject(
        "too_large",
        f"{what} declares {rows:,} x {width:,} values ({decoded:,} bytes decoded), over the "
        f"{budget:,}-byte budget per batch; split the data into smaller uploads",
    )


@dataclass(frozen=True)
class _NpyHeader:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]


def _npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _NpyHeader:
    """An array's shape and dtype from its .npy header, reading nothing after it."""
    fmt = np.lib.format
    with zf.open(info) as member:
        version = fmt.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(member, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(member, max_header_size=_MAX_NPY_HEADER)
        else:
            raise _Reject(
                "unreadable", f"{info.filename} is .npy format {version}; use np.savez (1.0 or 2.0)"
            )
    return _NpyHeader(info.filename, tuple(int(n) for n in shape), dtype)


def _member(zf: zipfile.ZipFile, name: str, budget: int) -> zipfile.ZipInfo | None:
    try:
        info = zf.getinfo(name)
    except KeyError:
        return None
    if info.file_size > budget + _MAX_NPY_HEADER:
        raise _Reject(
            "bomb",
            f"{name} declares {info.file_size:,} bytes uncompressed from "
            f"{info.compress_size:,} on the wire, over the {budget:,}-byte budget per batch",
        )
    return info


def _plan_npz(
    zf: zipfile.ZipFile, config: ModelConfig, budget: int
) -> tuple[zipfile.ZipInfo, zipfile.ZipInfo | None, int]:
    """Check an .npz's declared sizes, shapes and dtypes; the decoded bytes it will take."""
    x_info = _member(zf, "X.npy", budget)
    if x_info is None:
        arrays = sorted(n.removesuffix(".npy") for n in zf.namelist())
        raise _Reject("missing_array", f"npz has arrays {arrays}, no 'X'")
    X = _npy_header(zf, x_info)
    if X.dtype.hasobject:
        raise _Reject("unreadable", "X holds Python objects; batches carry numbers, not pickles")
    if X.dtype.kind not in "iuf":
        raise _Reject("non_numeric", f"X has dtype {X.dtype}, not numbers")
    if len(X.shape) != 2:
        raise _Reject("wrong_shape", f"X has {len(X.shape)} dimensions, expected rows x features")
    rows, width = X.shape
    if width != config.input_width:
        raise _Reject(
            "wrong_width", f"rows have {width} features, the model takes {config.input_width}"
        )
    decoded = _decoded(rows, width, X.dtype.itemsize)
    if decoded > budget:
        raise _too_large("X", rows, width, decoded, budget)
    y_info = _member(zf, "y.npy", budget) if config.is_classifier else None
    if y_info is not None:
        y = _npy_header(zf, y_info)
        if y.dtype.hasobject:
            raise _Reject("unreadable", "y holds Python objects; labels are integers")
        if y.dtype.kind not in "iuf":
            raise _Reject("bad_labels", f"labels have dtype {y.dtype}, not integers")
        if y.shape != (rows,):
            raise _Reject("label_mismatch", f"y has shape {y.shape}, expected ({rows},)")
        decoded += _decoded(rows, 1, y.dtype.itemsize)
        if decoded > budget:
            raise _too_large("X and y", rows, width + 1, decoded, budget)
    return x_info, y_info, decoded


def _open_npz(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise _Reject("unreadable", f"not a readable .npz file: {exc}") from exc


def _read_npz(data: bytes, config: ModelConfig, budget: int) -> tuple[Any, Any]:
    with _open_npz(data) as zf:
        x_info, y_info, _ = _plan_npz(zf, config, budget)
        try:
            with zf.open(x_info) as member:
                X = np.lib.format.read_array(member, allow_pickle=False)
            y = None
            if y_info is not None:
                with zf.open(y_info) as member:
                    y = np.lib.format.read_array(member, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise _Reject("unreadable", f"not a readable .npz file: {exc}") from exc
    return X, y


@dataclass(frozen=True)
class _CsvPlan:
    text: str
    body: int  # where the rows start
    header: list[str]
    feature_cols: list[int]
    label_col: int  # -1: no label column
    max_rows: int


def _csv_width(config: ModelConfig) -> tuple[int, int]:
    """The fewest and the most columns a CSV header may have for this model."""
    least = config.input_width + (1 if config.is_classifier else 0)
    extra = MAX_EXTRA_CSV_COLUMNS if config.model.feature_names else 0
    return least, least + extra


def _plan_csv(data: bytes, config: ModelConfig, budget: int) -> _CsvPlan:
    """Check a CSV's header width and row count before any row is parsed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Reject("unreadable", f"CSV is not UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise _Reject("empty", "the CSV file is empty")
    newline = text.find("\n")
    body = len(text) if newline < 0 else newline + 1
    least, most = _csv_width(config)
    # A cheap upper bound of the header's cells, counted in place before a
    # million-cell header becomes a million strings.
    cells = text.count(",", 0, body) + 1
    if cells > most:
        raise _Reject(
            "wrong_width",
            f"the CSV header has {cells:,} columns; the model takes "
            f"{config.input_width} features" + (" and a label" if config.is_classifier else ""),
        )
    try:
        header = [h.strip() for h in next(csv.reader([text[:body]]))]
    except (csv.Error, StopIteration) as exc:
        raise _Reject("unreadable", f"not a readable CSV header: {exc}") from exc
    label = config.model.label_column if config.is_classifier else None
    if label is not None and label not in header:
        raise _Reject("missing_labels", f"CSV header has no label column {label!r}")
    if config.model.feature_names:
        missing = [n for n in config.model.feature_names if n not in header]
        if missing:
            raise _Reject("wrong_width", f"CSV header lacks feature columns {missing[:5]}")
        feature_cols = [header.index(n) for n in config.model.feature_names]
    else:
        if len(header) != least:
            raise _Reject(
                "wrong_width",
                f"the CSV header has {len(header)} columns; without model.feature_names "
                f"it needs exactly {least}",
            )
        feature_cols = [i for i, h in enumerate(header) if h != label]
    label_col = header.index(label) if label is not None else -1
    # Every row ends a line (the last one may lack its newline): a bound on the rows.
    max_rows = 0
    if body < len(text):
        max_rows = text.count("\n", body) + (0 if text.endswith("\n") else 1)
    width = config.input_width + (1 if label is not None else 0)
    decoded = _decoded(max_rows, width, 8)
    if decoded > budget:
        raise _too_large("the CSV", max_rows, width, decoded, budget)
    return _CsvPlan(text, body, header, feature_cols, label_col, max_rows)


def _guarded(text: str, start: int, cells: int) -> Iterator[str]:
    """The CSV's lines from `start`, each refused before csv splits it if too wide."""
    number = 2
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        if text.count(",", start, end) >= cells:
            raise _Reject("wrong_width", f"line {number} has more than the header's {cells} cells")
        yield text[start:end]
        start, number = end, number + 1


def _read_csv(data: bytes, config: ModelConfig, budget: int) -> tuple[Any, Any]:
    plan = _plan_csv(data, config, budget)
    X = np.empty((plan.max_rows, len(plan.feature_cols)), dtype=np.float64)
    y = np.empty(plan.max_rows, dtype=np.float64) if plan.label_col >= 0 else None
    cells = len(plan.header)
    rows = 0
    try:
        for row in csv.reader(_guarded(plan.text, plan.body, cells)):
            line = rows + 2
            if len(row) != cells:
                raise _Reject(
                    "wrong_width", f"line {line} has {len(row)} cells, the header {cells}"
                )
            try:
                X[rows] = [float(row[c]) for c in plan.feature_cols]
                if y is not None:
                    y[rows] = float(row[plan.label_col])
            except ValueError as exc:
                raise _Reject("non_numeric", f"line {line}: {exc}") from exc
            rows += 1
    except csv.Error as exc:
        raise _Reject("unreadable", f"not a readable CSV file: {exc}") from exc
    return X[:rows], None if y is None else y[:rows]


def decoded_size(key: str, data: bytes, config: ModelConfig) -> int:
    """The bytes an upload will occupy once decoded, told from its headers alone.

    For choosing uploads under a training budget without decoding them: the
    .npz array headers give the exact figure, a CSV's line count an upper
    bound. An upload that read_batch would quarantine on its headers counts 0
    (it contributes no rows); one it would refuse for its size counts what it
    declares, so a budget never admits it.
    """
    lower = key.lower()
    try:
        if lower.endswith(".npz"):
            with _open_npz(data) as zf:
                return _plan_npz(zf, config, budget=2**62)[2]
        if lower.endswith(".csv"):
            plan = _plan_csv(data, config, budget=2**62)
            labels = 1 if plan.label_col >= 0 else 0
            return _decoded(plan.max_rows, config.input_width + labels, 8)
    except _Reject:
        return 0
    except Exception:
        # A header that breaks a decoder is read_batch's to quarantine, with its reason.
        return 0
    return 0


def read_batch(
    key: str,
    data: bytes,
    config: ModelConfig,
    device: str | None = None,
    max_decoded_bytes: int = MAX_DECODED_BYTES,
) -> Batch | Quarantined:
    """One upload, checked against its headers first, then decoded and checked again.

    `device` is the thing that uploaded it; by default it is taken from an
    upload key (`data/{model}/{thing}/...`), else LOCAL_DEVICE. Any failure
    while decoding, MemoryError included, quarantines this upload alone.
    """
    digest = hashlib.sha256(data).hexdigest()
    source = device if device is not None else device_from_key(key)
    try:
        if len(data) > MAX_BATCH_BYTES:
            raise _Reject("too_large", f"{len(data)} bytes, over the {MAX_BATCH_BYTES} cap")
        X, y = _decode(key, data, config, max_decoded_bytes)
        matrix = _check_matrix(X, config)
        labels = None
        if config.is_classifier:
            if y is None:
                raise _Reject("missing_labels", "a classifier batch needs labels (y)")
            labels = _check_labels(y, matrix.shape[0], config)
        return Batch(key=key, sha256=digest, X=matrix, y=labels, device=source)
    except _Reject as rejected:
        return Quarantined(key, digest, rejected.reason, rejected.detail, source)


def _decode(key: str, data: bytes, config: ModelConfig, budget: int) -> tuple[Any, Any]:
    lower = key.lower()
    try:
        if lower.endswith(".npz"):
            return _read_npz(data, config, budget)
        if lower.endswith(".csv"):
            return _read_csv(data, config, budget)
    except _Reject:
        raise
    except MemoryError as exc:
        raise _Reject(
            "out_of_memory", f"decoding ran out of memory ({exc}); the upload is set aside"
        ) from exc
    except Exception as exc:
        # A decoder's failure is this upload's, not the run's.
        raise _Reject("unreadable", f"the decoder failed: {type(exc).__name__}: {exc}") from exc
    raise _Reject("unknown_format", "batches are .npz (X, y) or .csv with a header")


def _cap_rows(counts: dict[str, int], share: float) -> int | None:
    """The most rows any one device may keep, or None when no cap applies.

    A device may hold at most max(share, 1 / devices) of the rows the run keeps:
    a fleet of one device (or the CLI) trains on everything, a fleet of two
    splits evenly at most, and from 1 / share devices up the share itself
    applies. The largest per-device limit L with L <= cap x sum(min(n, L))
    keeps as many honest rows as the cap allows; sum(min(n, L)) is concave in
    L, so the limits that satisfy it form one interval, found by bisection.
    """
    if len(counts) < 2:
        return None
    cap = max(share, 1.0 / len(counts))
    sizes = np.fromiter(counts.values(), dtype=np.int64)

    def fits(limit: int) -> bool:
        return limit <= cap * float(np.minimum(sizes, limit).sum())

    top = int(sizes.max())
    if fits(top):
        return None
    low, high = 1, top  # fits(min size) holds: every device at that size is an equal share
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _device_seed(seed: int, device: str) -> list[int]:
    digest = hashlib.blake2b(device.encode(), digest_size=8).digest()
    return [seed, int.from_bytes(digest, "big")]


def assemble(items: Iterable[Batch | Quarantined], config: ModelConfig) -> Dataset:
    """Join the good batches in key order, each device capped at its share; refuse a run with none.

    A device over its share keeps a seeded random subset of its rows, in
    their order, so the same uploads give the same run.
    """
    ordered = sorted(items, key=lambda b: b.key)
    good = tuple(b for b in ordered if isinstance(b, Batch))
    bad = tuple(b for b in ordered if isinstance(b, Quarantined))
    if not good:
        reasons = "; ".join(f"{q.key}: {q.reason} ({q.detail})" for q in bad[:5]) or "no batches"
        raise NoUsableData(
            f"no usable data for model {config.model.name}: {reasons}. "
            "Upload batches that match the model config."
        )
    names = tuple(sorted({b.device for b in good}))
    index = {name: i for i, name in enumerate(names)}
    X = np.concatenate([b.X for b in good])
    y = np.concatenate([b.y for b in good if b.y is not None]) if config.is_classifier else None
    row_device = np.concatenate([np.full(b.rows, index[b.device], dtype=np.intp) for b in good])
    counts = {name: int(np.sum(row_device == i)) for i, name in enumerate(names)}
    limit = _cap_rows(counts, config.train.max_device_share)
    keep = np.ones(len(X), dtype=bool)
    if limit is not None:
        for i, name in enumerate(names):
            rows = np.flatnonzero(row_device == i)
            if len(rows) > limit:
                rng = np.random.default_rng(_device_seed(config.train.seed, name))
                dropped = rng.choice(rows, len(rows) - limit, replace=False)
                keep[dropped] = False
        X, row_device = X[keep], row_device[keep]
        y = None if y is None else y[keep]
    shares = tuple(
        DeviceShare(name, counts[name], int(np.sum(row_device == i)))
        for i, name in enumerate(names)
    )
    return Dataset(
        X=X,
        y=y,
        batches=good,
        quarantined=bad,
        device_names=names,
        row_device=row_device,
        devices=shares,
        device_cap=limit,
    )


def _read_files(paths: Sequence[str], config: ModelConfig) -> list[Batch | Quarantined]:
    from pathlib import Path

    items: list[Batch | Quarantined] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            items.append(Quarantined(path, "", "unreadable", f"cannot read: {exc.strerror}"))
            continue
        items.append(read_batch(path, data, config, device=LOCAL_DEVICE))
    return items


def load_files(paths: Sequence[str], config: ModelConfig) -> Dataset:
    """Batches from files, all from LOCAL_DEVICE: the CLI trains on what it is given."""
    return assemble(_read_files(paths, config), config)


def reference_set(items: Iterable[Batch | Quarantined], config: ModelConfig) -> Dataset:
    """The platform's reference set (gate.reference) from its read batches.

    Unlike device uploads, a reference batch that cannot be read is an error,
    not a quarantine: judging candidates on part of the reference set would
    silently change what the gate means.
    """
    items = list(items)
    bad = [q for q in items if isinstance(q, Quarantined)]
    if bad:
        reasons = "; ".join(f"{q.key}: {q.reason} ({q.detail})" for q in bad[:5])
        raise ReferenceUnusable(
            f"the reference set for model {config.model.name} has unusable batches: {reasons}. "
            "Fix or remove them under the reference prefix."
        )
    good = [b for b in items if isinstance(b, Batch)]
    if not good:
        raise ReferenceUnusable(
            f"the reference set for model {config.model.name} is empty; upload reference "
            "batches under the prefix gate.reference names"
        )
    ordered = sorted(good, key=lambda b: b.key)
    X = np.concatenate([b.X for b in ordered])
    y = np.concatenate([b.y for b in ordered if b.y is not None]) if config.is_classifier else None
    return Dataset(X=X, y=y, batches=tuple(ordered))


def load_reference_files(paths: Sequence[str], config: ModelConfig) -> Dataset:
    """A reference set from files, for `edgeloop train` and the benchmarks."""
    return reference_set(_read_files(paths, config), config)
