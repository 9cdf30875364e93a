"""Retraining on uploads: register each upload once, then one training run per model.

Records carry S3 ObjectCreated notifications. Each upload is registered as
pending (idempotently, keyed on bucket, key and eTag). Then every model with
pending uploads gets exactly one run over its accumulated data, however many
files arrived. A run that fails for a transient reason leaves its uploads
pending and reports their records for redelivery, so nothing is lost.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus

from edgeloop.contract import format_time, time_ordered_id, utc_now
from edgeloop.contract.topics import check_model_name, check_thing_name
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.containment import train_contained
from edgeloop.factory.data import (
    Batch,
    Dataset,
    NoUsableData,
    Quarantined,
    ReferenceUnusable,
    assemble,
    decoded_size,
    device_from_key,
    read_batch,
    reference_set,
)
from edgeloop.factory.handoff import Estimate, Limits, estimate_run
from edgeloop.factory.run import (
    RunResult,
    contained_dataset,
    train_batches,
    train_run_streamed,
)
from edgeloop.factory.stream import stream_chunk, trains_streamed
from functions.common.registry import Registry
from functions.common.releases import ReleaseWriter, estimator_key
from functions.common.runs import (
    HANDED_OFF,
    RECENT_RUNS,
    RunEnding,
    RunOutcome,
    TrainedRun,
    now,
)
from functions.common.storage import ObjectInfo, ObjectMissing, ObjectStore

# Uploads in a row that do not fit what is left of the budget before a run stops
# looking: the budget is full for practical purposes.
MAX_SKIPPED_IN_A_ROW = 32
# A reference set is a curated handful of files; more than this is a mistake in its prefix.
MAX_REFERENCE_FILES = 1000
# A run that did not start because the model's training job has not ended.
WAITING = "waiting_for_training_job"


def _by_device_in_turns(objects: list[ObjectInfo]) -> Iterator[ObjectInfo]:
    """Newest-first uploads reordered so devices take turns: each device's newest,
    then each device's second newest, and so on (devices in order of their newest)."""
    queues: dict[str, list[ObjectInfo]] = {}
    for obj in objects:
        queues.setdefault(device_from_key(obj.key), []).append(obj)
    for turn in itertools.zip_longest(*queues.values()):
        yield from (obj for obj in turn if obj is not None)


class PoisonRecord(ValueError):
    """A queue record that can never be processed (not an S3 notification we understand)."""


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str
    etag: str
    size: int

    @property
    def model(self) -> str:
        return self.key.split("/")[1]

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "key": self.key, "etag": self.etag, "size": self.size}


