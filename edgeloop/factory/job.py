"""The training entry point: the functions image run as a SageMaker training job.

`python3 -m edgeloop.factory.job` (the image's alternate command) honours
SageMaker's container contract under `/opt/ml` (EDGELOOP_ML_ROOT moves it, for
the local cloud and the tests):

    input/config/hyperparameters.json   the model config and the run id
    input/data/train/                   the run's uploads, at their keys (a manifest channel)
    input/data/champion/                the champion's estimator, when there is one
    input/data/reference/               the platform's reference set, when the config names one
    model/                              what it writes: record.json, and when a candidate
                                        was exported model.tflite and estimator.joblib
    output/failure                      why it failed, when it did (and it exits 1)

It trains as the retrain function does, with the same factory code: uploads
parsed and checked (read_batch), a batch that breaks the fit left out
(train_batches), a model that can stream chunk by chunk above the streaming
threshold (train_run_streamed), a model that cannot refused when its data would
not fit the instance's memory (CannotStream), then the gate, the export and the export check
(edgeloop.factory.run). Publishing is not its business: the completion
function publishes what it wrote, as the retrain function publishes its own runs.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeloop.factory.config import ModelConfig
from edgeloop.factory.data import (
    Batch,
    Dataset,
    Quarantined,
    decoded_size,
    read_batch,
    reference_set,
)
from edgeloop.factory.handoff import (
    CHAMPION_CHANNEL,
    DATA_CHANNEL,
    REFERENCE_CHANNEL,
    RUN_ID,
    STREAM_ABOVE,
    HandOffError,
    config_from_hyperparameters,
    estimate_run,
)
from edgeloop.factory.run import (
    RunResult,
    contained_dataset,
    train_batches,
    train_run_streamed,
)
from edgeloop.factory.stream import (
    CannotStream,
    stream_chunk,
    streaming_refusal,
    trains_streamed,
)
from edgeloop.factory.training import TrainedModel

ML_ROOT_ENV = "EDGELOOP_ML_ROOT"
DEFAULT_ML_ROOT = "/opt/ml"
# SageMaker reports the first 1,024 characters of output/failure as the FailureReason.
MAX_FAILURE_CHARS = 1024
# The memory an in-memory run may plan on, in bytes (hyperparameter; default: the
# instance's physical memory).
MEMORY_BYTES = "edgeloop.memory_bytes"
RECORD = "record.json"
TFLITE = "model.tflite"
ESTIMATOR = "estimator.joblib"
OUTPUT_FILES = (RECORD, TFLITE, ESTIMATOR)


@dataclass(frozen=True)
class MlPaths:
    """SageMaker's container layout under one root."""

    root: Path

    @classmethod
    def from_env(cls) -> MlPaths:
        return cls(Path(os.environ.get(ML_ROOT_ENV) or DEFAULT_ML_ROOT))

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


