"""What one enrolled device can do to training, tried against the real retrain handler.

Each test names a way a single device could poison, stall or outvote a model,
and shows the guard that stops it.
"""

from __future__ import annotations

import json

import pytest

from functions.common.env import RetrainEnv, cached_env
from functions.retrain import handler as retrain
from tests.support_aws import FakeLambdaContext, LocalCloud, digit_batches, registry_of


def test_a_far_future_batch_id_does_not_make_an_upload_the_newest(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 2: the order of uploads is the cloud's arrival order, not the key's id."""
    early, honest = digit_batches(2, 0, 200)
    # The budget holds one batch: whichever counts as newest is the one trained on.
    monkeypatch.setenv("MAX_TRAINING_BYTES", str(len(honest) + 100))
    cloud.new_container()  # which reads the setting
    assert cached_env(RetrainEnv).max_training_bytes == len(honest) + 100
    future = cloud.put_batch("digits", "pump-evil", "99999999999999999999-ffffffff.npz", early)
    retrain.handler(cloud.receive_event(1), FakeLambdaContext())
    recent = cloud.put_batch("digits", "pump-7", "00000000000000000001-00000000.npz", honest)
    retrain.handler(cloud.receive_event(1), FakeLambdaContext())
    newest_run = registry_of(cloud).runs("digits")[0]
    record = json.loads(
        cloud.client("s3")
        .get_object(
            Bucket=cloud.names["REGISTRY_BUCKET"],
            Key=f"registry/digits/runs/{newest_run['run_id']}.json",
        )["Body"]
        .read()
    )
    trained_on = [batch["key"] for batch in record["data"]["batches"]]
    assert trained_on == [recent]
    assert future not in trained_on
