"""The update state machine against a real HTTP server and the real interpreter.

Every refusal leaves the old model serving and reports why.
"""

from __future__ import annotations

from tests.support_release import vibration_runs
from tests.support_rig import Rig, assert_serving, install_v1


def test_an_announcement_leads_to_a_verified_patched_swapped_model(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2, bases=[1])
    result = rig.updater().handle(raw)
    assert result.step == "succeeded", result.detail
    assert rig.steps() == [
        "received",
        "verified",
        "downloading",
        "patching",
        "checking",
        "swapped",
        "persisted",
        "succeeded",
    ]
    assert_serving(rig, 2)
    # The patch travelled, not the full model.
    assert rig.server.served("models/vibration/2/model.tflite") == 0
    assert any(
        p.startswith("models/vibration/2/from-1.") and n
        for p, n in [(p, rig.server.served(p)) for p in rig.server.files]
    )
    assert rig.reopen().current().version == 2  # type: ignore[union-attr]
    assert rig.reopen().previous().version == 1  # type: ignore[union-attr]


def test_the_first_model_arrives_as_the_full_artifact(rig: Rig) -> None:
    install_v1(rig)
    assert rig.server.served("models/vibration/1/model.tflite") == 1
