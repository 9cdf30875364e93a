"""Running a demo scenario against the local runtime with real agents."""

from __future__ import annotations

import tempfile
import threading
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.agent import Agent
from edge.config import parse_agent_config
from edgeloop.contract import StagePlan
from edgeloop.demo import shipments
from edgeloop.demo.report import build_report, write_report
from edgeloop.demo.scenarios import SCENARIOS, Scenario
from edgeloop.demo.state import DemoFailed, DemoState, wait_until
from edgeloop.factory.config import parse_config
from edgeloop.local.runtime import LocalRuntime, handoff_above
from edgeloop.runtime import CompiledModel
from functions.common.registry import Registry
from functions.common.releases import version_key

ROUND_TIMEOUT = 60.0
# A staged rollout waits on devices' reports and the schedule at each stage; on a busy
# two-core machine a minute was once not enough for three devices. It bounds a stuck
# rollout, not a slow one.
ROLLOUT_TIMEOUT = 180.0
# How often the watcher looks at the registry and the devices: the stamp on
# each event line is at most this late.
WATCH_SECONDS = 0.1


@dataclass
class DemoOptions:
    scenario: str = "digits"
    devices: int = 5
    out: Path = Path("demo-report")
    broker_url: str | None = None
    canaries: int = 2
    # Every run through a training job (a process over /opt/ml, as SageMaker runs one).
    handoff: bool = False


