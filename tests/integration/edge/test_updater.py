"""The update state machine against a real HTTP server and the real interpreter.

Every refusal leaves the old model serving and reports why.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from edgeloop.contract import CompressedRef, Manifest, sha256_hex
from edgeloop.delta import compress_full
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


def test_without_a_usable_patch_the_compressed_full_artifact_travels(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(2, v2, compressed=True)  # no patch for v1 published
    result = rig.updater().handle(raw)
    assert result.step == "succeeded", result.detail
    assert_serving(rig, 2)
    packed = "models/vibration/2/model.tflite.zst"
    assert rig.server.served(packed) == 1
    assert rig.server.served("models/vibration/2/model.tflite") == 0
    assert len(rig.server.files[packed]) < len(rig.server.files["models/vibration/2/model.tflite"])


def _pointing_compressed_at(path: str, data: bytes, encoding: str = "zstd") -> Any:
    def mutate(manifest: Manifest) -> Manifest:
        packed = CompressedRef(encoding, path, sha256_hex(data), len(data))
        return replace(manifest, artifact=replace(manifest.artifact, compressed=packed))

    return mutate


def test_a_compressed_artifact_that_inflates_past_the_model_size_is_not_used(rig: Rig) -> None:
    """A signed but wrong (or hostile) compressed file must not make the device
    allocate more than the model's declared size; the device fetches the
    uncompressed artifact instead."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    bomb = compress_full(b"\0" * 50_000_000)
    rig.server.files["models/vibration/2/bomb.zst"] = bomb
    raw = rig.releases.release(
        2, v2, mutate=_pointing_compressed_at("models/vibration/2/bomb.zst", bomb)
    )
    result = rig.updater().handle(raw)
    assert result.step == "succeeded", result.detail
    assert any("compressed artifact unusable" in d for _, _, d in rig.reports)
    assert rig.server.served("models/vibration/2/model.tflite") == 1
    assert_serving(rig, 2)


def test_an_encoding_this_agent_does_not_know_is_skipped(rig: Rig) -> None:
    install_v1(rig)
    _, v2, _ = vibration_runs()
    raw = rig.releases.release(
        2, v2, mutate=_pointing_compressed_at("models/vibration/2/m.br", b"brotli?", "br")
    )
    assert rig.updater().handle(raw).step == "succeeded"
    assert rig.server.served("models/vibration/2/m.br") == 0
    assert rig.server.served("models/vibration/2/model.tflite") == 1
