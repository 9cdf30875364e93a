"""How long after a counted outcome the rollout's stage is decided and its pointer signed.

The status function only counts (devices reach it; it holds no key). The stage is
decided and signed by the schedule function, invoked by the registry's stream
(`edgeloop.local.router`: polled four times a second, a one-second batching window,
as the stack's event source mapping). This measures, on the local cloud with the
schedule's minute switched off, from the moment the status function returned having
counted the outcome that completes stage 0 to the moment the signed pointer in the
repository offers the version to the fleet.

    python -m bench.run stage_delay
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from edgeloop.contract import Health, StatusReport, Step
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.factory.config import load_config
from edgeloop.local.router import STREAM_BATCHING_WINDOW, STREAM_POLL_SECONDS, LocalContext
from edgeloop.local.runtime import LocalRuntime
from edgeloop.trust import KmsSigner, S3Store, TrustRepository, VersionRelease
from functions.common.fleet import FleetTable
from functions.common.mqtt_publisher import MqttPublisher
from functions.common.registry import Registry
from functions.common.rollouts import Rollouts
from functions.common.rules import TOPIC_THING

MODEL = "vibration"
CONFIG = Path(__file__).parents[1] / "models" / "vibration.toml"
# Stage 0 needs both (healthy_to_advance is 5; it needs every named canary it has).
NAMED_CANARIES = ("pump-1", "pump-2")
VERSIONS = 8
GOAL_S = 5.0  # "seconds": well under the schedule's minute
TIMEOUT_S = 30.0


def _installed(version: int, thing: str) -> dict[str, Any]:
    """What the IoT rule hands the status function for a device's install of `version`."""
    report = StatusReport(
        MODEL, version, Health.HEALTHY, step=Step.SUCCEEDED, target_version=version
    )
    return {**report.to_json(), TOPIC_THING: thing}


def operator_rollouts(cloud: LocalRuntime, trust: TrustRepository) -> Rollouts:
    """The rollout state machine as the platform team's tools hold it (the operator's
    credentials, the local broker): what retrain or rollback does last, started here."""
    dynamodb = cloud.client("dynamodb")
    config = load_config(CONFIG)
    return Rollouts(
        registry=Registry(dynamodb, cloud.resources.registry_table),
        fleet=FleetTable(dynamodb, cloud.resources.fleet_table),
        publisher=MqttPublisher(cloud.broker_url),
        trust=lambda: trust,
        canaries=lambda model: list(NAMED_CANARIES),
        settings=lambda model: config.rollout,
    )


def _one_rollout(cloud: LocalRuntime, trust: TrustRepository, version: int) -> float:
    """Seconds from the decisive outcome counted to the pointer offering `version` to all."""
    trust.publish(VersionRelease(MODEL, version, b"model-v%d" % version))
    if not operator_rollouts(cloud, trust).start(MODEL, version):
        raise RuntimeError(f"{MODEL} v{version}'s rollout did not start")
    status = cloud.router.handlers["status"]
    counted_at = 0.0
    for thing in NAMED_CANARIES:
        # As the rules engine would, minus the broker: the figure starts at the count.
        result = status(_installed(version, thing), LocalContext("edgeloop-status"))
        if not result.get("counted"):
            raise RuntimeError(f"{thing}'s install of v{version} was not counted: {result}")
        counted_at = time.monotonic()
    deadline = counted_at + TIMEOUT_S
    while time.monotonic() < deadline:
        pointer = trust.pointer(MODEL)
        if pointer is not None and pointer.offered == version and pointer.percent == 100:
            return time.monotonic() - counted_at
        time.sleep(0.02)
    raise TimeoutError(f"v{version}'s pointer was not signed within {TIMEOUT_S:g} s")


def measure() -> dict[str, Any]:
    samples = []
    with LocalRuntime({MODEL: CONFIG.read_text()}, schedule_seconds=3600) as cloud:
        for thing in NAMED_CANARIES:
            cloud.enroll(thing, MODEL, canary=True)
        trust = TrustRepository(
            S3Store(cloud.client("s3"), cloud.resources.artifact_bucket, REPOSITORY_PREFIX),
            KmsSigner.of_key(cloud.client("kms"), cloud.resources.signing_key_id),
        )
        for version in range(1, VERSIONS + 1):
            samples.append(round(_one_rollout(cloud, trust, version), 3))
        if cloud.router.errors:
            raise RuntimeError(f"the local cloud failed: {cloud.router.errors}")
        invocations = cloud.router.stream_invocations
    return {
        "what": "counted outcome → signed pointer, by the registry's stream (schedule off)",
        "versions": VERSIONS,
        "stream_poll_s": STREAM_POLL_SECONDS,
        "stream_batching_window_s": STREAM_BATCHING_WINDOW,
        "stream_invocations": invocations,
        "samples_s": samples,
        "median_s": round(statistics.median(samples), 3),
        "max_s": max(samples),
        "goal_s": GOAL_S,
        "meets_goal": max(samples) <= GOAL_S,
    }
