"""Running a demo scenario against the local runtime with real agents."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.agent import Agent
from edge.config import parse_agent_config
from edgeloop.demo.report import build_report, write_report
from edgeloop.demo.scenarios import SCENARIOS, Scenario
from edgeloop.demo.state import DemoState, wait_until
from edgeloop.local.runtime import LocalRuntime
from edgeloop.runtime import CompiledModel
from functions.common.registry import Registry

ROUND_TIMEOUT = 60.0
ROLLOUT_TIMEOUT = 60.0


@dataclass
class DemoOptions:
    scenario: str = "digits"
    devices: int = 5
    out: Path = Path("demo-report")
    broker_url: str | None = None
    canaries: int = 2


class Demo:
    def __init__(
        self, options: DemoOptions, on_change: Callable[[DemoState], None] | None = None
    ) -> None:
        self.options = options
        self.scenario: Scenario = SCENARIOS[options.scenario](options.devices)
        self.state = DemoState(options.scenario)
        self.on_change = on_change or (lambda _: None)

    def _say(self, message: str) -> None:
        self.state.log(message)
        self.on_change(self.state)

    def run(self) -> dict[str, Any]:
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        s = self.scenario
        rollout = {
            "CANARY_HEALTHY_COUNT": str(min(self.options.canaries, self.options.devices)),
            "CANARY_WINDOW_SECONDS": "600",
        }
        self.state.stage = "starting the local cloud"
        self.on_change(self.state)
        with LocalRuntime(
            {s.model: s.config}, self.options.broker_url, rollout, batching_window=6.0
        ) as cloud:
            self.cloud = cloud
            self.state.bytes_by_device = cloud.cdn.log.bytes_by_device
            self.registry = Registry(cloud.client("dynamodb"), cloud.resources.registry_table)
            self._say(f"local cloud up: moto at {cloud.aws.endpoint}, broker {cloud.broker_url}")
            workdir = Path(tempfile.mkdtemp(prefix="edgeloop-demo-"))
            (workdir / "manifest-public.pem").write_bytes(cloud.manifest_public_key())
            agents = [self._agent(workdir, i) for i in range(self.options.devices)]
            self.state.agents = agents
            for agent in agents:
                agent.start(score=False)
            wait_until(lambda: all(a.link.connected for a in agents), 20, "devices to connect")
            self._say(f"{len(agents)} devices connected ({self.options.canaries} canary)")
            try:
                for number, (label, feeds) in enumerate(
                    zip(s.round_labels, s.rounds, strict=True), start=1
                ):
                    self._round(number, label, feeds)
                self.state.stage = "scoring on board"
                self.on_change(self.state)
                field_results = self._field_phase()
                report = self._report(field_results)
            finally:
                for agent in agents:
                    agent.stop()
        self.state.stage = "done"
        self.on_change(self.state)
        return report

    def _agent(self, workdir: Path, index: int) -> Agent:
        s = self.scenario
        ring = "canary" if index < self.options.canaries else "all"
        self.cloud.enroll(f"{s.name}-{index + 1:02d}", s.model, canary=ring == "canary")
        config = parse_agent_config(
            {
                "device": {
                    "thing": f"{s.name}-{index + 1:02d}",
                    "model": s.model,
                    "n_features": s.n_features,
                    "ring": ring,
                },
                "broker": {
                    "url": self.cloud.broker_url,
                    "reconnect_min": 0.05,
                    "reconnect_max": 1.0,
                },
                "artifacts": {
                    "base_url": self.cloud.cdn.base_url,
                    "manifest_keys": ["manifest-public.pem"],
                    "timeout": 5.0,
                    "retries": 3,
                },
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
        return Agent(config, source=iter(()))

    def _runs(self) -> list[dict[str, Any]]:
        return self.registry.runs(self.scenario.model, limit=100)

    def _round(self, number: int, label: str, feeds: list[list[Any]]) -> None:
        self.state.stage = f"round {number}: {label}"
        self.on_change(self.state)
        runs_before = len(self._runs())
        champion_before = self.state.champion
        rows = 0
        for agent, samples in zip(self.state.agents, feeds, strict=True):
            for sample in samples:
                agent.process(sample)
            rows += len(samples)
            agent.flush_uploads()
        agents = self.state.agents
        wait_until(
            lambda: all(len(a.queue) == 0 for a in agents), ROUND_TIMEOUT, "uploads to drain"
        )
        time.sleep(0.5)
        wait_until(self.cloud.router.idle, ROUND_TIMEOUT, "the retrain to finish")
        runs = self._runs()
        new_runs = runs[: len(runs) - runs_before]
        for run in reversed(new_runs):
            verdict = f"v{run['version']}" if run.get("version") else run["decision"]
            self._say(f"round {number}: gate {run['decision']}: {run['reason']} → {verdict}")
        champion = self.registry.champion(self.scenario.model)
        self.state.champion = int(champion["version"]) if champion else None
        if self.state.champion is not None and self.state.champion != champion_before:
            target = self.state.champion
            self._say(f"v{target} announced to the canary ring")
            wait_until(
                lambda: all(a.version == target for a in agents),
                ROLLOUT_TIMEOUT,
                f"every device to run v{target}",
            )
            rollout = self.registry.rollout(self.scenario.model) or {}
            self._say(
                f"v{target} promoted from canary to all "
                f"({rollout.get('healthy', '?')} healthy canaries); "
                "every device runs it"
            )
        self.state.rounds.append(
            {
                "round": number,
                "label": label,
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
        s3 = self.cloud.client("s3")
        bucket = self.cloud.resources.artifact_bucket
        latest = json.loads(
            s3.get_object(Bucket=bucket, Key=f"models/{self.scenario.model}/latest.json")[
                "Body"
            ].read()
        )
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=latest["manifest"])["Body"].read())
        body: bytes = s3.get_object(Bucket=bucket, Key=manifest["artifact"]["path"])["Body"].read()
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


def run_demo(
    options: DemoOptions, on_change: Callable[[DemoState], None] | None = None
) -> dict[str, Any]:
    demo = Demo(options, on_change)
    report = demo.run()
    write_report(report, options.out)
    return report
