"""Local loop latency: the last upload of a round to every device running the result.

20 real agents on the local cloud (moto over HTTP, the MQTT broker, the CDN
stand-in, the real functions behind the event router). Each round the devices
upload their batches; the clock starts when the last upload has landed in S3
and stops when every device runs the new version. The router's SQS batching
window (1 s here, as configured on the Lambda event source) is part of it.
All devices are in the canary ring, so this is the pipeline's latency; a staged
rollout adds the canary window on purpose.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench.common import wait_until
from edge.agent import Agent
from edge.config import parse_agent_config
from edge.sources import Sample, synthetic_vibration, vibration_modes
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.local.broker import EmbeddedBroker
from edgeloop.local.runtime import LocalRuntime
from functions.common.registry import Registry
from tests.support_broker import Mosquitto

DEVICES = 20
ROUNDS = 2
# Rounds of fresh data the section may add after gate refusals to reach ROUNDS
# shipped versions: a refusal is the gate's verdict on one draw of data, and it is
# reported, not raised.
MAX_REFUSED = 2
ROWS_PER_DEVICE = 120
GOAL_SECONDS = 5.0
# Every round's retrain ships, so each round measures a full loop.
# This section times the loop, not the gate: any better silhouette ships, so
# each round's retrain is a new version to carry to the devices.
CONFIG = ANOMALY_TOML.replace(
    "min_improvement = 0.002", "min_improvement = 0.0\nsilhouette_margin = 0.0"
)


def _round_stream(number: int) -> list[Sample]:
    """One long stream dealt out in slices, so the round covers the machine's operating
    modes (a single device dwells in one for minutes). In the first round the machine
    ran in only two of its four modes, as a new machine's first data often does: the
    second round's retrain then has something to learn, and ships, and the loop it
    times is a real second version. With all four modes in both rounds the first
    model is already as good as the data allows, and the gate ships nothing."""
    rows = DEVICES * ROWS_PER_DEVICE
    modes = vibration_modes(8)
    kept: list[Sample] = []
    for sample in synthetic_vibration(8, 0.01, seed=number):
        nearest = int(np.argmin(((modes - sample.x) ** 2).sum(axis=1)))
        if number > 1 or sample.planted_anomaly or nearest < 2:
            kept.append(sample)
        if len(kept) >= 2 * rows:
            break
    return kept[-rows:]


def _wait(condition: Any, timeout: float, what: str) -> float:
    """The moment `condition()` first holds (monotonic clock)."""
    wait_until(condition, timeout, what, poll=0.02)
    return time.monotonic()


class RunLog(Protocol):
    """What the section reads of the registry: the champion and the newest runs."""

    def champion(self, model: str) -> dict[str, Any] | None: ...

    def runs(self, model: str, limit: int = 20) -> list[dict[str, Any]]: ...

    def pending_uploads(self, model: str) -> list[str]: ...


@dataclass(frozen=True)
class Decision:
    """How a round's retrain ended: its version published (at `at`, monotonic), or
    refused by the gate (`refusal`, the run's summary)."""

    at: float
    refusal: dict[str, Any] | None = None


def await_decision(
    registry: RunLog, model: str, target: int, runs_before: set[str], timeout: float
) -> Decision:
    """Wait for v`target` to be published, or for the newest run since `runs_before` to
    have refused it with no upload left pending (the uploads may reach more than one
    run, and an early one may refuse what a later one ships). Only a retrain that
    never decides is an error: a refusal is a result."""
    found: list[Decision] = []

    def decided() -> bool:
        champion = registry.champion(model)
        if champion is not None and int(champion["version"]) >= target:
            found.append(Decision(time.monotonic()))
            return True
        newest = next(iter(registry.runs(model, limit=1)), None)
        if (
            newest is not None
            and newest["run_id"] not in runs_before
            and newest.get("decision") != "promoted"
            and not registry.pending_uploads(model)
        ):
            found.append(Decision(time.monotonic(), newest))
            return True
        return False

    try:
        wait_until(decided, timeout, f"v{target} to be published or refused", poll=0.02)
    except TimeoutError:
        runs = registry.runs(model, limit=5)
        raise TimeoutError(f"v{target} was neither published nor refused; runs: {runs}") from None
    return found[-1]


def summary(rounds: list[dict[str, Any]], refused: list[dict[str, Any]]) -> dict[str, Any]:
    """The section's figures; a round the gate refused is reported beside the shipped ones,
    and fewer than ROUNDS shipped misses the goal instead of failing the run."""
    worst = max((r["upload_to_all_swapped_s"] for r in rounds), default=None)
    return {
        "devices": DEVICES,
        "batching_window_s": 1.0,
        "rounds": rounds,
        "refused_rounds": refused,
        "worst_upload_to_all_swapped_s": worst,
        "meets_goal": len(rounds) >= ROUNDS and worst is not None and worst < GOAL_SECONDS,
    }


def measure() -> dict[str, Any]:
    has_mosquitto = shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()
    broker = Mosquitto() if has_mosquitto else EmbeddedBroker()
    rounds: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    try:
        with LocalRuntime({"vibration": CONFIG}, broker.url, batching_window=1.0) as cloud:
            registry = Registry(cloud.client("dynamodb"), cloud.resources.registry_table)
            workdir = Path(tempfile.mkdtemp(prefix="edgeloop-bench-loop-"))
            (workdir / "root.json").write_bytes(cloud.trust_root)
            for i in range(DEVICES):
                cloud.enroll(f"loop-{i:02d}", "vibration", canary=True)
            agents = [
                Agent(
                    parse_agent_config(
                        {
                            "device": {
                                "thing": f"loop-{i:02d}",
                                "model": "vibration",
                                "n_features": 8,
                            },
                            "broker": {"url": broker.url, "reconnect_min": 0.05},
                            "artifacts": {"base_url": cloud.cdn.base_url},
                            "trust": {
                                "root": "root.json",
                                "min_refresh_seconds": 0.0,
                                # Many agents share two cores here: verifying in a child each
                                # would measure the simulation (bench/swap.py times the child).
                                "verify_in": "agent",
                            },
                            "state": {"dir": f"d{i:02d}"},
                            "upload": {"batch_rows": 40, "sample_rate": 1.0, "retry_seconds": 0.2},
                            "status_interval": 1.0,
                        },
                        workdir,
                    ),
                    source=iter(()),
                )
                for i in range(DEVICES)
            ]
            for agent in agents:
                agent.start(score=False)
            _wait(lambda: all(a.link.connected for a in agents), 30, "connections")
            for number in range(1, ROUNDS + MAX_REFUSED + 1):
                if len(rounds) == ROUNDS:
                    break
                before = registry.champion("vibration")
                target = (int(before["version"]) if before else 0) + 1
                runs_before = {r["run_id"] for r in registry.runs("vibration", limit=5)}
                stream = _round_stream(number)
                for i, agent in enumerate(agents):
                    for sample in stream[i * ROWS_PER_DEVICE : (i + 1) * ROWS_PER_DEVICE]:
                        agent.process(sample)
                    agent.flush_uploads()
                uploaded = _wait(lambda: all(len(a.queue) == 0 for a in agents), 120, "uploads")
                decision = await_decision(registry, "vibration", target, runs_before, 60)
                if decision.refusal is not None:
                    refused.append(
                        {"round": number, "target": target, "reason": decision.refusal["reason"]}
                    )
                    print(json.dumps(refused[-1]), flush=True)
                    continue
                t_published = decision.at
                first = _wait(lambda t=target: any(a.version == t for a in agents), 120, "a swap")
                everyone = _wait(
                    lambda t=target: all(a.version == t for a in agents), 120, f"all on v{target}"
                )
                shipped = cloud.cdn.log.bytes_by_device()
                so_far = int(np.median([sum(v.values()) for v in shipped.values()]))
                rounds.append(
                    {
                        "version": target,
                        "upload_to_published_s": round(t_published - uploaded, 2),
                        "published_to_first_swap_s": round(first - t_published, 2),
                        "upload_to_all_swapped_s": round(everyone - uploaded, 2),
                        "bytes_per_device": so_far - sum(r["bytes_per_device"] for r in rounds),
                    }
                )
                print(json.dumps(rounds[-1]), flush=True)
            for agent in agents:
                agent.stop()
    finally:
        broker.close()
    return {**summary(rounds, refused), "broker": broker.kind}


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