class _Watcher:
    """Logs gate decisions, rollout stages and device swaps at the moment they are seen.

    The demo's main thread feeds devices and waits; this thread stamps each
    event when it shows up in the registry or on a device, so each
    rollout stage can be told from the next.
    """

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.runs: set[str] = set()
        self.history_seen: dict[int, int] = {}
        self.versions: dict[str, int | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-watch", daemon=True)

    def start(self) -> None:
        self.poll()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.poll()  # whatever happened since the last look

    def _loop(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not self._stop.wait(WATCH_SECONDS):
            try:
                self.poll()
            except (BotoCoreError, ClientError) as exc:
                # A missed look is caught up on the next one; say so only if it persists.
                self.demo.state.watch_errors.append(f"{type(exc).__name__}: {exc}")

    def poll(self) -> None:
        demo = self.demo
        model = demo.scenario.model
        for run in reversed(demo.registry.runs(model, limit=100)):
            if run["run_id"] in self.runs:
                continue
            self.runs.add(run["run_id"])
            rows = (run.get("metrics") or {}).get("holdout_rows")
            on = f" on {int(rows)} held-out rows" if rows else ""
            to = f" → v{run['version']}" if run.get("version") else ""
            demo.say(f"gate {run['decision']}{on}: {run['reason']}{to}")
        rollout = demo.registry.rollout(model)
        # Stage events first, then the swaps they led to: the order they happened.
        if rollout is not None:
            self._rollout(rollout)
        for agent in demo.state.agents:
            thing = agent.config.device.thing
            version = agent.version
            if self.versions.get(thing, None) != version and version is not None:
                stage = demo.stage_of(thing)
                demo.say(f"{thing} ({stage}) swapped to v{version}{demo.fetched(thing, version)}")
            self.versions[thing] = version

    def _rollout(self, rollout: dict[str, Any]) -> None:
        """Each new entry of the rollout's history, with the time the cloud wrote it."""
        version = int(rollout["version"])
        history = rollout.get("history", [])
        seen = self.history_seen.get(version, 0)
        stages = rollout.get("stages", [])
        for entry in history[seen:]:
            stage = int(entry["stage"])
            where = "named canaries" if stage == 0 else f"{stages[stage - 1]}% of the fleet"
            detail = f": {entry['detail']}" if entry.get("detail") else ""
            at = str(entry["at"])[11:23]
            self.demo.say(f"[{at}] v{version} stage {stage} ({where}) {entry['event']}{detail}")
        self.history_seen[version] = len(history)


class Demo:
    def __init__(
        self, options: DemoOptions, on_change: Callable[[DemoState], None] | None = None
    ) -> None:
        self.options = options
        self.scenario: Scenario = SCENARIOS[options.scenario](options.devices)
        self.state = DemoState(options.scenario)
        self.named_canaries: set[str] = set()
        self.on_change = on_change or (lambda _: None)
        self._lock = threading.Lock()

    def say(self, message: str) -> None:
        with self._lock:
            self.state.log(message)
            self.on_change(self.state)

    def stage_of(self, thing: str) -> str:
        """The rollout stage the cloud puts a device in (its name and canary membership)."""
        config = parse_config(tomllib.loads(self.scenario.config), self.scenario.name)
        plan = StagePlan(config.rollout.stages)
        return plan.describe(plan.stage_of(thing, thing in self.named_canaries))

    def fetched(self, thing: str, version: int) -> str:
        """What the device fetched to get `version`, for its swap line: the model's bytes
        (a patch, the compressed or the full model) and the version's spec beside them.
        The signed metadata is shared by every version and shown per device in the report."""
        got = [
            s
            for s in list(self.cloud.cdn.log.shipments)
            if s.device == thing
            and shipments.version_of(s.path) == version
            and shipments.kind_of(s.path) in shipments.KINDS
        ]
        model = [s for s in got if shipments.kind_of(s.path) != "metadata"]
        if not model:
            return ""
        kinds = {shipments.kind_of(s.path) for s in model}
        what = (
            "a patch"
            if kinds == {"patch"}
            else shipments.LABELS[max(kinds, key=shipments.KINDS.index)]
        )
        spec = sum(s.bytes for s in got) - sum(s.bytes for s in model)
        return f" ({what}, {sum(s.bytes for s in model)} B; spec {spec} B)"

    def run(self) -> dict[str, Any]:
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        s = self.scenario
        self.state.stage = "starting the local cloud"
        self.on_change(self.state)
        with LocalRuntime(
            {s.model: s.config},
            self.options.broker_url,
            batching_window=6.0,
            env=handoff_above(1) if self.options.handoff else None,
        ) as cloud:
            self.cloud = cloud
            self.state.bytes_by_device = lambda: shipments.by_device(list(cloud.cdn.log.shipments))
            self.registry = Registry(cloud.client("dynamodb"), cloud.resources.registry_table)
            self.say(f"local cloud up: moto at {cloud.aws.endpoint}, broker {cloud.broker_url}")
            workdir = Path(tempfile.mkdtemp(prefix="edgeloop-demo-"))
            (workdir / "root.json").write_bytes(cloud.trust_root)
            agents = [self._agent(workdir, i) for i in range(self.options.devices)]
            self.state.agents = agents
            for agent in agents:
                agent.start(score=False)
            wait_until(lambda: all(a.link.connected for a in agents), 20, "devices to connect")
            canaries = min(self.options.canaries, self.options.devices)
            self.say(
                f"{len(agents)} devices connected ({canaries} named canaries; the others' "
                "rollout stages follow from their thing names)"
            )
            watcher = _Watcher(self)
            watcher.start()
            try:
                for number, (label, feeds) in enumerate(
                    zip(s.round_labels, s.rounds, strict=True), start=1
                ):
                    self._round(number, label, feeds)
                self.state.stage = "scoring on board"
                self.on_change(self.state)
                field_results = self._field_phase()
                watcher.stop()
                report = self._report(field_results)
            finally:
                watcher.stop()
                for agent in agents:
                    agent.stop()
        self.state.stage = "done"
        self.on_change(self.state)
        return report

    def _agent(self, workdir: Path, index: int) -> Agent:
        s = self.scenario
        canary = index < self.options.canaries
        if canary:
            self.named_canaries.add(f"{s.name}-{index + 1:02d}")
        self.cloud.enroll(f"{s.name}-{index + 1:02d}", s.model, canary=canary)
        config = parse_agent_config(
            {
                "device": {
                    "thing": f"{s.name}-{index + 1:02d}",
                    "model": s.model,
                    "n_features": s.n_features,
                },
                "broker": {
                    "url": self.cloud.broker_url,
                    "reconnect_min": 0.05,
                    "reconnect_max": 1.0,
                },
                "artifacts": {
                    "base_url": self.cloud.cdn.base_url,
                    "timeout": 5.0,
                    "retries": 3,
                },
                # The stages of the demo move within seconds: a nudge is acted on at once.
                "trust": {"root": "root.json", "min_refresh_seconds": 0.0},
                "state": {"dir": f"device-{index + 1:02d}"},
                "upload": {
                    "batch_rows": s.batch_rows,
                    "sample_rate": s.sample_rate,
                    "retry_seconds": 0.2,
                    "queue_max_batches": 1000,
                },
                "watch": {"window": 200},
                "status_interval": 2.0,
            },
            workdir,
        )
        self.state.stages[config.device.thing] = self.stage_of(config.device.thing)
        return Agent(config, source=iter(()))

    def _runs(self) -> list[dict[str, Any]]:
        return self.registry.runs(self.scenario.model, limit=100)

    def _where_it_stood(self, target: int) -> str:
        """Each device's version and last step, the rollout's stage and what it counted
        there, and what the local cloud's router saw fail: why a rollout is stuck."""
        devices = ", ".join(
            f"{a.config.device.thing} v{a.version} {a.step.value} "
            f"({a.updates.nudge_bytes} B of nudges)"
            for a in self.state.agents
        )
        rollout = self.registry.rollout(self.scenario.model) or {}
        stage = rollout.get("stage")
        counted = (
            self.registry.stage_counts(self.scenario.model, target, int(stage))
            if isinstance(stage, int) and stage >= 0
            else {}
        )
        errors = "; ".join(self.cloud.router.errors[-3:]) or "none"
        return (
            f"devices: {devices}; rollout of v{rollout.get('version')} "
            f"{rollout.get('state')} at stage {stage}, counted there {counted}; "
            f"router errors: {errors}"
        )

    def _round(self, number: int, data: str, feeds: list[list[Any]]) -> None:
        on_board = self.state.champion
        # Say what is true at the start of this round, whatever happened before it.
        label = data + (
            f", v{on_board} on board (a sample goes up)"
            if on_board
            else ", no model on board yet (every sample goes up)"
        )
        self.state.stage = f"round {number}: {label}"
        self.say(f"round {number}: {label}")
        runs_before = len(self._runs())
        agents = self.state.agents
        uploaded_before = _uploaded(agents)
        rows = 0
        for agent, samples in zip(agents, feeds, strict=True):
            for sample in samples:
                agent.process(sample)
            rows += len(samples)
            agent.flush_uploads()
        wait_until(
            lambda: all(len(a.queue) == 0 for a in agents), ROUND_TIMEOUT, "uploads to drain"
        )
        uploaded = _uploaded(agents) - uploaded_before
        self.say(f"round {number}: devices saw {rows} samples and uploaded {uploaded} rows")
        if uploaded:
            # The notification may still be on its way to the queue when the uploads drain.
            wait_until(lambda: len(self._runs()) > runs_before, ROUND_TIMEOUT, "a training run")
        wait_until(self.cloud.router.idle, ROUND_TIMEOUT, "the retrain to finish")
        runs = self._runs()
        new_runs = runs[: len(runs) - runs_before]
        champion = self.registry.champion(self.scenario.model)
        self.state.champion = int(champion["version"]) if champion else None
        if self.state.champion is not None and self.state.champion != on_board:
            target = self.state.champion
            try:
                wait_until(
                    lambda: all(a.version == target for a in agents),
                    ROLLOUT_TIMEOUT,
                    f"every device to run v{target}",
                )
            except DemoFailed as exc:
                raise DemoFailed(f"{exc} ({self._where_it_stood(target)})") from exc
            wait_until(
                lambda: (
                    (self.registry.rollout(self.scenario.model) or {}).get("state") == "complete"
                ),
                ROLLOUT_TIMEOUT,
                f"the v{target} rollout to reach every stage",
            )
        self.state.rounds.append(
            {
                "round": number,
                "label": label,
                "model_on_board": on_board,
                "rows_seen": rows,
                "runs": [
                    {
                        k: run.get(k)
                        for k in (
                            "decision",
                            "reason",
                            "metrics",
                            "champion_metrics",
                            "judged",
                            "rows",
                            "version",
                        )
                    }
                    for run in reversed(new_runs)
                ],
                "champion": self.state.champion,
            }
        )

    def _field_phase(self) -> dict[str, Any]:
        truth_alarm = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        predictions: list[tuple[int, int]] = []
        for agent, samples in zip(self.state.agents, self.scenario.field_phase, strict=True):
            for sample in samples:
                alarm = agent.process(sample)
                if sample.label is not None and agent.scorer.model is not None:
                    out = agent.scorer.model.runtime.predict(sample.x.reshape(1, -1))
                    predictions.append((int(out.argmax()), sample.label))
                key = ("t" if alarm == sample.planted_anomaly else "f") + ("p" if alarm else "n")
                truth_alarm[key] += 1
            agent.flush_uploads()
        wait_until(
            lambda: all(len(a.queue) == 0 for a in self.state.agents), ROUND_TIMEOUT, "uploads"
        )
        return {"confusion": truth_alarm, "predictions": predictions}

    def _deployed_model(self) -> bytes:
        assert self.state.champion is not None
        key = version_key(self.scenario.model, self.state.champion, "model.tflite")
        s3 = self.cloud.client("s3")
        bucket = self.cloud.resources.registry_bucket
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def _report(self, field_results: dict[str, Any]) -> dict[str, Any]:
        s = self.scenario
        quality: dict[str, Any] = {}
        if self.state.champion is not None and s.test_X is not None and s.test_y is not None:
            model = CompiledModel(self._deployed_model())
            accuracy = float(np.mean(model.predict(s.test_X).argmax(axis=1) == s.test_y))
            quality = {"deployed_accuracy": accuracy, "test_rows": len(s.test_y)}
        if s.name == "anomaly":
            c = field_results["confusion"]
            quality = {
                "confusion": c,
                "recall": c["tp"] / max(1, c["tp"] + c["fn"]),
                "precision": c["tp"] / max(1, c["tp"] + c["fp"]),
            }
        return build_report(self.state, self.cloud, s, quality)


def _uploaded(agents: list[Agent]) -> int:
    return sum(
        a.counters.uploaded_rows_without_model + a.counters.uploaded_rows_with_model for a in agents
    )


def run_demo(
    options: DemoOptions, on_change: Callable[[DemoState], None] | None = None
) -> dict[str, Any]:
    demo = Demo(options, on_change)
    report = demo.run()
    write_report(report, options.out)
    return report
