"""What one enrolled device can do to training, tried against the real retrain handler.

Each test names a way a single device could poison, stall or outvote a model,
and shows the guard that stops it.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from functions.common.env import RetrainEnv, cached_env
from functions.common.wiring import rollouts
from functions.retrain import handler as retrain
from tests.support_aws import (
    FakeLambdaContext,
    LocalCloud,
    ask_presign,
    digit_batches,
    npz_bytes,
    registry_of,
    report_status,
    start_test_rollout,
    upload_round,
)


def test_a_far_future_batch_id_does_not_make_an_upload_the_newest(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 2: the order of uploads is the cloud's arrival order, not the key's id."""
    early, honest = digit_batches(2, 0, 200)
    # The budget holds one batch: whichever counts as newest is the one trained on.
    monkeypatch.setenv("MAX_TRAINING_BYTES", str(len(honest) + 100))
    cloud.new_container()  # which reads the setting
    assert cached_env(RetrainEnv).max_training_bytes == len(honest) + 100
    # One device, so the per-device share does not decide: only the order does.
    future = cloud.put_batch("digits", "pump-7", "99999999999999999999-ffffffff.npz", early)
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
    assert _quarantined(cloud) == []  # the older one is kept, not thrown away


def test_a_device_gets_no_upload_grant_under_another_models_prefix(cloud: LocalCloud) -> None:
    """Finding 1: presign grants only for the model the registry enrols the thing for."""
    answer = ask_presign("pump-1", model="digits")  # pump-1 is enrolled for vibration
    assert answer["error"]["code"] == "wrong_model"  # type: ignore[index]
    assert "enrolled for model 'vibration'" in answer["error"]["message"]  # type: ignore[index]
    granted = ask_presign("pump-1", model="vibration")
    assert str(granted["key"]).startswith("data/vibration/pump-1/")


def test_an_unenrolled_thing_gets_no_grant(cloud: LocalCloud) -> None:
    answer = ask_presign("stranger-1")
    assert answer["error"]["code"] == "unknown_device"  # type: ignore[index]


def test_grants_past_the_devices_limit_are_refused_with_when_to_ask_again(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRANTS_PER_WINDOW", "3")
    cloud.new_container()
    for _ in range(3):
        assert "url" in ask_presign("pump-7")
    refused = ask_presign("pump-7")
    assert refused["error"]["code"] == "rate_limited"  # type: ignore[index]
    assert "ask again in" in refused["error"]["message"]  # type: ignore[index]
    assert "url" in ask_presign("pump-8")  # another device is not held back


def test_devices_of_another_model_cannot_promote_a_rollout(cloud: LocalCloud) -> None:
    """Finding 4: two digits devices reporting that they installed vibration's v2."""
    registry = start_test_rollout(cloud)
    for thing in ("pump-7", "pump-8"):
        result = report_status(thing, model="vibration")
        assert result["recorded"] is False
        assert "enrolled for 'digits'" in result["reason"]
    assert registry.stage_counts("vibration", 2, 0) == {"installed": 0, "failed": 0}
    assert rollouts().get("vibration").stage == 0  # type: ignore[union-attr]


def _quarantined(cloud: LocalCloud) -> list[str]:
    listing = cloud.client("s3").list_objects_v2(
        Bucket=cloud.names["DATA_BUCKET"], Prefix="quarantine/"
    )
    return [o["Key"] for o in listing.get("Contents", [])]


def test_one_device_uploading_in_a_loop_cannot_push_the_others_out_of_a_run(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 2 by another route: a device filling the budget with the newest uploads."""
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    rows = 150
    flood = 600
    # The budget holds two of the flooding device's batches and nothing else.
    monkeypatch.setenv("MAX_TRAINING_BYTES", str(2 * flood * (64 * 8 + 8) + 500))
    cloud.new_container()
    for thing in ("pump-10", "pump-11", "pump-12"):
        cloud.enroll(thing, "digits")
    honest = [f"pump-{i}" for i in (7, 8, 9, 10, 11, 12)]
    for i, thing in enumerate(honest):
        part = slice(i * rows, (i + 1) * rows)
        cloud.put_batch(
            "digits", thing, f"0000000000000000000{i}-00000000.npz", npz_bytes(X[part], y[part])
        )
    retrain.handler(cloud.receive_event(len(honest)), FakeLambdaContext())
    cloud.enroll("pump-evil", "digits")
    shifted = (y[1000 : 1000 + flood] + 1) % 10
    for j in range(2):
        cloud.put_batch(
            "digits",
            "pump-evil",
            f"0000000000000000009{j}-00000000.npz",
            npz_bytes(X[1000 : 1000 + flood], shifted),
        )
    retrain.handler(cloud.receive_event(2), FakeLambdaContext())
    data = _run_record(cloud)["data"]
    assert isinstance(data, dict)
    devices = {batch["device"] for batch in data["batches"]}
    assert set(honest) <= devices
    assert _quarantined(cloud) == []


def _run_record(cloud: LocalCloud) -> dict[str, object]:
    run = registry_of(cloud).runs("digits")[0]
    record: dict[str, object] = json.loads(
        cloud.client("s3")
        .get_object(
            Bucket=cloud.names["REGISTRY_BUCKET"], Key=f"registry/digits/runs/{run['run_id']}.json"
        )["Body"]
        .read()
    )
    return record


def test_the_training_budget_counts_decoded_bytes_not_bytes_on_the_wire(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 3: zeros compress ~1,000:1; the budget must see what they decode to."""
    X = np.zeros((2000, 64))
    y = np.zeros(2000, dtype=np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=X, y=y)
    packed = buffer.getvalue()
    decoded = X.nbytes + y.nbytes
    assert len(packed) * 50 < decoded
    monkeypatch.setenv("MAX_TRAINING_BYTES", str(decoded + 1000))
    cloud.new_container()
    for i in range(3):
        cloud.put_batch("digits", "pump-7", f"0000000000000000000{i}-00000000.npz", packed)
    retrain.handler(cloud.receive_event(3), FakeLambdaContext())
    data = _run_record(cloud)["data"]
    assert isinstance(data, dict)
    assert len(data["batches"]) == 1  # three fit the budget on the wire, one decoded
    assert _quarantined(cloud) == []  # the two that did not fit are kept for later runs
    # A model trained on a window of the data says so in its run.
    assert data["left_out"]["uploads"] == 2
    assert "MAX_TRAINING_BYTES" in data["left_out"]["reason"]


def test_a_reference_set_the_candidate_fails_refuses_the_run_in_the_cloud(
    cloud: LocalCloud,
) -> None:
    """The reference set is read from its prefix in the data bucket and judges every run."""
    config = cloud.config_dir / "digits.toml"
    config.write_text(
        config.read_text().replace("[gate]\n", '[gate]\nreference = "reference/digits/"\n')
    )
    cloud.new_container()
    Xr, yr = load_digits(return_X_y=True)
    wrong = (yr[:300] + 1) % 10  # a reference set no honest model agrees with
    cloud.client("s3").put_object(
        Bucket=cloud.names["DATA_BUCKET"],
        Key="reference/digits/set-1.npz",
        Body=npz_bytes(Xr[:300], wrong),
    )
    retrain.handler(upload_round(cloud, digit_batches(20, 300, 40), 1), FakeLambdaContext())
    [run] = registry_of(cloud).runs("digits")
    assert run["decision"] == "refused"
    assert "reference" in run["reason"]
    assert registry_of(cloud).latest_version("digits") == 0
