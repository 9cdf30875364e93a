"""Status reports into the fleet table, and rollouts moved on by them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edgeloop.cli.main import main
from edgeloop.contract import (
    IOT_MESSAGE_UNIT,
    Health,
    Nudge,
    StatusReport,
    Step,
    format_time,
    utc_now,
)
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX, RolloutPointer
from edgeloop.local.streams import passes, stream_event
from edgeloop.trust import S3Store
from functions.common.clients import client
from functions.common.fleet import DeviceRecord, FleetTable
from functions.common.registry import STAGE_COUNTER_FILTER
from functions.common.wiring import rollouts
from functions.evaluate_rollouts import handler as evaluate_rollouts
from tests.support_aws import (
    NAMED_CANARIES,
    FakeLambdaContext,
    LocalCloud,
    deliver_counted,
    nudge,
    publish_test_version,
    registry_of,
    report_heartbeat,
    report_status,
    start_test_rollout,
)


def evaluate() -> dict[str, str]:
    """What the schedule's run decided (it also re-signs the timestamp each time)."""
    decided: dict[str, str] = evaluate_rollouts.handler({}, FakeLambdaContext())["decided"]
    return decided


def test_status_reports_land_in_the_fleet_table(cloud: LocalCloud, capsys: Any) -> None:
    report_heartbeat("pump-1", version=1)
    report_heartbeat("pump-2", version=None, health="no_model", queue_depth=4)
    records = FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"]).for_model(
        "vibration"
    )
    assert [(r.thing, r.report.version, r.report.health) for r in records] == [
        ("pump-1", 1, "healthy"),
        ("pump-2", None, "no_model"),
    ]
    capsys.readouterr()  # the handlers' metric lines
    code = main(
        [
            "fleet",
            "--model",
            "vibration",
            "--table",
            cloud.names["FLEET_TABLE"],
            "--endpoint-url",
            cloud.endpoint,
            "--json",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)["devices"]
    assert [d["thing"] for d in printed] == ["pump-1", "pump-2"]
    assert printed[1]["queue_depth"] == 4
    main(
        [
            "fleet",
            "--model",
            "vibration",
            "--table",
            cloud.names["FLEET_TABLE"],
            "--endpoint-url",
            cloud.endpoint,
        ]
    )
    table = capsys.readouterr().out
    for cell in ("pump-1", "healthy", "no_model"):
        assert cell in table


def test_a_malformed_report_is_ignored_with_a_reason(cloud: LocalCloud) -> None:
    result = report_status("pump-1", health="superb")
    assert result["recorded"] is False
    assert "status.health 'superb' is not one of" in result["reason"]


def test_a_rollout_moves_through_its_stages_on_installs_from_each_stage(
    cloud: LocalCloud,
) -> None:
    # pump-10 (stage 3 of 1 → 10 → 50 → 100%) has reported before: stage 3 has a device.
    report_heartbeat("pump-10", version=1)
    registry = start_test_rollout(cloud)
    assert cloud.thing_offers(NAMED_CANARIES) == dict.fromkeys(
        NAMED_CANARIES, nudge("vibration", 2)
    )
    assert [p["retain"] for p in cloud.published] == [True] * len(NAMED_CANARIES)
    assert cloud.band_offers("vibration") == {}
    # What devices believe: the signed pointer offers v2 to the named canaries only.
    assert cloud.pointer("vibration") == RolloutPointer(
        "vibration", 2, None, 0, tuple(sorted(NAMED_CANARIES))
    )
    assert report_status("pump-1")["counted"] is True
    assert deliver_counted(cloud) == {}  # one of the two installs stage 0 needs
    assert report_status("pump-3")["counted"] is True
    assert deliver_counted(cloud) == {"vibration": "stage 3"}
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert (rollout.state, rollout.stage, rollout.needed) == ("rolling", 3, 1)
    # Stages 1 and 2 (bands 0-9) have no device that ever reported: skipped, and said so.
    assert [(e["stage"], e["event"]) for e in rollout.history] == [
        (0, "started"),
        (0, "stage entered"),
        (0, "stage passed"),
        (1, "stage skipped"),
        (2, "stage skipped"),
        (3, "stage entered"),
    ]
    assert cloud.pointer("vibration").percent == 50  # type: ignore[union-attr]
    # Each band hears of v2 once, when the stage that adds it is entered.
    assert cloud.band_offers("vibration") == dict.fromkeys(range(50), nudge("vibration", 2))
    assert len(cloud.published) == len(NAMED_CANARIES) + 50
    assert registry.stage_counts("vibration", 2, 0) == {"installed": 2, "failed": 0}
    # The last stage has no device that ever reported: entered with nothing to wait
    # for, and complete at the schedule's next look.
    report_status("pump-10")
    assert deliver_counted(cloud) == {"vibration": "stage 4"}
    assert cloud.pointer("vibration").percent == 100  # type: ignore[union-attr]
    assert cloud.band_offers("vibration") == dict.fromkeys(range(100), nudge("vibration", 2))
    assert evaluate() == {"vibration": "complete"}
    assert rollouts().get("vibration").state == "complete"  # type: ignore[union-attr]
    assert len(cloud.published) == len(NAMED_CANARIES) + 100


def test_a_first_rollout_aborted_withdraws_the_version_and_the_pointer(cloud: LocalCloud) -> None:
    start_test_rollout(cloud)
    for thing in ("pump-1", "pump-2", "pump-3"):
        report_status(thing, version=None, health="no_model", step="failed", target_version=2)
    assert deliver_counted(cloud) == {"vibration": "aborted"}
    assert cloud.pointer("vibration") is None
    role = cloud.trust().model_role("vibration")
    assert role is not None
    assert not [p for p in role.targets if p.startswith("vibration/2/")]
    assert cloud.thing_offers(NAMED_CANARIES) == dict.fromkeys(
        NAMED_CANARIES, nudge("vibration", None)
    )
    assert cloud.band_offers("vibration") == {}


def test_a_quiet_stage_stalls_when_its_window_closes_and_says_why(cloud: LocalCloud) -> None:
    start_test_rollout(cloud)
    report_status("pump-1")
    assert rollouts().evaluate("vibration", now=datetime.now(UTC) + timedelta(minutes=5)) is None
    assert rollouts().evaluate("vibration", now=datetime.now(UTC) + timedelta(hours=2)) == "stalled"
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert rollout.state == "stalled"
    assert rollout.reason.startswith(
        "stage 0 (named canaries): 1 of 2 installs needed within 60 min (0 failed)"
    )
    assert rollout.history[-1]["event"] == "stalled"
    assert cloud.band_offers("vibration") == {}


def test_the_scheduled_handler_evaluates_every_model(cloud: LocalCloud) -> None:
    start_test_rollout(cloud)
    registry = registry_of(cloud)
    fleet = FleetTable(cloud.client("dynamodb"), cloud.names["FLEET_TABLE"])
    # Two outcomes counted, as the status function counts them, without its evaluation.
    for thing in ("pump-1", "pump-2"):
        report = StatusReport(
            model="vibration",
            version=2,
            health=Health.HEALTHY,
            step=Step.SUCCEEDED,
            target_version=2,
        )
        record = DeviceRecord(thing, format_time(utc_now()), report, stage=0, canary=True)
        assert fleet.record_outcome(record, 2, registry.tally("vibration", 2, 0, "installed"))
    # Stage 0 passes; stages 1-4 have no device that ever reported (the named canaries
    # are not counted in their bands): the rollout reaches the last stage at once.
    assert evaluate() == {"vibration": "stage 4"}
    assert evaluate() == {"vibration": "complete"}
    assert evaluate() == {}


def test_the_schedule_re_signs_the_timestamp_every_run(cloud: LocalCloud) -> None:
    """Devices notice a frozen CDN because the timestamp expires in hours: the schedule
    signs a new one each minute, whatever the rollouts do."""
    timestamp = "models/tuf/metadata/timestamp.json"
    s3 = cloud.client("s3")

    def signed_version() -> int:
        body = s3.get_object(Bucket=cloud.names["ARTIFACT_BUCKET"], Key=timestamp)["Body"]
        version: int = json.loads(body.read())["signed"]["version"]
        return version

    before = signed_version()
    result = evaluate_rollouts.handler({}, FakeLambdaContext())
    assert result["resigned"] == ["timestamp"]
    assert signed_version() == before + 1


def _carrying(cloud: LocalCloud) -> list[tuple[str, Nudge]]:
    """Every nudge published, by topic, each checked to be one IoT metering unit."""
    sent = [(p["topic"], Nudge.from_bytes(p["payload"])) for p in cloud.published]
    for p in cloud.published:
        assert len(p["payload"]) + len(p["topic"].encode()) <= IOT_MESSAGE_UNIT
    return sent


TIMESTAMP = REPOSITORY_PREFIX + "tuf/metadata/timestamp.json"


def test_a_stage_nudge_carries_the_metadata_a_device_verifies_without_the_cdn(
    cloud: LocalCloud, tmp_path: Path
) -> None:
    # A device of a model already released, refreshed as every agent does when it starts.
    publish_test_version(cloud, 1)
    device = cloud.device("pump-1", tmp_path)
    device.refresh("vibration", "pump-1", None)
    cloud.published.clear()
    start_test_rollout(cloud)
    sent = _carrying(cloud)
    assert sent
    store = S3Store(cloud.client("s3"), cloud.names["ARTIFACT_BUCKET"], REPOSITORY_PREFIX)
    for _, sent_nudge in sent:
        paths = [path for path, _ in sent_nudge.carried]
        assert paths[0].endswith(".snapshot.json")  # the timestamp: from the CDN only
        assert paths[1].endswith(".vibration.json")
        for path, data in sent_nudge.carried:
            assert store.get(path) == data  # the published bytes, not a re-encoding
    assert cloud.cdn is not None
    shipped = len(cloud.cdn.log.shipments)
    offer = device.refresh("vibration", "pump-1", None, carried=sent[0][1].files)
    assert offer.version == 2  # pump-1 is a named canary
    # Nothing but the timestamp (the root probe is answered on the device; a 404
    # would not be a shipment anyway).
    assert [s.path for s in cloud.cdn.log.shipments[shipped:]] == [TIMESTAMP]


def test_an_abort_nudge_carries_the_withdrawal(cloud: LocalCloud, tmp_path: Path) -> None:
    publish_test_version(cloud, 1)
    device = cloud.device("pump-1", tmp_path)
    device.refresh("vibration", "pump-1", None)  # as every agent does when it starts
    start_test_rollout(cloud)
    cloud.published.clear()
    for thing in ("pump-1", "pump-2", "pump-3"):
        report_status(thing, version=None, health="no_model", step="failed", target_version=2)
    assert deliver_counted(cloud) == {"vibration": "aborted"}
    sent = _carrying(cloud)
    assert sent
    assert all(n.version is None and n.carried for _, n in sent)
    assert cloud.cdn is not None
    shipped = len(cloud.cdn.log.shipments)
    offer = device.refresh("vibration", "pump-1", None, carried=sent[0][1].files)
    assert offer.version is None  # the withdrawn pointer, verified from the nudge's copy
    assert [s.path for s in cloud.cdn.log.shipments[shipped:]] == [TIMESTAMP]


def test_the_status_function_counts_and_the_stream_evaluation_signs(
    cloud: LocalCloud, monkeypatch: Any
) -> None:
    """Devices reach the status function: it counts the outcome that completes stage 0 and
    does nothing else, with no key or bucket in its environment (as the stack gives it).
    The schedule function, invoked by the registry's stream, moves the stage and signs."""
    report_heartbeat("pump-10", version=1)
    start_test_rollout(cloud)
    before = cloud.pointer("vibration")
    published = len(cloud.published)
    objects = _repository_keys(cloud)
    calls: list[str] = []
    for service in ("kms", "s3", "iot"):
        client(service).meta.events.register(
            f"before-call.{service}", lambda model, **_: calls.append(model.name)
        )
    with monkeypatch.context() as status_env:
        status_env.delenv("SIGNING_KEY_ID")
        status_env.delenv("ARTIFACT_BUCKET")
        cloud.new_container()
        assert report_status("pump-1")["counted"] is True
        assert report_status("pump-3")["counted"] is True
    # Counted, and nothing else: the stage, the pointer, the repository and the topics
    # are as they were; no signature, no S3 call, no publish.
    assert registry_of(cloud).stage_counts("vibration", 2, 0) == {"installed": 2, "failed": 0}
    assert rollouts().get("vibration").stage == 0  # type: ignore[union-attr]
    assert cloud.pointer("vibration") == before
    assert _repository_keys(cloud) == objects
    assert len(cloud.published) == published
    assert not [c for c in calls if c not in ("DescribeThing", "ListThingGroupsForThing")]
    # The stream delivers the counts; the schedule function decides and signs.
    cloud.new_container()
    assert deliver_counted(cloud) == {"vibration": "stage 3"}
    assert cloud.pointer("vibration").percent == 50  # type: ignore[union-attr]
    assert len(cloud.published) == published + 50
    assert _repository_keys(cloud) > objects


def _repository_keys(cloud: LocalCloud) -> set[str]:
    listed = cloud.client("s3").list_objects_v2(
        Bucket=cloud.names["ARTIFACT_BUCKET"], Prefix=REPOSITORY_PREFIX
    )
    return {o["Key"] for o in listed.get("Contents", [])}


def test_a_stream_batch_evaluates_only_the_models_it_names(cloud: LocalCloud) -> None:
    """Records of other registry items (the rollout itself, uploads) pass no filter; a
    stage counter names its model, once however many outcomes the batch holds."""
    start_test_rollout(cloud)
    publish_test_version(cloud, 1, "digits")
    assert rollouts().start("digits", 1)
    assert deliver_counted(cloud) is None  # rollout items only: the filter passes nothing
    for thing in ("pump-1", "pump-2"):
        report_status(thing)
    assert cloud.stream is not None
    counted = [r for r in cloud.stream.read() if passes(STAGE_COUNTER_FILTER, r)]
    assert len(counted) >= 2
    json.dumps(counted)  # the event's shape: plain JSON, as Lambda delivers it
    result = evaluate_rollouts.handler(stream_event(counted), FakeLambdaContext())
    assert result["evaluated"] == ["vibration"]
    assert result["decided"] == {"vibration": "stage 4"}
