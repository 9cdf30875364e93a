"""What the command line knows about a model beyond its bytes, and where it learnt it.

A .tflite file holds numbers in and numbers out. The names of its input
columns, the label column of its data, its class labels and its alarm
threshold live in the model config, the run record (`run.json`, written by
`edgeloop train`) or the manifest (`manifest.json`, written by `edgeloop
release`). They are read from whichever is at hand, in that order of
preference after explicit command-line options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeloop.cli.errors import CliError


@dataclass(frozen=True)
class ModelInfo:
    kind: str | None = None  # kmeans_anomaly, mlp_classifier, ... (None: unknown)
    feature_names: tuple[str, ...] = ()
    label_column: str = "label"
    classes: tuple[str, ...] = ()  # output i is class classes[i]
    decision_threshold: float | None = None
    source: str = "the model file alone"

    @property
    def is_anomaly_detector(self) -> bool:
        return self.kind == "kmeans_anomaly"


def model_path(path: str) -> Path:
    """A .tflite file; a run or version directory holding model.tflite; or a release
    (`edgeloop release make` OUT), whose newest version of its one model is taken."""
    p = Path(path)
    if p.is_dir() and not (p / "model.tflite").is_file():
        p = _newest_released(p) or p
    if p.is_dir():
        p = p / "model.tflite"
    if not p.is_file():
        raise CliError(f"{p}: no such model file (pass a .tflite file or a run/release directory)")
    return p


def _newest_released(release: Path) -> Path | None:
    """The newest version directory of a release's one model, None if it is no release."""
    found = [
        q.parent
        for q in release.glob("registry/*/versions/*/model.tflite")
        if q.parent.name.isdigit()
    ]
    if not found:
        return None
    models = sorted({q.parents[1].name for q in found})
    if len(models) > 1:
        raise CliError(
            f"{release} releases {', '.join(models)}: pass one version's directory, "
            f"e.g. {release}/registry/{models[0]}/versions/N"
        )
    return max(found, key=lambda q: int(q.name))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CliError(f"{path}: not readable as JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise CliError(f"{path}: expected a JSON object")
    return doc


def from_config_section(section: dict[str, Any], source: str) -> ModelInfo:
    return ModelInfo(
        kind=section.get("kind"),
        feature_names=tuple(section.get("feature_names") or ()),
        label_column=section.get("label_column") or "label",
        classes=tuple(str(c) for c in section.get("classes") or ()),
        source=source,
    )


def from_run_record(doc: dict[str, Any], source: str) -> ModelInfo:
    info = from_config_section(doc.get("config", {}).get("model", {}), source)
    outputs = tuple(str(n) for n in doc.get("output_names") or ())
    if info.kind != "kmeans_anomaly" and outputs:
        # The exported output order, which holds even when the config declared no classes.
        info = replace(info, classes=outputs)
    return replace(info, decision_threshold=doc.get("decision_threshold"))


def from_manifest(doc: dict[str, Any], source: str) -> ModelInfo:
    output = doc.get("output") or {}
    is_classifier = len(output.get("shape") or ()) == 2
    return ModelInfo(
        kind=None if is_classifier else "kmeans_anomaly",
        feature_names=tuple((doc.get("input") or {}).get("names") or ()),
        classes=tuple(str(n) for n in output.get("names") or ()) if is_classifier else (),
        decision_threshold=doc.get("decision_threshold"),
        source=source,
    )


def describe(model: Path, config: str | None) -> ModelInfo:
    """The best description at hand: --config, else run.json, else manifest.json beside it."""
    if config is not None:
        from edgeloop.factory.config import load_config

        loaded = load_config(config)
        info = from_config_section(loaded.to_dict()["model"], config)
        # The config has no threshold; the run record or the version's manifest
        # beside the model does.
        for beside in (model.parent / "run.json", model.parent / "manifest.json"):
            if beside.is_file():
                threshold = _read_json(beside).get("decision_threshold")
                return replace(info, decision_threshold=threshold, source=f"{config} and {beside}")
        return info
    run = model.parent / "run.json"
    if run.is_file():
        return from_run_record(_read_json(run), str(run))
    manifest = model.parent / "manifest.json"
    if manifest.is_file():
        return from_manifest(_read_json(manifest), str(manifest))
    return ModelInfo()
