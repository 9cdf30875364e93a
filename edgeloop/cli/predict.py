"""`edgeloop predict`: score a data file through the device's interpreter, in the model's terms."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeloop.cli.errors import CliError, emit
from edgeloop.cli.model_info import ModelInfo, describe, model_path
from edgeloop.cli.quiet import quiet_interpreter
from edgeloop.cli.tables import Table, label_text, read_table

SHOWN = 20


def _options(info: ModelInfo, args: argparse.Namespace) -> ModelInfo:
    if args.classes is not None:
        classes = tuple(label_text(c) for c in args.classes.split(",") if c.strip())
        info = replace(info, classes=classes, source=f"{info.source} and --classes")
    if args.label_column is not None:
        info = replace(info, label_column=args.label_column)
    if args.threshold is not None:
        info = replace(info, decision_threshold=args.threshold)
    return info


def _predict(args: argparse.Namespace) -> int:
    from edgeloop.runtime import CompiledModel, ModelLoadError

    path = model_path(args.model)
    info = _options(describe(path, args.config), args)
    quiet_interpreter()
    try:
        model = CompiledModel(path.read_bytes())
    except ModelLoadError as exc:
        raise CliError(f"{path}: {exc}") from exc
    table = read_table(
        args.data,
        model.n_features,
        info.feature_names,
        info.label_column,
        label_required=args.label_column is not None,
    )
    out = model.predict(table.X)
    summary: dict[str, Any] = {
        "rows": len(table.X),
        "bytes_read": Path(args.data).stat().st_size,
        "backend": model.backend,
        "columns": list(table.columns),
        "described_by": info.source,
    }
    if table.labels is None:
        summary["no_label_column"] = info.label_column
    if out.ndim == 2:
        _classify(out, info, table.labels, summary)
    else:
        _score(out, info, table, summary)
    if args.json:
        emit(summary)
    else:
        _print(summary)
    return 0


def _classify(
    out: np.ndarray, info: ModelInfo, labels: list[str] | None, summary: dict[str, Any]
) -> None:
    index = out.argmax(axis=1)
    if info.classes and len(info.classes) != out.shape[1]:
        raise CliError(
            f"{info.source} names {len(info.classes)} classes, the model has {out.shape[1]} outputs"
        )
    classes = list(info.classes) or [str(i) for i in range(out.shape[1])]
    predicted = [classes[i] for i in index]
    summary["classes"] = classes
    summary["classes_known"] = bool(info.classes)
    summary["predicted"] = [_as_number(p) for p in predicted]
    summary["confidence"] = [round(float(v), 6) for v in out.max(axis=1)]
    if labels is not None:
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            # An accuracy of 0 against labels the model cannot output says nothing.
            raise CliError(
                f"the {info.label_column!r} column holds {', '.join(map(repr, unknown[:5]))}, "
                f"which the model cannot output (its classes: {', '.join(classes)}); map the "
                "labels to the model's classes, or pass --classes",
                "string_labels" if any(not _is_number(u) for u in unknown) else "unknown_labels",
            )
        summary["label_column"] = info.label_column
        summary["accuracy"] = float(
            np.mean([p == t for p, t in zip(predicted, labels, strict=True)])
        )


def _score(out: np.ndarray, info: ModelInfo, table: Table, summary: dict[str, Any]) -> None:
    summary["score"] = [round(float(v), 6) for v in out]
    threshold = info.decision_threshold
    summary["threshold"] = threshold
    truth = None if table.labels is None else _anomaly_truth(table.labels, info.label_column)
    if truth is not None:
        summary["label_column"] = info.label_column
        summary["anomalies"] = int(truth.sum())
        if 0 < truth.sum() < len(truth):
            from sklearn.metrics import roc_auc_score

            summary["auc"] = float(roc_auc_score(truth, out))
    if threshold is None:
        return
    alarms = out > threshold
    summary["alarm"] = [bool(a) for a in alarms]
    summary["alarms"] = int(alarms.sum())
    summary["alarm_lines"] = [line for line, a in zip(table.lines, alarms, strict=True) if a]
    if truth is not None:
        positives, negatives = int(truth.sum()), int((~truth).sum())
        summary["detection_rate"] = float(alarms[truth].mean()) if positives else None
        summary["false_alarm_rate"] = float(alarms[~truth].mean()) if negatives else None


def _anomaly_truth(labels: list[str], column: str) -> np.ndarray:
    """An anomaly model's labels: 1 (or true) an anomaly, 0 (or false) normal."""
    spelled = {"0": False, "1": True, "false": False, "true": True}
    bad = sorted({v for v in labels if v.lower() not in spelled})
    if bad:
        raise CliError(
            f"the {column!r} column holds {', '.join(map(repr, bad[:5]))}; an anomaly model's "
            "labels are 1 (anomaly) and 0 (normal), or pass --label-column for another column",
            "string_labels",
        )
    return np.asarray([spelled[v.lower()] for v in labels], dtype=bool)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_number(label: str) -> Any:
    try:
        return int(label)
    except ValueError:
        return label


