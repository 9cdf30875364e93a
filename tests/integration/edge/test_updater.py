"""The update state machine against a real TUF repository, a real HTTP server and the
real interpreter.

Every refusal leaves the old model serving and reports why.
"""

from __future__ import annotations

from edgeloop.delta import compress_full
from tests.support_release import vibration_runs
from tests.support_rig import Rig, assert_serving, install_v1


def test_a_nudge_leads_to_a_verified_patched_swapped_model(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1])
    result = rig.updater().handle("nudge: vibration v2")
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
    assert rig.served(2, "model.tflite") == 0
    patches = [p for p in rig.server.files if ".from-1." in p and "/vibration/2/" in p]
    assert patches
    assert all(rig.server.served(p) == 1 for p in patches)
    assert rig.reopen().current().version == 2  # type: ignore[union-attr]
    assert rig.reopen().previous().version == 1  # type: ignore[union-attr]


def test_the_first_model_arrives_as_the_full_artifact(rig: Rig) -> None:
    install_v1(rig)
    assert rig.served(1, "model.tflite") == 1


def test_without_a_usable_patch_the_compressed_full_artifact_travels(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, compressed=True)  # no patch for v1 published
    result = rig.updater().handle()
    assert result.step == "succeeded", result.detail
    assert_serving(rig, 2)
    assert rig.served(2, "model.tflite.zstd") == 1
    assert rig.served(2, "model.tflite") == 0
    packed = rig.server.files[rig.key(2, "model.tflite.zstd")]
    assert len(packed) < len(rig.server.files[rig.key(2, "model.tflite")])


def test_golden_inputs_already_held_are_not_fetched_again(rig: Rig) -> None:
    """Honest bytes: the golden inputs are content-addressed; v2 has v1's."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    manifest = rig.releases.release(2, v2, bases=[1])
    assert manifest.health_checks[0].inputs == rig.store.current().manifest.health_checks[0].inputs  # type: ignore[union-attr]
    golden = [p for p in rig.server.files if "/vibration/golden/" in p]
    assert len(golden) == 1
    assert rig.updater().handle().step == "succeeded"
    assert rig.server.served(golden[0]) == 1  # for v1 only


def test_a_compressed_artifact_that_inflates_past_the_model_size_is_not_used(rig: Rig) -> None:
    """A signed but wrong (or hostile) compressed file must not make the device
    allocate more than the model's declared size; the device fetches the
    uncompressed artifact instead."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    bomb = compress_full(b"\0" * 50_000_000)
    assert len(bomb) < len(v2.tflite or b"")
    rig.releases.release(2, v2, packed={"zstd": bomb})
    result = rig.updater().handle()
    assert result.step == "succeeded", result.detail
    assert any("compressed artifact unusable" in d for _, _, d in rig.reports)
    assert rig.served(2, "model.tflite") == 1
    assert_serving(rig, 2)


def test_an_encoding_this_agent_does_not_know_is_skipped(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, packed={"br": b"brotli?"})
    assert rig.updater().handle().step == "succeeded"
    assert rig.served(2, "model.tflite.br") == 0
    assert rig.served(2, "model.tflite") == 1