def parse_notification(body: str) -> list[Upload]:
    """The uploads in one SQS message body (an S3 event). S3's test event has none."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise PoisonRecord(f"message body is not JSON: {exc.msg}") from exc
    if not isinstance(doc, dict):
        raise PoisonRecord("message body is not an S3 event object")
    if doc.get("Event") == "s3:TestEvent":
        return []
    records = doc.get("Records")
    if not isinstance(records, list):
        raise PoisonRecord("message body has no Records list; it is not an S3 event")
    uploads = []
    for record in records:
        try:
            if not str(record["eventName"]).startswith("ObjectCreated:"):
                continue
            s3 = record["s3"]
            key = unquote_plus(s3["object"]["key"])
            upload = Upload(
                s3["bucket"]["name"],
                key,
                str(s3["object"].get("eTag", "")),
                int(s3["object"].get("size", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PoisonRecord(f"S3 record is missing {exc}") from exc
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "data":
            raise PoisonRecord(f"key {key!r} is not data/{{model}}/{{thing}}/{{id}}.{{ext}}")
        try:
            check_model_name(parts[1])
            check_thing_name(parts[2])
        except ValueError as exc:
            raise PoisonRecord(f"key {key!r}: {exc}") from exc
        uploads.append(upload)
    return uploads


@dataclass(frozen=True)
class HandOff:
    """Where a run that does not fit within `limits` goes: `start(config, run_id, keys,
    champion_key)` starts a training job on exactly those objects and names it."""

    limits: Limits
    start: Callable[[ModelConfig, str, list[str], str | None], str]
    # After this long without its state change, the schedule ends the run as failed
    # (functions.common.runs.expire_handed_off).
    deadline_seconds: float


@dataclass
class Retrainer:
    """Plain Python over the registry, the object store and the release writer."""

    store: ObjectStore
    registry: Registry
    releases: ReleaseWriter
    data_bucket: str
    registry_bucket: str
    configs: dict[str, ModelConfig]
    max_training_bytes: int
    announce: Callable[[str, int], bool]
    # Data larger than this is trained chunk by chunk from S3, for the kinds that can
    # (edgeloop.factory.stream) instead of being loaded whole.
    stream_above_bytes: int = 256 * 1024 * 1024
    # How many of the newest arrivals a run considers before the byte budget.
    arrival_window: int = 10_000
    # None keeps every run here, trained on what fits max_training_bytes.
    handoff: HandOff | None = None
    # Uploads the hand-off estimate already read, kept for the run so that a run
    # which stays here reads each object once.
    _fetched: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)

    def register(self, upload: Upload) -> dict[str, Any]:
        if upload.model not in self.configs:
            raise PoisonRecord(f"model {upload.model!r} has no config in this deployment")
        self.registry.register_upload(upload.model, upload.key, upload.etag, upload.size)
        return {"model": upload.model, "key": upload.key}

    def _select(self, config: ModelConfig) -> list[ObjectInfo]:
        """The newest uploads in the cloud's arrival order: a bounded window of them.

        From the registry's arrival log: never a listing of everything under
        the model's prefix, and never the order of the keys devices named.
        """
        return [
            ObjectInfo(record["key"], int(record["size"]), record["etag"])
            for record in self.registry.arrivals(config.model.name, self.arrival_window)
        ]

    def _read_data(
        self, config: ModelConfig, objects: list[ObjectInfo]
    ) -> tuple[list[Batch | Quarantined], int, int]:
        """Uploads read until their decoded size fills the training budget, device by device.

        The budget counts decoded bytes, not bytes on the wire: a compressed
        .npz inflates about 1,000:1, and each upload's size is read from its
        headers before it is decoded. Devices take turns, newest upload first
        within each device, so one device uploading in a loop cannot fill the
        budget and push every other device's data out (the run's per-device cap
        and screening then see everyone). An upload that does not fit what is
        left is skipped, never quarantined: it is honest data for a later run.
        Bad uploads are moved to quarantine/. Returns the items, how many were
        quarantined, and how many uploads the budget left out (skipped or not read).
        """
        items: list[Batch | Quarantined] = []
        examined = skipped = 0
        left = self.max_training_bytes
        devices = {device_from_key(obj.key) for obj in objects}
        # The same cap the run applies to rows (train.max_device_share, or
        # 1/devices when there are few), applied to the budget while reading.
        share = max(config.train.max_device_share, 1 / max(1, len(devices)))
        quota = int(share * self.max_training_bytes)
        used: dict[str, int] = {}
        skipped_in_a_row = 0
        for obj in _by_device_in_turns(objects):
            if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                break  # the budget is full for practical purposes
            examined += 1
            device = device_from_key(obj.key)
            room = min(left, quota - used.get(device, 0))
            try:
                data = self._get(obj.key)
            except ObjectMissing:
                continue  # the arrival log outlives the data (quarantined, expired)
            if decoded_size(obj.key, data, config) > room:
                skipped_in_a_row += 1
                skipped += 1
                continue
            item = self._parse(config, obj.key, data)
            if isinstance(item, Batch):
                if item.decoded_bytes > room:
                    skipped_in_a_row += 1
                    skipped += 1
                    continue
                left -= item.decoded_bytes
                used[device] = used.get(device, 0) + item.decoded_bytes
            skipped_in_a_row = 0
            items.append(item)
        left_out = skipped + len(objects) - examined
        return items, sum(isinstance(item, Quarantined) for item in items), left_out

    def _reference(self, config: ModelConfig) -> Dataset | None:
        """The platform's reference set for this model, or None when the config names none.

        Read whole from its prefix in the data bucket, where devices have no
        grant; an unreadable reference set refuses the run (train_run refuses to
        ship without one when the config names it).
        """
        prefix = config.gate.reference
        if prefix is None:
            return None
        items: list[Batch | Quarantined] = []
        for obj in itertools.islice(self.store.list(self.data_bucket, prefix), MAX_REFERENCE_FILES):
            data = self.store.get(self.data_bucket, obj.key)
            items.append(read_batch(obj.key, data, config, device="reference"))
        return reference_set(items, config)

    def _read(
        self, config: ModelConfig, key: str, quarantine: bool = True
    ) -> Batch | Quarantined | None:
        """One upload, parsed; a bad one is moved to quarantine/ (unless told not to).

        None when the object is gone (quarantined by an earlier run, or expired
        by the bucket's lifecycle rule): the arrival log outlives the data.
        """
        try:
            data = self._get(key)
        except ObjectMissing:
            return None
        return self._parse(config, key, data, quarantine)

    def _job_running(self, model: str) -> dict[str, Any] | None:
        """The model's run that a training job has not ended yet, if any."""
        for run in self.registry.runs(model, limit=RECENT_RUNS):
            if run.get("decision") == HANDED_OFF:
                return run
        return None

    @property
    def _ending(self) -> RunEnding:
        return RunEnding(
            self.store, self.registry, self.releases, self.registry_bucket, self.announce
        )

    def _get(self, key: str) -> bytes:
        data = self._fetched.pop(key, None)
        return data if data is not None else self.store.get(self.data_bucket, key)

    def _measure(
        self, config: ModelConfig, objects: list[ObjectInfo]
    ) -> tuple[int, int, list[str]]:
        """The decoded bytes of the run's selection, told from each upload's headers,
        the largest upload's, and the keys of those that still exist.

        One object in memory at a time beyond those kept for the run: what fits
        the training budget on the wire stays read for the in-function path.
        """
        total, largest, keys, kept = 0, 0, [], 0
        for obj in objects:
            try:
                data = self.store.get(self.data_bucket, obj.key)
            except ObjectMissing:
                continue
            size = decoded_size(obj.key, data, config)
            total, largest = total + size, max(largest, size)
            keys.append(obj.key)
            if kept + len(data) <= self.max_training_bytes:
                self._fetched[obj.key] = data
                kept += len(data)
        return total, largest, keys

    def _hand_off(
        self,
        handoff: HandOff,
        config: ModelConfig,
        run_id: str,
        keys: list[str],
        estimate: Estimate,
        why: str,
    ) -> RunOutcome:
        """Start the run's training job and record the run as training elsewhere.

        The pending uploads are consumed here: the job trains on them, and the
        next upload starts the next run. The job's completion records its outcome.
        """
        model = config.model.name
        champion = self.registry.champion(model)
        champion_key = None if champion is None else estimator_key(model, int(champion["version"]))
        job = handoff.start(config, run_id, keys, champion_key)
        reason = f"handed to training job {job}: {why}"
        self.registry.record_run(
            model,
            run_id,
            {
                "at": now(),
                "decision": HANDED_OFF,
                "reason": reason,
                "job": job,
                "deadline": format_time(utc_now() + timedelta(seconds=handoff.deadline_seconds)),
                "estimate": estimate.to_json(),
                "objects": len(keys),
            },
        )
        return RunOutcome(model, run_id, HANDED_OFF, reason)

    def _parse(
        self, config: ModelConfig, key: str, data: bytes, quarantine: bool = True
    ) -> Batch | Quarantined:
        item = read_batch(key, data, config)
        if quarantine and isinstance(item, Quarantined):
            self._quarantine(item)
        return item

    def _streamed(self, config: ModelConfig, objects: list[Any]) -> tuple[Any, dict[str, Any]]:
        """A chunk source over the uploads, one object in memory at a time.

        The first pass quarantines bad batches and notes the good ones; later
        passes read only those. The returned dict fills in as passes run.
        """
        seen: dict[str, Any] = {"batches": [], "quarantined": []}
        good: list[str] | None = None

        def chunks() -> Iterator[Any]:
            nonlocal good
            first = good is None
            keys = [o.key for o in objects] if good is None else good
            kept = []
            for key in keys:
                item = self._read(config, key, quarantine=first)
                if item is None:
                    continue
                if isinstance(item, Quarantined):
                    if first:
                        seen["quarantined"].append(item.to_json())
                    continue
                if first:
                    kept.append(key)
                    seen["batches"].append({"key": key, "sha256": item.sha256, "rows": item.rows})
                yield stream_chunk(item)
            if first:
                good = kept

        return chunks, seen

    def _contain(self, config: ModelConfig, culprits: Mapping[str, str]) -> list[Quarantined]:
        """The uploads the run failed with and succeeded without, quarantined with why."""
        contained = []
        for key, reason in culprits.items():
            try:
                data = self.store.get(self.data_bucket, key)
            except ObjectMissing:
                continue
            item = Quarantined(
                key,
                hashlib.sha256(data).hexdigest(),
                "training_failed",
                reason,
                device_from_key(key),
            )
            self._quarantine(item)
            contained.append(item)
        return contained

    def _quarantine(self, item: Quarantined) -> None:
        target = "quarantine/" + item.key.removeprefix("data/")
        self.store.move(self.data_bucket, item.key, target)
        self.store.put(
            self.data_bucket,
            target + ".reason.json",
            json.dumps(item.to_json(), sort_keys=True).encode(),
            content_type="application/json",
        )

    def retrain(self, model: str) -> RunOutcome | None:
        pending = self.registry.pending_uploads(model)
        if not pending:
            return None
        try:
            return self._retrain(model, pending)
        finally:
            self._fetched.clear()

    def _retrain(self, model: str, pending: list[str]) -> RunOutcome:
        config = self.configs[model]
        running = self._job_running(model)
        if running is not None:
            # Its candidate was gated against today's champion: a version published
            # meanwhile would be replaced unjudged. The uploads stay pending for the
            # run after it, which the next upload starts.
            return RunOutcome(
                model,
                str(running["run_id"]),
                WAITING,
                f"training job {running.get('job')} is still running for {model}; "
                f"{len(pending)} uploads wait for the run after it",
            )
        run_id = time_ordered_id()
        objects = self._select(config)
        if self.handoff is not None:
            decoded, largest, keys = self._measure(config, objects)
            streams = trains_streamed(config, sum(o.size for o in objects), self.stream_above_bytes)
            estimate = estimate_run(config, decoded, streamed=streams, largest_upload=largest)
            why = self.handoff.limits.exceeded(estimate)
            if why is not None and keys:
                outcome = self._hand_off(self.handoff, config, run_id, keys, estimate, why)
                self.registry.mark_trained(model, pending)
                return outcome
        champion = self.releases.champion_model(model)
        try:
            reference = self._reference(config)
        except ReferenceUnusable as exc:
            # A platform-side fault: the uploads stay pending until it is fixed.
            self.registry.record_run(
                model, run_id, {"decision": "failed", "reason": str(exc), "at": now()}
            )
            return RunOutcome(model, run_id, "failed", str(exc))
        if trains_streamed(config, sum(o.size for o in objects), self.stream_above_bytes):
            by_key = {o.key: o for o in objects}
            passes: list[dict[str, Any]] = []

            def streamed(keys: Sequence[str]) -> RunResult:
                chunks, seen = self._streamed(config, [by_key[k] for k in keys])
                passes.append(seen)
                return train_run_streamed(config, chunks, champion, reference)

            contained = train_contained(list(by_key), streamed)
            result, seen = contained.result, passes[-1]
            culprits = self._contain(config, contained.culprits)
            seen["quarantined"] = [
                *(q for p in passes for q in p["quarantined"]),
                *(q.to_json() for q in culprits),
            ]
            result.record["data"] = {**seen, "rows": result.record.get("streamed", {}).get("rows")}
            rows = int(result.record["data"]["rows"] or 0)
            quarantine_log = seen["quarantined"]
        else:
            items, quarantined, left_out = self._read_data(config, objects)
            try:
                dataset = assemble(items, config)
            except NoUsableData as exc:
                self.registry.record_run(
                    model, run_id, {"decision": "failed", "reason": str(exc), "at": now()}
                )
                self.registry.mark_trained(model, pending)
                return RunOutcome(model, run_id, "failed", str(exc), quarantined=quarantined)
            contained = train_batches(config, items, champion, reference)
            result = contained.result
            culprits = self._contain(config, contained.culprits)
            dataset = contained_dataset(config, items, contained.culprits, culprits)
            rows = dataset.rows
            quarantine_log = [q.to_json() for q in dataset.quarantined]
            if left_out:
                # A model trained on a window of the fleet's data says so in its run.
                result.record["data"]["left_out"] = {
                    "uploads": left_out,
                    "reason": (
                        f"over the function's training budget of {self.max_training_bytes} "
                        "decoded bytes (MAX_TRAINING_BYTES); they stay for later runs. A run "
                        "the hand-off estimate sends to a training job (HANDOFF_MEMORY_BYTES, "
                        "HANDOFF_SECONDS) trains on all of them"
                    ),
                }
        return self._ending.finish(
            config,
            run_id,
            TrainedRun(
                result.record, result.promoted, result.model, result.tflite, rows, quarantine_log
            ),
            consumed=pending,
        )

    def retrain_each(self, models: Iterable[str]) -> tuple[list[RunOutcome], dict[str, Exception]]:
        """One run per model, in name order, and the models whose run raised.

        A raised run is transient (throttling, a network drop, a lost race): its
        uploads stay pending and the other models still train.
        """
        outcomes: list[RunOutcome] = []
        failures: dict[str, Exception] = {}
        for model in sorted(models):
            try:
                outcome = self.retrain(model)
            except Exception as exc:  # reported by the caller, which hands the records back
                failures[model] = exc
                continue
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes, failures


def records_to_retry(
    models_of_record: Mapping[str, set[str]], failed_models: set[str], already_failed: set[str]
) -> set[str]:
    """The queue records to hand back for redelivery after the batch's retrains.

    A record fails when it failed itself or when any model it fed failed to
    retrain: its uploads stay pending, and the redelivered record is what makes
    the next invocation retrain that model again.
    """
    return already_failed | {
        record for record, models in models_of_record.items() if models & failed_models
    }
