"""`edgeloop train | delta | patch`: the model factory on the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeloop.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, CliError, emit
from edgeloop.cli.quiet import quiet_interpreter
from edgeloop.contract import CODECS

if TYPE_CHECKING:
    from edgeloop.factory.config import ModelConfig
    from edgeloop.factory.data import Batch, Quarantined
    from edgeloop.factory.training import TrainedModel

STRING_LABELS_HINT = (
    "edgeloop classifiers take whole-number class labels: map each name to a number "
    "(e.g. cat=0, dog=1) and list the numbers in the config's model.classes"
)


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _load_champion(path: str, config: ModelConfig) -> TrainedModel:
    """The estimator an earlier `train --out` wrote, if it can seed this model."""
    import joblib

    directory = Path(path)
    if directory.is_file():
        raise CliError(
            f"--champion {path}: pass the directory an earlier `edgeloop train --out` wrote, "
            "not a file"
        )
    estimator = directory / "estimator.joblib"
    if not estimator.is_file():
        raise CliError(
            f"--champion {path}: no estimator.joblib there (a promoted `edgeloop train --out` "
            "directory has one)"
        )
    # estimator.joblib is a pickle: only load champions this registry wrote.
    champion: TrainedModel = joblib.load(estimator)
    m = config.model
    run = directory / "run.json"
    name = json.loads(run.read_text(encoding="utf-8")).get("model") if run.is_file() else None
    if name is not None and name != m.name:
        raise CliError(f"--champion {path} is a model of {name!r}, not {m.name!r}", "champion")
    if (champion.kind, champion.n_features) != (m.kind, m.n_features):
        raise CliError(
            f"--champion {path} is a {champion.kind} on {champion.n_features} features; this "
            f"config trains a {m.kind} on {m.n_features}, so it cannot be warm-started from or "
            "compared with it (drop --champion to train from scratch)",
            "champion",
        )
    return champion


def _check_paths(paths: list[str]) -> None:
    folders = [p for p in paths if Path(p).is_dir()]
    if folders:
        raise CliError(
            f"{', '.join(folders)} is a directory: pass the data files in it (e.g. "
            f"{folders[0].rstrip('/')}/*.csv)",
            "missing_data",
            exit_code=EXIT_FAILED,
        )
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise CliError(
            f"no such data file: {', '.join(missing)}", "missing_data", exit_code=EXIT_FAILED
        )


def _string_labels(item: Batch | Quarantined, data: bytes, config: ModelConfig) -> str | None:
    """The first label that is not a whole number, if the batch has one (the common CSV case)."""
    import csv
    import io

    if not config.is_classifier:
        return None
    column = config.model.label_column
    if item.key.lower().endswith(".npz"):
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if "y" in npz.files and npz["y"].dtype.kind in "USO":
                return f"{item.key}: y holds {str(npz['y'][0])!r}"
        return None
    rows = csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace"), newline=""))
    header = [h.strip() for h in next(rows, [])]
    if column not in header:
        return None
    index = header.index(column)
    for line, row in enumerate(rows, start=2):
        if len(row) > index:
            try:
                value = float(row[index])
            except ValueError:
                return f"{item.key}:{line}: label column {column!r} holds {row[index]!r}"
            if not value.is_integer():
                return f"{item.key}:{line}: label column {column!r} holds {row[index]!r}"
    return None


def _read_batches(paths: list[str], config: ModelConfig) -> list[Batch | Quarantined]:
    from edgeloop.factory.data import Quarantined, read_batch

    items: list[Batch | Quarantined] = []
    for path in paths:
        data = Path(path).read_bytes()
        item = read_batch(path, data, config)
        if isinstance(item, Quarantined):
            found = _string_labels(item, data, config)
            if found is not None:
                raise CliError(f"{found}: {STRING_LABELS_HINT}", "string_labels", EXIT_FAILED)
        items.append(item)
    return items


def _no_usable_data(config: ModelConfig, items: list[Batch | Quarantined]) -> str:
    from edgeloop.factory.data import Quarantined

    reasons = "; ".join(
        f"{q.key}: {q.reason} ({q.detail})" for q in items if isinstance(q, Quarantined)
    )
    m, signal = config.model, config.signal
    expected = (
        f"columns {', '.join(m.feature_names)}" if m.feature_names else f"{m.n_features} features"
    )
    if signal is not None:
        expected = (
            f"rows of raw windows, {signal.window} samples x {len(signal.channels)} channels "
            f"({signal.width} values, sample-major: {', '.join(signal.channels)} of sample 0, "
            "then of sample 1, ...)"
        )
    label = f" and a {m.label_column!r} column" if config.is_classifier else ""
    return (
        f"no usable data for model {m.name}: {reasons or 'no data files'}. "
        f"Each file needs {expected}{label}."
    )


def _train(args: argparse.Namespace) -> int:
    import joblib

    from edgeloop.factory.config import load_config
    from edgeloop.factory.data import Batch, assemble
    from edgeloop.factory.run import train_run

    config = load_config(args.config)
    _check_paths(args.data)
    out = Path(args.out)
    if args.champion and Path(args.champion).resolve() == out.resolve():
        raise CliError(
            "--out must be another directory than --champion: a refused run would leave "
            "no champion behind"
        )
    champion = _load_champion(args.champion, config) if args.champion else None
    items = _read_batches(args.data, config)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("model.tflite", "estimator.joblib"):
        # A refused run must not leave an earlier run's model looking like its own.
        (out / stale).unlink(missing_ok=True)
    if not any(isinstance(i, Batch) for i in items):
        reason = _no_usable_data(config, items)
        _write_json(
            out / "run.json", {"model": config.model.name, "status": "failed", "reason": reason}
        )
        raise CliError(reason, "no_usable_data", EXIT_FAILED)
    quiet_interpreter()
    result = train_run(config, assemble(items, config), champion)
    wrote = [out / "run.json"]
    if result.promoted and result.model is not None and result.tflite is not None:
        (out / "model.tflite").write_bytes(result.tflite)
        joblib.dump(result.model, out / "estimator.joblib")
        wrote += [out / "model.tflite", out / "estimator.joblib"]
    _write_json(out / "run.json", result.record)
    if args.json:
        emit(result.record)
    else:
        gate = result.record["gate"]
        print(f"{config.model.name}: {gate['decision']}: {gate['reason']}")
        for q in result.record["data"]["quarantined"]:
            print(f"  set aside {q['key']}: {q['reason']} ({q['detail']})")
        for line in result.record["data"].get("trimmed", ()):
            print(f"  trimmed {line}")
        unseen = result.record.get("unseen_classes")
        if unseen:
            print(
                f"  warning: no training row of class {', '.join(map(str, unseen))}: the model "
                "outputs it (model.classes) but never learnt it"
            )
        print(f"  wrote {', '.join(str(p) for p in wrote)}")
        if not result.promoted:
            print("  no model.tflite: a refused candidate is not shipped")
    return EXIT_OK if result.promoted else EXIT_REFUSED


def _delta(args: argparse.Namespace) -> int:
    from edgeloop.contract import sha256_hex
    from edgeloop.delta import LayoutChanged, compress_full, make_patch

    old, new = Path(args.old).read_bytes(), Path(args.new).read_bytes()
    try:
        patch = make_patch(old, new, args.codec)
    except LayoutChanged as exc:
        raise CliError(str(exc), "layout_changed") from exc
    Path(args.out).write_bytes(patch)
    meta = {
        "codec": args.codec,
        "from_sha256": sha256_hex(old),
        "to_sha256": sha256_hex(new),
        "to_size": len(new),
        "patch_size": len(patch),
        "compressed_full_size": len(compress_full(new)),
    }
    # The sidecar lets `edgeloop patch` refuse the wrong base before applying.
    _write_json(Path(args.out + ".json"), meta)
    if args.json:
        emit(meta)
    else:
        share = meta["patch_size"] / max(1, meta["compressed_full_size"])
        print(
            f"wrote {args.out} ({args.codec}, {meta['patch_size']} B, {share:.0%} of the "
            f"{meta['compressed_full_size']} B compressed full model) and {args.out}.json"
        )
    return 0


def _patch(args: argparse.Namespace) -> int:
    from edgeloop.delta import PatchSpec, apply_checked

    sidecar = Path(args.patch + ".json")
    if not sidecar.exists():
        raise CliError(
            f"{sidecar} is missing; it names the base the patch needs", "no_sidecar", EXIT_FAILED
        )
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    spec = PatchSpec(meta["codec"], meta["from_sha256"], meta["to_sha256"], int(meta["to_size"]))
    out = apply_checked(Path(args.old).read_bytes(), Path(args.patch).read_bytes(), spec)
    Path(args.out).write_bytes(out)
    doc = {"out": args.out, "sha256": spec.to_sha256, "size": len(out)}
    if args.json:
        emit(doc)
    else:
        print(f"wrote {args.out} ({len(out)} B, sha256 {spec.to_sha256} as the patch promised)")
    return 0


def register(sub: Any, json_help: str) -> None:
    p = sub.add_parser(
        "train",
        help="train, gate and export a model from data files",
        description="Train on the data files, judge the candidate on held-out rows, and, when "
        "the gate promotes it, export model.tflite. Exit 0 promoted, 3 refused by the gate, "
        "1 no usable data or a missing file, 2 a bad config or option.",
    )
    p.add_argument("config", help="model config (TOML)")
    p.add_argument("data", nargs="+", help="data files: .npz (X, y) or .csv with a header line")
    p.add_argument(
        "--out",
        required=True,
        help="directory for run.json (every run), model.tflite and estimator.joblib (promoted)",
    )
    p.add_argument(
        "--champion",
        help="the --out directory of an earlier promoted run: warm start from it and judge "
        "against it",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(run=_train)

    p = sub.add_parser("delta", help="make a patch from OLD to NEW")
    p.add_argument("old", help="the model a device holds (.tflite)")
    p.add_argument("new", help="the model it should end up with (.tflite)")
    p.add_argument("-o", "--out", required=True, help="the patch file (PATCH.json is written too)")
    p.add_argument(
        "--codec",
        choices=CODECS,
        default="bsdiff4",
        help="bsdiff4, zstd or wdiff (same layout only) (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(run=_delta)

    p = sub.add_parser(
        "patch", help="apply a patch made by `edgeloop delta`, checking base and result"
    )
    p.add_argument("old", help="the base model (.tflite)")
    p.add_argument("patch", help="the patch (PATCH.json beside it names its base)")
    p.add_argument("-o", "--out", required=True, help="where the patched model goes")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(run=_patch)
