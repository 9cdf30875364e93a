"""The local cloud carries counted outcomes to the schedule function as AWS does: by the
registry table's stream, filtered to stage counters, in Lambda's stream event shape.

The schedule's minute is switched off here (an hour), so only the stream can move the
rollout: a device's report through the broker is counted by the status function, and
the stage is decided and signed by the schedule function within seconds.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeloop.contract import Health, RuleNames, StatusReport, Step, ThingTopics, ingest_topic
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.factory.config import ModelConfig, load_config
from edgeloop.local.runtime import LocalRuntime
from edgeloop.trust import KmsSigner, S3Store, TrustRepository, VersionRelease
from functions.common.fleet import FleetTable
from functions.common.mqtt_publisher import MqttPublisher
from functions.common.registry import Registry
from functions.common.rollouts import Rollouts
from tests.support_aws import VIBRATION_TOML
from tests.support_world import wait_for

NAMED_CANARIES = ("pump-1", "pump-2")


def operator_rollouts(cloud: LocalRuntime, trust: TrustRepository, config: ModelConfig) -> Rollouts:
    """The rollout state machine as the platform team's tools hold it (the operator's
    credentials, the local broker): what retrain or rollback does last, started here."""
    dynamodb = cloud.client("dynamodb")
    return Rollouts(
        registry=Registry(dynamodb, cloud.resources.registry_table),
        fleet=FleetTable(dynamodb, cloud.resources.fleet_table),
        publisher=MqttPublisher(cloud.broker_url),
        trust=lambda: trust,
        canaries=lambda model: list(NAMED_CANARIES),
        settings=lambda model: config.rollout,
    )


def _report_installed(broker_url: str, things: tuple[str, ...], version: int) -> None:
    """Each device reports installing `version`, by Basic Ingest as agents do."""
    host, port = broker_url.removeprefix("mqtt://").split(":")
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-devices")
    device.connect(host, int(port))
    device.loop_start()
    try:
        for thing in things:
            report = StatusReport(
                "vibration",
                version,
                Health.HEALTHY,
                step=Step.SUCCEEDED,
                target_version=version,
            )
            topic = ingest_topic(RuleNames().status, ThingTopics(thing).status)
            device.publish(topic, report.to_bytes(), qos=1).wait_for_publish(10)
    finally:
        device.loop_stop()
        device.disconnect()


def test_a_counted_outcome_moves_the_stage_by_the_stream_without_the_schedule() -> None:
    with LocalRuntime({"vibration": VIBRATION_TOML}, schedule_seconds=3600) as cloud:
        for thing in NAMED_CANARIES:
            cloud.enroll(thing, "vibration", canary=True)
        trust = TrustRepository(
            S3Store(cloud.client("s3"), cloud.resources.artifact_bucket, REPOSITORY_PREFIX),
            KmsSigner.of_key(cloud.client("kms"), cloud.resources.signing_key_id),
        )
        trust.publish(VersionRelease("vibration", 1, b"model-v1"))
        config = load_config(cloud.config_dir / "vibration.toml")
        assert operator_rollouts(cloud, trust, config).start("vibration", 1)
        assert trust.pointer("vibration").percent == 0  # type: ignore[union-attr]
        events: list[dict[str, Any]] = []
        evaluate = cloud.router.handlers["evaluate_rollouts"]

        def seen(event: dict[str, Any], context: Any) -> dict[str, Any]:
            events.append(event)
            return evaluate(event, context)

        cloud.router.handlers["evaluate_rollouts"] = seen
        _report_installed(cloud.broker_url, NAMED_CANARIES, 1)
        # Stage 0's two installs pass it; no other stage has devices: all of the fleet.
        wait_for(
            lambda: trust.pointer("vibration").percent == 100,  # type: ignore[union-attr]
            timeout=30,
            what="the signed pointer to offer v1 to the whole fleet",
        )
        assert cloud.router.errors == []
        assert events, "the schedule function was never invoked"
        # Only stream events, each record a stage counter change as Lambda's filter passes.
        for event in events:
            for record in event["Records"]:
                assert record["eventSource"] == "aws:dynamodb"
                assert record["eventSourceARN"] == cloud.resources.registry_stream_arn
                assert record["dynamodb"]["Keys"]["sk"]["S"].startswith("tally#")
                assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], float)
