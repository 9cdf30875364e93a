"""`edgeloop predict`: score a data file through the device's interpreter, in the model's terms."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import numpy as np

from edgeloop.cli.errors import CliError, emit
from edgeloop.cli.model_info import ModelInfo, describe, model_path
from edgeloop.cli.quiet import quiet_interpreter
from edgeloop.cli.tables import label_text, read_table

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
    table = read_table(args.data, model.n_features, info.feature_names, info.label_column)
    out = model.predict(table.X)
    summary: dict[str, Any] = {
        "rows": len(table.X),
        "backend": model.backend,
        "columns": list(table.columns),
        "described_by": info.source,
    }
    if out.ndim == 2:
        _classify(out, info, table.labels, summary)
    else:
        _score(out, info, table.lines, summary)
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
        summary["label_column"] = info.label_column
        summary["accuracy"] = float(
            np.mean([p == t for p, t in zip(predicted, labels, strict=True)])
        )


def _score(out: np.ndarray, info: ModelInfo, lines: list[int], summary: dict[str, Any]) -> None:
    summary["score"] = [round(float(v), 6) for v in out]
    threshold = info.decision_threshold
    summary["threshold"] = threshold
    if threshold is None:
        return
    alarms = out > threshold
    summary["alarm"] = [bool(a) for a in alarms]
    summary["alarms"] = int(alarms.sum())
    summary["alarm_lines"] = [line for line, a in zip(lines, alarms, strict=True) if a]


def _as_number(label: str) -> Any:
    try:
        return int(label)
    except ValueError:
        return label


def _more(items: list[Any]) -> str:
    return f"{items[:SHOWN]}{' …' if len(items) > SHOWN else ''}"


def _print(summary: dict[str, Any]) -> None:
    print(f"{summary['rows']} rows scored with {summary['backend']}")
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
        print(f"predicted: {_more(summary['predicted'])}")
        return
    if summary["threshold"] is None:
        print("no alarm threshold known: pass --threshold, or keep run.json beside the model")
        print(f"score: {_more(summary['score'])}")
        return
    print(
        f"{summary['alarms']} of {summary['rows']} rows are alarms "
        f"(score above {summary['threshold']:.4f})"
    )
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
    p.add_argument("model", help="a .tflite file, or a run (train --out) or release directory")
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
