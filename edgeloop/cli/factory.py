"""`edgeloop train | predict | delta | patch`: the model factory on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgeloop.contract import CODECS

EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_REFUSED = 3


def _write_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _train(args: argparse.Namespace) -> int:
    import joblib

    from edgeloop.factory.config import load_config
    from edgeloop.factory.data import NoUsableData, load_files
    from edgeloop.factory.run import train_run

    config = load_config(args.config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    champion = None
    if args.champion:
        # estimator.joblib is a pickle: only load champions this registry wrote.
        champion = joblib.load(Path(args.champion) / "estimator.joblib")
    try:
        dataset = load_files(args.data, config)
    except NoUsableData as exc:
        _write_json(
            out / "run.json", {"model": config.model.name, "status": "failed", "reason": str(exc)}
        )
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    result = train_run(config, dataset, champion)
    if result.model is not None and result.tflite is not None:
        (out / "model.tflite").write_bytes(result.tflite)
        joblib.dump(result.model, out / "estimator.joblib")
    _write_json(out / "run.json", result.record)
    if args.json:
        print(json.dumps(result.record, sort_keys=True))
    else:
        gate = result.record["gate"]
        quarantined = result.record["data"]["quarantined"]
        print(f"{config.model.name}: {gate['decision']}: {gate['reason']}")
        for q in quarantined:
            print(f"  quarantined {q['key']}: {q['reason']} ({q['detail']})")
        print(f"  wrote {out}/run.json" + (f", {out}/model.tflite" if result.tflite else ""))
    return EXIT_PROMOTED if result.promoted else EXIT_REFUSED


def _read_rows(path: str, label_column: str) -> tuple[Any, Any]:
    import numpy as np

    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as npz:
            return npz["X"], (npz["y"] if "y" in npz.files else None)
    header = Path(path).read_text(encoding="utf-8").splitlines()[0].split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if label_column in header:
        col = header.index(label_column)
        return np.delete(table, col, axis=1), table[:, col]
    return table, None


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from edgeloop.runtime import CompiledModel

    model = CompiledModel(Path(args.model).read_bytes())
    X, y = _read_rows(args.data, args.label_column)
    out = model.predict(X)
    summary: dict[str, Any] = {"rows": len(X), "backend": model.backend}
    if out.ndim == 2:
        predicted = out.argmax(axis=1)
        summary["predicted"] = predicted.tolist()
        summary["confidence"] = [round(float(v), 6) for v in out.max(axis=1)]
        if y is not None:
            summary["accuracy"] = float(np.mean(predicted == np.asarray(y)))
    else:
        summary["score"] = [round(float(v), 6) for v in out]
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['rows']} rows scored with {model.backend}")
        if "accuracy" in summary:
            print(f"accuracy against the file's labels: {summary['accuracy']:.4f}")
        key = "predicted" if "predicted" in summary else "score"
        print(f"{key}: {summary[key][:20]}{' …' if len(X) > 20 else ''}")
    return 0


def _delta(args: argparse.Namespace) -> int:
    from edgeloop.contract import sha256_hex
    from edgeloop.delta import LayoutChanged, compress_full, make_patch

    old, new = Path(args.old).read_bytes(), Path(args.new).read_bytes()
    try:
        patch = make_patch(old, new, args.codec)
    except LayoutChanged as exc:
        print(f"edgeloop delta: {exc}", file=sys.stderr)
        return 2
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
    print(json.dumps(meta))
    return 0


def _patch(args: argparse.Namespace) -> int:
    from edgeloop.delta import PatchSpec, apply_checked

    sidecar = Path(args.patch + ".json")
    if not sidecar.exists():
        print(f"error: {sidecar} is missing; it names the base the patch needs", file=sys.stderr)
        return EXIT_FAILED
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    spec = PatchSpec(meta["codec"], meta["from_sha256"], meta["to_sha256"], int(meta["to_size"]))
    out = apply_checked(Path(args.old).read_bytes(), Path(args.patch).read_bytes(), spec)
    Path(args.out).write_bytes(out)
    print(json.dumps({"out": args.out, "sha256": spec.to_sha256, "size": len(out)}))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train, gate and export a model from data batches")
    p.add_argument("config", help="model config (TOML)")
    p.add_argument("data", nargs="+", help="batches: .npz (X, y) or .csv with a header")
    p.add_argument(
        "--out", required=True, help="directory for model.tflite, estimator.joblib, run.json"
    )
    p.add_argument("--champion", help="directory of the current champion's estimator.joblib")
    p.add_argument("--json", action="store_true", help="print the run record as JSON")
    p.set_defaults(run=_train)

    p = sub.add_parser("predict", help="score data with a .tflite model through the edge runtime")
    p.add_argument("model")
    p.add_argument("data", help=".npz with X (and y) or .csv with a header")
    p.add_argument("--label-column", default="label", help="CSV column holding labels, if any")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_predict)

    p = sub.add_parser("delta", help="make a patch from OLD to NEW")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--codec", choices=CODECS, default="bsdiff4")
    p.set_defaults(run=_delta)

    p = sub.add_parser(
        "patch", help="apply a patch made by `edgeloop delta`, checking base and result"
    )
    p.add_argument("old")
    p.add_argument("patch")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(run=_patch)
