"""Bytes a device receives per update, over a sequence of retrains on growing data.

Each step retrains (warm-started from the last shipped model) on more data than
the one before, exactly as the factory does, and publishes it as the cloud does:
into a TUF repository (the online role signs it, the pointer names it for the
whole fleet), served by the CDN stand-in. A real device (edge.trust over the
agent's HTTP fetcher) holding the previous version is nudged and refreshes.
Everything it receives for the update is counted: the nudge (its MQTT PUBLISH
packet, carrying the signed metadata and spec that fit in one IoT unit, as the
rollout publishes it), the metadata it still downloads, the version's spec, the golden
inputs when they changed, and the patch (or the compressed full model when no
patch is smaller). The ratio's denominator is what the same update costs
without a patch: the same nudge, metadata, spec and golden inputs, plus the
compressed full model. The figure is the median over the steps.

Quality is judged on rows no model trained on: a digits test split, and for
k-means a labelled stream with planted anomalies (alarm F1). Each step also
trains a cold model on the same data, and the deployed model must stay within
0.5 points of it.
"""

from __future__ import annotations

import statistics
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score
from tuf.api.metadata import TargetFile

from bench.common import BenchRepository
from edge.download import HttpFetcher
from edge.sources import synthetic_vibration
from edge.targets import InstalledModel, Offer
from edge.trust import SignedRepository, TrustLimits
from edgeloop.contract import CODECS, IOT_MESSAGE_UNIT, Nudge, announcement
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.delta import LayoutChanged, make_patch
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.data import Dataset
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.run import train_run
from edgeloop.runtime import CompiledModel
from tests.support_http import ArtifactServer

STEPS = 9  # 9 models: 8 updates
TOLERANCE_POINTS = 0.5
QUALITY_GOAL_RATIO = 0.25
GOAL_MIN_MODEL_BYTES = 50 * 1024

# The shipped configurations, with the gate opened so every retrain ships: the
# figure is what an update costs, not how often the gate lets one through.
DIGITS = (
    (Path(__file__).parents[1] / "models" / "digits.toml")
    .read_text()
    .replace("threshold = 0.93", "threshold = 0.0")
    .replace("min_improvement = 0.005", "min_improvement = 0.0")
)
VIBRATION = ANOMALY_TOML.replace("threshold = 0.5", "threshold = 0.0").replace(
    "min_improvement = 0.002", "min_improvement = 0.0"
)


@dataclass(frozen=True)
class Variant:
    model: str  # digits | vibration
    quantize: str
    sparsify: float | None
    # Wider hidden layers than the shipped config: a model of about a megabyte.
    hidden: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)

    @property
    def name(self) -> str:
        sparse = "dense" if self.sparsify is None else f"sparse{self.sparsify:g}"
        wide = "" if self.hidden is None else "-" + "x".join(map(str, self.hidden))
        return f"{self.model}{wide}-{self.quantize}-{sparse}"

    def config(self) -> ModelConfig:
        doc = tomllib.loads(DIGITS if self.model == "digits" else VIBRATION)
        doc["export"] = {"quantize": self.quantize}
        if self.sparsify is not None:
            doc["export"]["sparsify_tolerance"] = self.sparsify
        if self.hidden is not None:
            # Fewer epochs: sklearn trains a megabyte MLP slowly, and the figure is
            # the bytes of an update, not the best accuracy.
            doc["train"]["params"].update(
                {"hidden_layer_sizes": list(self.hidden), "max_iter": 60, "warm_max_iter": 20}
            )
        return parse_config(doc)


