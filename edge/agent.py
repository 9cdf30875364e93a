"""The agent: refresh, verify, fetch, patch, check, swap, report; score locally; upload.

This class only wires the parts together. Threads, each running one part:
- the MQTT link (edge.link), which calls back on nudges;
- the update worker (edge.update_worker): one refresh at a time, nudges coalesced;
- local scoring (edge.local_scoring): source → model → alarms → upload policy;
- the uploader (edge.uploads): disk queue → presigned POST;
- the status timer (edge.status).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from edge.alarms import AlarmEvents
from edge.channel_sources import readings_from_config
from edge.config import AgentConfig, VerifyIn
from edge.counters import Counters
from edge.download import HttpFetcher
from edge.drift import DriftWindow
from edge.link import Link
from edge.local_scoring import LocalScoring
from edge.model_sources import model_sources
from edge.probe import ChildProcessProbe
from edge.scoring import LoadedModel, Scorer
from edge.sources import Sample, SkippedLines, source_from_config
from edge.status import StatusBoard
from edge.store import ModelStore
from edge.supervisor import Supervisor
from edge.targets import Repository
from edge.trust_child import ChildRepository
from edge.update_worker import UpdateWorker
from edge.updater import ModelProbe, Updater
from edge.upload_policy import UploadPolicy
from edge.uploads import Uploader, UploadQueue
from edge.watch import SwapGuard
from edge.windowing import Reading, WindowCounts, Windower, installed_window, windowed
from edgeloop.contract import (
    ContractError,
    StatusReport,
    Step,
    TensorSpec,
    check_input,
)
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.runtime import CompiledModel, ModelLoadError

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        source: Iterator[Sample] | None = None,
        http: HttpFetcher | None = None,
        probe: ModelProbe | None = None,
        readings: Iterable[Reading] | None = None,
    ) -> None:
        """`readings` stands in for a raw source's sensor (source.channels); `source`
        for a feature source; `http` for the CDN client, an object that lives in this
        process, so with one the agent verifies here whatever `[trust] verify_in` says."""
        in_child = http is None and config.trust.verify_in is VerifyIn.CHILD
        self.config = config
        self._stop = threading.Event()
        d = config.device
        self.counters = Counters()
        self.store = ModelStore(config.state_dir / "models")
        self.scorer = Scorer(config.upload.low_confidence)
        self.queue = UploadQueue(config.state_dir / "uploads", config.upload.queue_max_batches)
        self.drift = DriftWindow()
        self.board = StatusBoard(d.model, self.scorer, self.queue, self.drift, self._status)
        http = http or HttpFetcher(
            config.artifacts.base_url + REPOSITORY_PREFIX,
            config.artifacts.timeout,
            config.artifacts.retries,
            user_agent=f"edgeloop-agent/{d.thing}",
            min_bytes_per_second=config.artifacts.min_bytes_per_second,
        )
        self.repository = _repository(config, http, self.store.staging, in_child)
        self.guard = SwapGuard(self.scorer, self.store, config.watch, self.board.record)
        self.updater = Updater(
            model=d.model,
            thing=d.thing,
            store=self.store,
            scorer=self.scorer,
            repository=self.repository,
            sources=model_sources(
                self.repository,
                config.artifacts.max_bytes,
                held=lambda: (self.store.previous(), self.store.current()),
            ),
            device_input=TensorSpec(shape=(-1, d.n_features), names=d.feature_names),
            report=self.board.record,
            max_bytes=config.artifacts.max_bytes,
            on_swapped=self._swapped,
            probe=probe or ChildProcessProbe(timeout=config.artifacts.check_timeout),
            raw_source=config.source.window_spec() if config.source.raw else None,
        )
        self.updates = UpdateWorker(
            self.updater,
            self.board.record,
            min_interval=config.trust.min_refresh_seconds,
            every=config.trust.refresh_interval,
        )
        self.link = Link(config.broker, d.thing, d.model, self.updates.nudged, self.board.publish)
        self.uploader = Uploader(self.queue, self.link, d.model, config.upload.retry_seconds)
        self.uploads = UploadPolicy(config.upload, self.queue, self.counters, config.source.seed)
        self.scoring = LocalScoring(
            self.scorer,
            self.guard,
            AlarmEvents(d.model, self._event, self.counters),
            self.drift,
            self.uploads,
            self.counters,
        )
        self.skipped = SkippedLines()
        self.board.skipped = self.skipped
        installed = self.store.current()
        names = d.feature_names or (installed.manifest.input.names if installed else ())
        self.windows = WindowCounts()
        self.board.windows = self.windows
        if config.source.raw:
            spec = installed_window(self.scorer, config.source.window_spec())
            self.windower = Windower(spec, self.windows, config.source.max_gap)
            if readings is None:
                readings = readings_from_config(config, self.skipped, self._stop)
            source = windowed(readings, self.windower)
        elif source is None:
            source = source_from_config(config, self.skipped, names)
        self.source = source
        self.supervisor = Supervisor(d.thing, self.board.fail)

    # --- lifecycle -------------------------------------------------------------------

    def restore(self) -> None:
        """Load the persisted model, so a restart scores at once, before any network."""
        try:
            self._restore()
        finally:
            self.repository.release()  # the kept metadata was asked; its child may go

    def _restore(self) -> None:
        for installed in (self.store.current(), self.store.previous()):
            if installed is None:
                continue
            # The store checks the model against its own manifest; both are files
            # anyone with the disk can edit, so the signed metadata has the last word.
            vouched = self.repository.vouches_for(
                self.config.device.model, installed.version, installed.model
            )
            if vouched is False:
                log.error(
                    "event=stored_model_refused version=%s reason=%r",
                    installed.version,
                    "its bytes are not what the signed metadata this device verified says",
                )
                continue
            if vouched is None:
                log.warning(
                    "event=stored_model_unlisted version=%s; the kept metadata no longer "
                    "lists it, so it serves until the next refresh",
                    installed.version,
                )
            try:
                # The config may have changed under a kept model: a raw source cannot
                # feed a feature model, nor a signal model windowing other channels.
                check_input(installed.manifest, self.updater.device_input, self.updater.raw_source)
            except ContractError as exc:
                log.error(
                    "event=stored_model_refused version=%s reason=%r", installed.version, str(exc)
                )
                continue
            # Marked while it loads: a model that kills the process at boot is
            # rolled back on the next one instead of crashing every boot.
            self.store.attempt(installed.version)
            try:
                self.scorer.swap(LoadedModel(installed.manifest, CompiledModel(installed.model)))
                break
            except ModelLoadError:
                continue
            finally:
                self.store.attempt_over()
        self.board.note_version()
        log.debug("event=restored version=%s", self.version)

    def start(self, score: bool = True) -> None:
        if not self.board.versions_seen:  # not restored by the caller yet
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
        jobs: list[tuple[str, Callable[[], None]]] = [
            ("updates", lambda: self.updates.run(self._stop)),
            ("uploads", lambda: self.uploader.run(self._stop)),
            ("batches", lambda: self.uploads.run(self._stop)),
            (
                "status",
                lambda: self.board.run(
                    self.config.status_interval, self.config.status_check, self._stop
                ),
            ),
        ]
        if score:
            # A sensor sets its own pace; pacing its windows would only drop behind it.
            rate = 0.0 if self.config.source.raw else self.config.source.rate
            jobs.append(("scoring", lambda: self.scoring.run(self.source, rate, self._stop)))
        for name, job in jobs:
            self.supervisor.start(name, job)

    def stop(self) -> None:
        self._stop.set()
        self.updates.wake()
        # A refresh under way ends with its child: nothing of the agent outlives it.
        self.repository.abort()
        self.supervisor.join(timeout=5)
        self.flush_uploads()
        self.skipped.summary()
        self.board.publish()
        self.link.stop()

    # --- wiring ----------------------------------------------------------------------

    def _swapped(self, new: LoadedModel, previous: LoadedModel | None) -> None:
        self.guard.arm(new, previous)
        self.drift.clear()

    def _status(self, payload: bytes) -> None:
        self.link.publish(self.link.status_topic, payload)

    def _event(self, payload: bytes) -> None:
        self.link.publish(self.link.topics.events, payload)

    # --- what callers read and drive ---------------------------------------------------

    @property
    def version(self) -> int | None:
        return self.board.version

    @property
    def failure(self) -> str | None:
        """Why the agent halted (a source gone, a thread dead), or None while it runs."""
        return self.supervisor.failure

    @property
    def step(self) -> Step:
        return self.board.step

    @property
    def versions_seen(self) -> list[tuple[float, int | None]]:
        return self.board.versions_seen

    def process(self, sample: Sample) -> bool:
        return self.scoring.process(sample)

    def flush_uploads(self) -> None:
        self.uploads.flush()

    def status(self) -> StatusReport:
        return self.board.report()

    def publish_status(self) -> None:
        self.board.publish()


def _repository(
    config: AgentConfig, http: HttpFetcher, staging: Path, in_child: bool
) -> Repository:
    """The fleet's repository, verified in a child process or in this one."""
    if in_child:
        return ChildRepository(http, config.trust.root, config.state_dir / "trust", staging=staging)
    from edge.trust import SignedRepository, TrustLimits

    # The worker paces refreshes; the repository answers every one it is asked.
    return SignedRepository(
        http,
        config.trust.root.read_bytes(),
        config.state_dir / "trust",
        limits=TrustLimits(min_refresh_seconds=0.0),
        staging=staging,
    )
