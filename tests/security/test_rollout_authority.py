"""The rollout's authority, against the local AWS: evidence to abort, an abort that wins
every race and every copy, and a rollback that will not quietly undo an abort.

Each test is a finding of the review that tried the rollout as one enrolled device,
an operator in a hurry and the schedule racing them would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from edgeloop.contract.trust_targets import RolloutPointer
from edgeloop.trust import TrustRepository
from functions.common.wiring import rollouts
from functions.evaluate_rollouts import handler as evaluate_rollouts
from functions.retrain import handler as retrain
from functions.rollback import handler as rollback
from functions.rollback.logic import RollbackRefused
from tests.support_aws import (
    FakeLambdaContext,
    LocalCloud,
    deliver_counted,
    digit_batches,
    registry_of,
    report_heartbeat,
    report_status,
    start_test_rollout,
    upload_round,
)


def test_one_devices_failure_in_a_sparse_stage_holds_back_only_its_own_update(
    cloud: LocalCloud,
) -> None:
    """Stage 3 has one device that ever reported (pump-10). Its single `failed` report used
    to abort the rollout for the whole fleet; now it is no evidence: the stage passes and
    v2 goes on to the next stage."""
    report_heartbeat("pump-10", version=1)
    start_test_rollout(cloud, previous=True)
    report_status("pump-1")
    report_status("pump-2")
    assert deliver_counted(cloud) == {"vibration": "stage 3"}
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert (rollout.stage, rollout.needed, rollout.enrolled) == (3, 1, 1)
    report_status("pump-10", version=1, step="failed", target_version=2, health="degraded")
    assert deliver_counted(cloud) == {"vibration": "stage 4"}
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert rollout.state == "rolling"
    pointer = cloud.pointer("vibration")
    assert pointer is not None
    assert pointer.offered == 2


def test_an_abort_needs_failures_from_a_share_of_the_stages_devices(cloud: LocalCloud) -> None:
    """Six named canaries and an abort share of 34%: two failures of three outcomes are
    over the share of outcomes but not of the stage's devices; the third failure is."""
    start_test_rollout(cloud, previous=True)
    report_status("pump-1")
    failed: dict[str, Any] = {"version": 1, "step": "failed", "target_version": 2}
    report_status("pump-2", **failed)
    report_status("pump-3", **failed)
    assert deliver_counted(cloud) == {}
    report_status("pump-4", **failed)
    assert deliver_counted(cloud) == {"vibration": "aborted"}
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert "3 of 4 devices failed to install v2" in rollout.reason


class _PauseBeforeSigning:
    """The rollouts' repository, reached once only after a pause: where a stage change
    has been written and checked, and is about to sign its pointer."""

    def __init__(self, trust: Callable[[], TrustRepository]) -> None:
        self.trust = trust
        self.reached, self.go = threading.Event(), threading.Event()

    def __call__(self) -> TrustRepository:
        if not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(30)
        return self.trust()


def test_an_operators_abort_beats_a_stage_change_decided_before_it(cloud: LocalCloud) -> None:
    """The stream's evaluation writes the canary stage's success, and before it signs the
    next stage's pointer the operator aborts and the schedule carries the abort out
    (withdrawing v2). The late publish is dropped: the pointer stays on v1, v2 reaches
    no band, and the evaluation that moved the stage does not fail."""
    start_test_rollout(cloud, previous=True)
    report_status("pump-1")
    report_status("pump-2")
    shared = rollouts()
    assert shared.trust is not None
    pausing = _PauseBeforeSigning(shared.trust)
    shared.trust = pausing
    raised: list[BaseException] = []

    def stream_delivery() -> None:
        try:
            deliver_counted(cloud)
        except BaseException as exc:  # reported by the test below
            raised.append(exc)

    evaluation = threading.Thread(target=stream_delivery)
    evaluation.start()
    assert pausing.reached.wait(30), "the stage change was never written"
    operator = replace(shared, publisher=None, trust=None)
    operator.abort("vibration")
    evaluate_rollouts.handler({}, FakeLambdaContext())  # the schedule publishes the abort
    pausing.go.set()
    evaluation.join(30)
    assert not raised, raised
    assert cloud.pointer("vibration") == RolloutPointer("vibration", 1, None, 100)
    assert 2 not in {version for _, version in cloud.band_offers("vibration").values()}
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert rollout.state == "aborted"


def test_an_aborted_versions_files_leave_the_cdn_bucket(cloud: LocalCloud) -> None:
    start_test_rollout(cloud, previous=True)
    failed: dict[str, Any] = {"version": 1, "step": "failed", "target_version": 2}
    for thing in ("pump-1", "pump-2", "pump-3"):
        report_status(thing, **failed)
    assert deliver_counted(cloud) == {"vibration": "aborted"}
    rollout = rollouts().get("vibration")
    assert rollout is not None
    assert rollout.state == "aborted"
    evaluate_rollouts.handler({}, FakeLambdaContext())
    s3 = cloud.client("s3")
    listed = s3.list_objects_v2(
        Bucket=cloud.names["ARTIFACT_BUCKET"], Prefix="models/tuf/targets/vibration/"
    ).get("Contents", [])
    keys = [obj["Key"] for obj in listed]
    assert [k for k in keys if "/vibration/1/" in k]  # what devices go back to stays
    assert not [k for k in keys if "/vibration/2/" in k]


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_the_rollback_function_refuses_to_reship_an_aborted_version_unless_told_to(
    cloud: LocalCloud,
) -> None:
    retrain.handler(upload_round(cloud, digit_batches(20, 0, 30), 1), FakeLambdaContext())
    retrain.handler(upload_round(cloud, digit_batches(20, 600, 40), 2), FakeLambdaContext())
    aborted = rollouts().abort("digits")
    assert aborted.version == 2
    with pytest.raises(RollbackRefused, match="v2's rollout was aborted"):
        rollback.handler({"model": "digits", "to_version": 2}, FakeLambdaContext())
    assert registry_of(cloud).latest_version("digits") == 2
    result = rollback.handler(
        {"model": "digits", "to_version": 2, "despite_abort": True}, FakeLambdaContext()
    )
    assert result == {"rollback_version": 3}
