"""The agent: receive, verify, fetch, patch, check, swap, report; score locally; upload.

Threads, each with one job:
- the MQTT link (edge.link), which calls back on announcements;
- the update worker: one update at a time, the newest announcement wins;
- the scoring loop: source → model → alarms → upload policy → disk queue;
- the uploader: disk queue → presigned POST;
- a status timer.
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge.backoff import Backoff
from edge.config import AgentConfig
from edge.download import Fetcher
from edge.link import Link
from edge.scoring import LoadedModel, Scorer
from edge.sources import Sample, csv_replay, json_lines, synthetic_vibration
from edge.store import ModelStore
from edge.updater import Updater
from edge.uploads import Uploader, UploadQueue, encode_batch
from edge.watch import SwapWatch
from edgeloop.contract import (
    AlarmEvent,
    AlarmKind,
    Health,
    StatusReport,
    Step,
    TensorSpec,
    TrustedKeys,
)
from edgeloop.runtime import CompiledModel, ModelLoadError

MAX_EVENTS_PER_SECOND = 20
RETRY_MIN_SECONDS = 5.0
RETRY_MAX_SECONDS = 600.0
DRIFT_WINDOW = 1000


def make_source(config: AgentConfig) -> Iterator[Sample]:
    s, n = config.source, config.device.n_features
    if s.kind == "synthetic":
        return synthetic_vibration(n, s.anomaly_rate, s.seed)
    if s.kind == "csv":
        assert s.path is not None
        return csv_replay(s.path, n, s.label_column, s.loop)
    return json_lines(n)


@dataclass
class Counters:
    scored: int = 0
    scored_without_model: int = 0
    alarms: int = 0
    events: int = 0
    events_suppressed: int = 0
    uploaded_rows_without_model: int = 0
    uploaded_rows_with_model: int = 0
    batches_queued: int = 0
    scoring_errors: int = 0


class Agent:
    def __init__(self, config: AgentConfig, source: Iterator[Sample] | None = None) -> None:
        self.config = config
        d = config.device
        self.store = ModelStore(config.state_dir / "models")
        self.scorer = Scorer(config.upload.low_confidence)
        self.trusted = TrustedKeys.from_pem(
            *(p.read_bytes() for p in config.artifacts.manifest_keys)
        )
        self.queue = UploadQueue(config.state_dir / "uploads", config.upload.queue_max_batches)
        self.link = Link(
            config.broker, d.thing, d.model, d.ring, self._announced, self.publish_status
        )
        self.updater = Updater(
            store=self.store,
            scorer=self.scorer,
            trusted=self.trusted,
            fetcher=Fetcher(
                config.artifacts.base_url,
                config.artifacts.timeout,
                config.artifacts.retries,
                user_agent=f"edgeloop-agent/{d.thing}",
            ),
            device_input=TensorSpec(shape=(-1, d.n_features)),
            report=self._update_step,
            max_bytes=config.artifacts.max_bytes,
            on_swapped=self._swapped,
        )
        self.uploader = Uploader(self.queue, self.link, d.model, config.upload.retry_seconds)
        self.source = source if source is not None else make_source(config)
        self.counters = Counters()
        self.step = "idle"
        self.target_version: int | None = None
        self.detail = ""
        self.versions_seen: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._pending: bytes | None = None
        self._pending_ready = threading.Condition()
        self._watch_lock = threading.Lock()
        self._watch: SwapWatch | None = None
        self._previous: LoadedModel | None = None
        self._rows: list[np.ndarray] = []
        self._labels: list[int | None] = []
        self._scores: deque[float] = deque(maxlen=DRIFT_WINDOW)
        self._rng = random.Random(config.source.seed)
        self._event_window = (0.0, 0)
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------

    def restore(self) -> None:
        """Load the persisted model, so a restart scores at once, before any network."""
        for installed in (self.store.current(), self.store.previous()):
            if installed is None:
                continue
            try:
                self.scorer.swap(LoadedModel(installed.manifest, CompiledModel(installed.model)))
                break
            except ModelLoadError:
                continue
        self.versions_seen.append((time.time(), self.version))

    def start(self, score: bool = True) -> None:
        self.restore()
        if score:
            # Everything imported and loaded so far lives as long as the process.
            # Frozen, the garbage collector stops re-scanning it: a full
            # collection over the libraries' objects holds the interpreter lock
            # for tens of milliseconds, which the scoring loop would feel as a
            # stall (`make bench`, swap).
            gc.collect()
            gc.freeze()
        self.link.start()
        jobs = [
            ("updates", self._update_worker),
            ("uploads", lambda: self.uploader.run(self._stop)),
            ("status", self._status_timer),
        ]
        if score:
            jobs.append(("scoring", self._scoring_loop))
        for name, job in jobs:
            thread = threading.Thread(
                target=job, name=f"{self.config.device.thing}-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._pending_ready:
            self._pending_ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self.flush_uploads()
        self.publish_status()
        self.link.stop()

    @property
    def version(self) -> int | None:
        model = self.scorer.model
        return model.version if model is not None else None

    # --- updates ---------------------------------------------------------------------

    def _announced(self, raw: bytes) -> None:
        with self._pending_ready:
            self._pending = raw  # a newer announcement replaces one not yet started
            self._pending_ready.notify_all()

    def _update_worker(self) -> None:
        backoff = Backoff(RETRY_MIN_SECONDS, RETRY_MAX_SECONDS)
        while not self._stop.is_set():
            with self._pending_ready:
                while self._pending is None and not self._stop.is_set():
                    self._pending_ready.wait(0.5)
                raw, self._pending = self._pending, None
            if raw is None:
                continue
            result = self.updater.handle(raw)
            if not result.retryable:
                backoff.reset()
                continue
            # The CDN or the disk failed: try the same announcement again after a
            # jittered, growing pause, unless a newer one arrives first.
            if self._stop.wait(backoff.next()):
                return
            with self._pending_ready:
                if self._pending is None:
                    self._pending = raw

    def _update_step(self, step: str, version: int | None, detail: str) -> None:
        self.step, self.target_version, self.detail = step, version, detail
        if step in ("succeeded", "failed", "already_installed", "swapped"):
            self.versions_seen.append((time.time(), self.version))
        self.publish_status()

    def _swapped(self, new: LoadedModel, previous: LoadedModel | None) -> None:
        stats = new.manifest.stats
        with self._watch_lock:
            self._previous = previous
            self._watch = SwapWatch(
                version=new.version,
                window=self.config.watch.window,
                expected_alarm_rate=stats.get("alarm_rate") if new.is_anomaly_detector else None,
                max_factor=self.config.watch.max_alarm_factor,
                min_margin=self.config.watch.min_alarm_margin,
            )
        self._scores.clear()

    def _roll_back(self, watch: SwapWatch, reason: str) -> None:
        with self._watch_lock:
            previous, self._previous, self._watch = self._previous, None, None
        self.scorer.swap(previous)
        self.store.rollback(watch.version)
        self._update_step("rolled_back", watch.version, reason)

    # --- scoring and uploads ---------------------------------------------------------

    def process(self, sample: Sample) -> bool:
        """Score one sample, raise its alarm, apply the upload policy. Returns the alarm."""
        x = sample.x.reshape(1, -1)
        with self._watch_lock:
            watch = self._watch
        try:
            scored = self.scorer.score(x)
        except (FloatingPointError, ValueError, RuntimeError) as exc:
            self.counters.scoring_errors += 1
            if watch is not None:
                reason = watch.observe(1, 0, errors=1)
                if reason:
                    self._roll_back(watch, f"{reason}: {exc}")
            scored = None
        self.counters.scored += 1
        if scored is None:
            self.counters.scored_without_model += 1
        alarm = False
        if scored is not None:
            alarm = bool(scored.alarms[0])
            value = float(
                scored.outputs[0] if scored.outputs.ndim == 1 else scored.outputs[0].max()
            )
            self._scores.append(value)
            if alarm:
                self.counters.alarms += 1
                self._publish_event(scored.version, value, scored.outputs)
            if watch is not None and watch.version == scored.version:
                reason = watch.observe(1, int(alarm))
                if reason:
                    self._roll_back(watch, reason)
                elif watch.done:
                    with self._watch_lock:
                        if self._watch is watch:
                            self._watch = None
        self._upload_policy(sample, has_model=scored is not None, alarm=alarm)
        return alarm

    def _upload_policy(self, sample: Sample, has_model: bool, alarm: bool) -> None:
        if has_model and not alarm and self._rng.random() >= self.config.upload.sample_rate:
            return
        self._rows.append(sample.x)
        self._labels.append(sample.label)
        if has_model:
            self.counters.uploaded_rows_with_model += 1
        else:
            self.counters.uploaded_rows_without_model += 1
        if len(self._rows) >= self.config.upload.batch_rows:
            self.flush_uploads()

    def flush_uploads(self) -> None:
        if not self._rows:
            return
        X = np.stack(self._rows).astype(np.float32)
        labelled = all(label is not None for label in self._labels)
        y = np.asarray(self._labels, dtype=np.int64) if labelled else None
        self._rows, self._labels = [], []
        self.queue.put(encode_batch(X, y))
        self.counters.batches_queued += 1

    def _publish_event(self, version: int, value: float, outputs: np.ndarray) -> None:
        second, count = self._event_window
        now = time.monotonic()
        if now - second >= 1.0:
            second, count = now, 0
        if count >= MAX_EVENTS_PER_SECOND:
            self.counters.events_suppressed += 1
            self._event_window = (second, count)
            return
        self._event_window = (second, count + 1)
        kind = AlarmKind.ANOMALY if outputs.ndim == 1 else AlarmKind.LOW_CONFIDENCE
        event = AlarmEvent.now(self.config.device.model, version, kind, value)
        self.link.publish(self.link.topics.events, event.to_bytes())
        self.counters.events += 1

    def _scoring_loop(self) -> None:
        rate = self.config.source.rate
        interval = 1.0 / rate if rate > 0 else 0.0
        next_at = time.monotonic()
        for sample in self.source:
            if self._stop.is_set():
                return
            self.process(sample)
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)

    # --- status ----------------------------------------------------------------------

    def drift(self) -> dict[str, float]:
        model = self.scorer.model
        if model is None or not self._scores:
            return {}
        scores = np.fromiter(self._scores, dtype=np.float64)
        figures = {"score_mean": float(scores.mean()), "samples": float(len(scores))}
        stats = model.manifest.stats
        if "score_mean" in stats and stats.get("score_std"):
            figures["score_mean_shift"] = (figures["score_mean"] - stats["score_mean"]) / stats[
                "score_std"
            ]
        if model.manifest.decision_threshold is not None and model.is_anomaly_detector:
            figures["alarm_rate"] = float(np.mean(scores > model.manifest.decision_threshold))
            if "alarm_rate" in stats:
                figures["expected_alarm_rate"] = stats["alarm_rate"]
        return figures

    def status(self) -> StatusReport:
        version = self.version
        if version is None:
            health = Health.NO_MODEL
        elif Step(self.step).failed:
            health = Health.DEGRADED
        else:
            health = Health.HEALTHY
        return StatusReport(
            model=self.config.device.model,
            version=version,
            health=health,
            step=Step(self.step),
            ring=self.config.device.ring,
            target_version=self.target_version,
            detail=self.detail[:1024],
            queue_depth=len(self.queue),
            dropped_batches=self.queue.dropped,
            drift=self.drift(),
        )

    def publish_status(self) -> None:
        self.link.publish(self.link.topics.status, self.status().to_bytes())

    def _status_timer(self) -> None:
        while not self._stop.wait(self.config.status_interval):
            self.publish_status()