@dataclass(frozen=True)
class JobOutcome:
    """What a job wrote to model/: the run record and, when exported, the candidate."""

    record: dict[str, Any]
    promoted: bool
    tflite: bytes | None = None
    estimator: bytes | None = None

    @classmethod
    def read(cls, model_dir: Path) -> JobOutcome:
        """A job's model/ directory as it wrote it."""
        return cls.of_files(
            {n: (model_dir / n).read_bytes() for n in OUTPUT_FILES if (model_dir / n).exists()}
        )

    @classmethod
    def of_files(cls, files: Mapping[str, bytes]) -> JobOutcome:
        """What a job wrote, by file name (the completion function reads them from the
        job's model.tar.gz without unpacking it to disk)."""
        if RECORD not in files:
            raise HandOffError(f"the job's model artefact has no {RECORD}")
        try:
            doc = json.loads(files[RECORD])
        except json.JSONDecodeError as exc:
            raise HandOffError(f"the job's {RECORD} is not JSON: {exc.msg}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("record"), dict):
            raise HandOffError(f"the job's {RECORD} has no run record")
        return cls(
            record=doc["record"],
            promoted=bool(doc.get("promoted")),
            tflite=files.get(TFLITE),
            estimator=files.get(ESTIMATOR),
        )

    def trained(self) -> TrainedModel | None:
        if self.estimator is None:
            return None
        import joblib

        model: TrainedModel = joblib.load(io.BytesIO(self.estimator))
        return model


def _files(directory: Path) -> list[Path]:
    """Every file below a channel, in key order (a missing channel has none)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file())


def _key(path: Path, channel: Path) -> str:
    """A channel file's S3 key: SageMaker keeps a manifest's keys as paths."""
    return path.relative_to(channel).as_posix()


def _champion(paths: MlPaths) -> TrainedModel | None:
    found = _files(paths.channel(CHAMPION_CHANNEL))
    if not found:
        return None
    import joblib

    model: TrainedModel = joblib.load(found[0])
    return model


def _reference(paths: MlPaths, config: ModelConfig) -> Dataset | None:
    channel = paths.channel(REFERENCE_CHANNEL)
    files = _files(channel)
    if config.gate.reference is None or not files:
        return None  # train_run refuses a config that names a reference set it lacks
    items = [read_batch(_key(p, channel), p.read_bytes(), config, "reference") for p in files]
    return reference_set(items, config)


def _streamed(
    config: ModelConfig,
    channel: Path,
    files: Sequence[Path],
    champion: TrainedModel | None,
    reference: Dataset | None,
) -> tuple[RunResult, int, list[dict[str, Any]]]:
    """A model trained from the channel's files, one file in memory at a time."""
    quarantined: dict[str, dict[str, Any]] = {}

    def chunks() -> Iterator[Any]:
        for path in files:
            item = read_batch(_key(path, channel), path.read_bytes(), config)
            if isinstance(item, Quarantined):
                quarantined[item.key] = item.to_json()
                continue
            yield stream_chunk(item)

    result = train_run_streamed(config, chunks, champion, reference)
    rows = int(result.record.get("streamed", {}).get("rows") or 0)
    return result, rows, list(quarantined.values())


def _physical_memory() -> int:
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _refuse_if_too_big(
    config: ModelConfig, channel: Path, files: Sequence[Path], hyperparameters: Mapping[str, Any]
) -> None:
    """Refuse, before reading the data, a run that cannot stream and would not fit in
    memory: the job would otherwise be killed mid-fit, or train on a silent window."""
    why = streaming_refusal(config)
    if why is None:
        return
    limit = int(hyperparameters.get(MEMORY_BYTES) or _physical_memory())
    decoded = sum(decoded_size(_key(p, channel), p.read_bytes(), config) for p in files)
    need = estimate_run(config, decoded).memory_bytes
    if need > limit:
        raise CannotStream(
            f"{why}; its {decoded / 2**20:,.0f} MiB of decoded uploads need an estimated "
            f"{need / 2**20:,.0f} MiB in memory, above the {limit / 2**20:,.0f} MiB this "
            "instance has: train it on a larger instance type or on fewer uploads"
        )


def run_job(paths: MlPaths) -> JobOutcome:
    """Train on the channels under `paths` and write the outcome to its model/ directory."""
    try:
        hyperparameters = json.loads(paths.hyperparameters.read_text())
    except FileNotFoundError:
        raise HandOffError(f"no hyperparameters at {paths.hyperparameters}") from None
    if not isinstance(hyperparameters, dict):
        raise HandOffError("hyperparameters.json is not an object")
    config = config_from_hyperparameters(hyperparameters)
    channel = paths.channel(DATA_CHANNEL)
    files = _files(channel)
    if not files:
        raise HandOffError(f"the {DATA_CHANNEL} channel holds no uploads")
    champion = _champion(paths)
    reference = _reference(paths, config)
    stream_above = int(hyperparameters.get(STREAM_ABOVE, 256 * 1024 * 1024))
    wire = sum(p.stat().st_size for p in files)
    if trains_streamed(config, wire, stream_above):
        result, rows, quarantined = _streamed(config, channel, files, champion, reference)
    else:
        if wire > stream_above:
            _refuse_if_too_big(config, channel, files, hyperparameters)
        items: list[Batch | Quarantined] = [
            read_batch(_key(p, channel), p.read_bytes(), config) for p in files
        ]
        contained = train_batches(config, items, champion, reference)
        result = contained.result
        # The job cannot move uploads (its role reads data/ only): the batches that
        # broke the fit are named in the record, as the function names those it moves.
        culprits = [
            Quarantined(i.key, i.sha256, "training_failed", contained.culprits[i.key], i.device)
            for i in items
            if isinstance(i, Batch) and i.key in contained.culprits
        ]
        dataset = contained_dataset(config, items, contained.culprits, culprits)
        rows = dataset.rows
        quarantined = [q.to_json() for q in dataset.quarantined]
    estimator = None
    if result.model is not None:
        import joblib

        buffer = io.BytesIO()
        joblib.dump(result.model, buffer)
        estimator = buffer.getvalue()
    outcome = JobOutcome(
        record={
            **result.record,
            "run_id": hyperparameters.get(RUN_ID),
            "rows": rows,
            "quarantined": quarantined,
        },
        promoted=result.promoted,
        tflite=result.tflite,
        estimator=estimator,
    )
    _write(paths, outcome)
    return outcome


def _write(paths: MlPaths, outcome: JobOutcome) -> None:
    paths.model.mkdir(parents=True, exist_ok=True)
    doc = {"record": outcome.record, "promoted": outcome.promoted}
    (paths.model / RECORD).write_text(json.dumps(doc, sort_keys=True))
    if outcome.tflite is not None:
        (paths.model / TFLITE).write_bytes(outcome.tflite)
    if outcome.estimator is not None:
        (paths.model / ESTIMATOR).write_bytes(outcome.estimator)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; on any failure write the reason where SageMaker reads it and exit 1.

    Arguments are ignored: SageMaker passes `train` to an image without its own
    entry point, and this one needs nothing from the command line.
    """
    paths = MlPaths.from_env()
    try:
        run_job(paths)
    except Exception as exc:  # every failure is reported, then the job fails
        reason = f"{type(exc).__name__}: {exc}"[:MAX_FAILURE_CHARS]
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(reason)
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