def _more(items: list[Any]) -> str:
    return f"{items[:SHOWN]}{' …' if len(items) > SHOWN else ''}"


def _print(summary: dict[str, Any]) -> None:
    print(
        f"{summary['rows']} rows ({summary['bytes_read']:,} bytes read) scored with "
        f"{summary['backend']}"
    )
    if "predicted" in summary:
        if not summary["classes_known"]:
            print(
                "classes unknown (no run.json or manifest.json beside the model): outputs are "
                "shown as indexes; pass --config or --classes for the class labels"
            )
        if "accuracy" in summary:
            print(
                f"accuracy against the file's {summary['label_column']!r} column: "
                f"{summary['accuracy']:.4f}"
            )
        elif "no_label_column" in summary:
            print(
                f"no accuracy: the file has no {summary['no_label_column']!r} column; pass "
                "--label-column COLUMN (or --config) to score against the file's labels"
            )
        print(f"predicted: {_more(summary['predicted'])}")
        return
    if "auc" in summary:
        print(
            f"AUC against the file's {summary['label_column']!r} column "
            f"({summary['anomalies']} anomalies): {summary['auc']:.4f}"
        )
    if summary["threshold"] is None:
        print("no alarm threshold known: pass --threshold, or keep run.json beside the model")
        print(f"score: {_more(summary['score'])}")
        return
    print(
        f"{summary['alarms']} of {summary['rows']} rows are alarms "
        f"(score above {summary['threshold']:.4f})"
    )
    if summary.get("detection_rate") is not None:
        print(f"detection rate: {summary['detection_rate']:.4f} of the labelled anomalies")
    if summary.get("false_alarm_rate") is not None:
        print(f"false alarm rate: {summary['false_alarm_rate']:.4f} of the normal rows")
    if summary["alarm_lines"]:
        print(f"alarm rows (file lines): {_more(summary['alarm_lines'])}")
    print(f"score: {_more(summary['score'])}")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="score a data file with a .tflite model through the device's interpreter",
        description="Score rows through the edge runtime (LiteRT or tflite-runtime). Columns are "
        "matched by the model's feature names; class labels, the label column and the alarm "
        "threshold come from --config, else run.json or manifest.json beside the model.",
    )
    p.add_argument(
        "model",
        help="a .tflite file, a run (train --out) or version directory, or a release (its "
        "newest version)",
    )
    p.add_argument("data", help=".csv with a header line, or .npz with X (and y)")
    p.add_argument(
        "--config",
        default=None,
        help="the model config (TOML): feature names, label column, classes",
    )
    p.add_argument(
        "--label-column",
        default=None,
        help="override the CSV column holding the true labels (default: the model config's "
        "label_column, else 'label')",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="override the class labels in output order, comma-separated (e.g. 10,20,30)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="override the alarm threshold of an anomaly model (default: from run.json/manifest)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (errors too)")
    p.set_defaults(run=_predict)