class Device:
    """A device of the fleet, refreshing from the repository as the agent does, every
    byte it receives counted by kind."""

    def __init__(self, workdir: Path, repository: BenchRepository, cdn: ArtifactServer) -> None:
        self.repository = repository
        self.cdn = cdn
        cdn_url = cdn.base_url
        self.signed = SignedRepository(
            HttpFetcher(cdn_url + REPOSITORY_PREFIX, 10.0, 1),
            repository.root,
            workdir,
            limits=TrustLimits(min_refresh_seconds=0.0),
        )
        self.installed: InstalledModel | None = None

    def _received(self, fetch: Callable[[], object]) -> int:
        before = self.signed.bytes_received
        fetch()
        return self.signed.bytes_received - before

    def update(self, model: str, version: int) -> dict[str, int]:
        """Nudged for `version`: refresh, and fetch what installing it takes; returns the
        bytes of each part, and of the compressed full model it did not need."""
        # The nudge as the rollout publishes it: carrying what fits in one IoT unit.
        topic = announcement(model, 0)
        nudge = Nudge.filled(
            model,
            version,
            self.repository.repo().nudge_files(model, version),
            IOT_MESSAGE_UNIT - len(topic),
        )
        packet = nudge_packet_bytes(topic, nudge.to_bytes())
        asked = len(self.cdn.requests)
        offers: list[Offer] = []
        received: dict[str, int] = {}
        received["metadata"] = self._received(
            lambda: offers.append(
                self.signed.refresh(model, "bench-device", self.installed, nudge.files)
            )
        )
        (offer,) = offers
        assert offer.version == version, offer
        assert offer.model is not None
        assert offer.spec is not None
        assert offer.golden is not None
        spec, golden = offer.spec, offer.golden
        received["spec"] = self._received(lambda: self.signed.download(spec))
        received["golden"] = self._received(lambda: self.signed.download(golden, keep=True))
        packed = offer.compressed["zstd"]
        received["compressed_full"] = packed.length
        shipped = offer.patch[0] if offer.patch is not None else packed
        assert isinstance(shipped, TargetFile)  # verified here, in this process
        # A patch the nudge carried is counted as the patch, not as nudge.
        carried = len(nudge.files.get("tuf/targets/" + shipped.get_prefixed_paths()[0], b""))
        received["nudge"] = packet - carried
        received["patch"] = carried + self._received(lambda: self.signed.download(shipped))
        received["cdn_requests"] = len(self.cdn.requests) - asked
        self.installed = InstalledModel(version, offer.model.hashes["sha256"])
        return received


def nudge_packet_bytes(topic: str, payload: bytes) -> int:
    """The MQTT PUBLISH packet a device receives: fixed header (its remaining length in
    as many bytes as it takes), topic, packet id (QoS 1), payload. The band does not
    change the size."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)
    length_bytes = 1
    while remaining >= 128**length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


def _digits_data(seed: int) -> tuple[list[Dataset], np.ndarray, np.ndarray]:
    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    test, pool = order[:360], order[360:]
    steps = [
        Dataset(
            X=d.data[pool[: len(pool) * k // STEPS]].astype(np.float64),
            y=d.target[pool[: len(pool) * k // STEPS]].astype(np.int64),
            batches=(),
        )
        for k in range(1, STEPS + 1)
    ]
    return steps, d.data[test].astype(np.float32), d.target[test]


def _vibration_data(seed: int) -> tuple[list[Dataset], np.ndarray, np.ndarray]:
    stream = list(synthetic_vibration(8, 0.01, seed=seed, count=600 * STEPS))
    X = np.stack([s.x for s in stream]).astype(np.float64)
    test = list(synthetic_vibration(8, 0.02, seed=seed + 1000, count=4000))
    X_test = np.stack([s.x for s in test]).astype(np.float32)
    y_test = np.array([s.planted_anomaly for s in test])
    steps = [Dataset(X=X[: 600 * k], y=None, batches=()) for k in range(1, STEPS + 1)]
    return steps, X_test, y_test


def _quality(
    model: str, tflite: bytes, threshold: float | None, X: np.ndarray, y: np.ndarray
) -> float:
    """Accuracy (digits) or alarm F1 against the planted anomalies (vibration), in the
    device's interpreter, so what is judged is exactly what ships."""
    out = CompiledModel(tflite).predict(X)
    if model == "digits":
        return float(np.mean(out.argmax(axis=1) == y))
    assert threshold is not None
    return float(f1_score(y, out.reshape(-1) > threshold))


def run_sequence(variant: Variant, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgeloop-bytes-") as tmp:
        config = variant.config()
        repository = BenchRepository.local(Path(tmp) / "cloud", config)
        cdn = ArtifactServer()
        cdn.files = repository.files  # served as the repository writes them
        try:
            device = Device(Path(tmp) / "device", repository, cdn)
            return _sequence(variant, seed, config, repository, device)
        finally:
            cdn.stop()


def _sequence(
    variant: Variant,
    seed: int,
    config: ModelConfig,
    repository: BenchRepository,
    device: Device,
) -> dict[str, Any]:
    steps, X_test, y_test = (_digits_data if variant.model == "digits" else _vibration_data)(seed)
    champion = None
    published: dict[int, bytes] = {}
    rows = []
    for version, data in enumerate(steps, start=1):
        run = train_run(config, data, champion)
        assert run.model is not None
        assert run.tflite is not None
        cold = train_run(config, data, None)
        assert cold.model is not None
        assert cold.tflite is not None
        tflite = run.tflite
        previous = published.get(version - 1)
        plan = plan_deltas(tflite, {version - 1: previous} if previous else {})
        yardstick = plan.compressed_full_size
        repository.published = {version - 1: previous} if previous else {}
        repository.publish(version, run)
        received = device.update(config.model.name, version)
        row: dict[str, Any] = {
            "version": version,
            "rows": len(data.X),
            "start": run.record["start"],
            "kept_share": run.record.get("sparsify", {}).get("kept_share"),
            "model_bytes": len(tflite),
            "compressed_full_bytes": yardstick,
            "quality": _quality(
                variant.model, tflite, run.model.decision_threshold, X_test, y_test
            ),
            "cold_quality": _quality(
                variant.model, cold.tflite, cold.model.decision_threshold, X_test, y_test
            ),
        }
        if previous is not None:
            shipped = plan.shipped_bytes(version - 1)
            assert received["patch"] == shipped, (received, shipped)
            around = received["nudge"] + received["metadata"] + received["spec"]
            around += received["golden"]
            # Every codec's patch again, for the breakdown: the plan keeps only the best.
            codecs: dict[str, int | None] = {}
            for codec in CODECS:
                try:
                    codecs[codec] = len(make_patch(previous, tflite, codec))
                except LayoutChanged:
                    codecs[codec] = None
            row.update(
                {
                    "shipped_bytes": shipped,
                    "received": received,
                    "update_bytes": around + shipped,
                    "full_update_bytes": around + yardstick,
                    "ratio": (around + shipped) / (around + yardstick),
                    "shipped_ratio": shipped / yardstick,
                    "shipped_as": plan.patches[0].codec if plan.patches else "full (zstd)",
                    "patch_bytes_by_codec": codecs,
                }
            )
        rows.append(row)
        published[version] = tflite
        champion = run.model
    updates = [r for r in rows if "shipped_ratio" in r]
    gaps = [(r["cold_quality"] - r["quality"]) * 100 for r in rows]

    def median_of(part: str) -> float:
        return float(statistics.median(r["received"][part] for r in updates))

    return {
        "seed": seed,
        "median_ratio": statistics.median(r["ratio"] for r in updates),
        "max_ratio": max(r["ratio"] for r in updates),
        "median_patch_only_ratio": statistics.median(r["shipped_ratio"] for r in updates),
        "median_model_bytes": statistics.median(r["model_bytes"] for r in rows),
        "median_received": {
            part: median_of(part)
            for part in (
                "nudge",
                "metadata",
                "spec",
                "golden",
                "patch",
                "compressed_full",
                "cdn_requests",
            )
        },
        "mean_gap_points": statistics.fmean(gaps),
        "final_gap_points": gaps[-1],
        "steps": rows,
    }


def measure(variants: list[Variant]) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": STEPS, "variants": {}}
    for variant in variants:
        runs = [run_sequence(variant, seed) for seed in variant.seeds]
        summary = {
            "seeds": len(runs),
            "median_ratio": statistics.median(r["median_ratio"] for r in runs),
            "max_ratio": max(r["max_ratio"] for r in runs),
            "median_patch_only_ratio": statistics.median(
                r["median_patch_only_ratio"] for r in runs
            ),
            "model_bytes": statistics.median(r["median_model_bytes"] for r in runs),
            "median_received": {
                part: statistics.median(r["median_received"][part] for r in runs)
                for part in runs[0]["median_received"]
            },
            "mean_gap_points": statistics.fmean(r["mean_gap_points"] for r in runs),
            "final_gap_points": statistics.fmean(r["final_gap_points"] for r in runs),
        }
        # The 25% goal is for models of 50 KB and up; a smaller model is reported as it
        # is (what dominates its bytes is in median_received).
        summary["goal_applies"] = summary["model_bytes"] >= GOAL_MIN_MODEL_BYTES
        summary["meets_goal"] = (
            (summary["median_ratio"] <= QUALITY_GOAL_RATIO or not summary["goal_applies"])
            and summary["mean_gap_points"] <= TOLERANCE_POINTS
            and summary["max_ratio"] <= 1.0
        )
        out["variants"][variant.name] = {"summary": summary, "runs": runs}
        print(variant.name, summary, flush=True)
    return out


VARIANTS = [
    Variant("digits", "int8", 0.01),
    Variant("vibration", "int8", None),
    Variant("digits", "none", None),
    # About a megabyte: 64 → 512 → 512 → 10 in float32, one seed (each fit is slow).
    Variant("digits", "none", 0.01, hidden=(512, 512), seeds=(0,)),
]


if __name__ == "__main__":
    import sys

    model, quantize, *rest = sys.argv[1:]
    measure([Variant(model, quantize, float(rest[0]) if rest else None, seeds=(0,))])
