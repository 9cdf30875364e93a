"""The manifest's byte form, parsing and acceptance checks; a version's spec and the nudge."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeloop.contract import (
    CompressedRef,
    EncodingError,
    HashMismatch,
    InputSpecMismatch,
    MalformedManifest,
    MalformedNudge,
    Manifest,
    Nudge,
    SizeMismatch,
    TensorSpec,
    canonical_json,
    check_blob,
    check_input,
    parse_manifest,
    sha256_hex,
)
from edgeloop.contract.trust_targets import (
    MalformedTrustTarget,
    VersionSpec,
    golden_bytes,
    golden_inputs,
)
from tests.conftest import make_manifest


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@given(seed=st.integers(min_value=0, max_value=2**32))
def test_canonical_bytes_are_stable_across_dict_orderings(seed: int) -> None:
    doc = make_manifest().to_json()
    assert canonical_json(_shuffled(doc, random.Random(seed))) == canonical_json(doc)


def test_canonical_bytes_have_sorted_keys_and_no_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, 2], "é": "ü"}) == '{"a":[1,2],"b":1,"é":"ü"}'.encode()


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(EncodingError, match="NaN"):
        canonical_json({"x": float("nan")})


def test_manifest_round_trips_through_its_bytes(manifest: Manifest) -> None:
    assert parse_manifest(manifest.to_bytes()) == manifest


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "must be a JSON object"),
    ],
)
def test_malformed_bytes_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedManifest, match=message):
        parse_manifest(raw)


@pytest.mark.parametrize("field", ["model", "version", "created_at", "input", "artifact", "deltas"])
def test_missing_field_is_named(manifest: Manifest, field: str) -> None:
    doc = manifest.to_json()
    del doc[field]
    with pytest.raises(MalformedManifest, match=f"manifest.{field} is missing"):
        parse_manifest(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("version",), "3", "manifest.version must be an integer"),
        (("version",), True, "manifest.version must be an integer"),
        (("version",), 0, "manifest.version must be an integer >= 1"),
        (("artifact", "sha256"), "XYZ", "manifest.artifact.sha256 must be 64"),
        (("artifact", "size"), -1, "manifest.artifact.size must be an integer >= 1"),
        (("artifact", "path"), "../../etc/passwd", "must be a relative path"),
        (("artifact", "path"), "https://evil.example/m", "must be a relative path"),
        (("model",), "a/b", "model name"),
        (("metrics",), {"accuracy": "high"}, "manifest.metrics.accuracy must be a finite number"),
    ],
)
def test_wrong_type_is_named(
    manifest: Manifest, path: tuple[str, ...], value: Any, message: str
) -> None:
    doc = manifest.to_json()
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(MalformedManifest, match=message):
        parse_manifest(json.dumps(doc).encode())


def test_input_spec_mismatch_is_refused(manifest: Manifest) -> None:
    with pytest.raises(InputSpecMismatch, match="this device produces"):
        check_input(manifest, TensorSpec(shape=(-1, 9)))
    with pytest.raises(InputSpecMismatch):
        check_input(manifest, TensorSpec(shape=(-1, 8), dtype="int8"))
    with pytest.raises(InputSpecMismatch):
        check_input(manifest, TensorSpec(shape=(-1, 8), names=tuple("abcdefgh")))
    check_input(manifest, TensorSpec(shape=(1, 8)))


def test_blob_size_and_hash_are_checked() -> None:
    data = b"model-bytes"
    check_blob(data, size=len(data), sha256=sha256_hex(data), what="artifact")
    with pytest.raises(SizeMismatch, match="12 bytes but the manifest declares 11"):
        check_blob(data + b"!", size=len(data), sha256=sha256_hex(data), what="artifact")
    with pytest.raises(HashMismatch, match="tampered"):
        check_blob(b"model-bytez", size=len(data), sha256=sha256_hex(data), what="artifact")


def test_delta_from_picks_the_smallest_patch_for_the_installed_base() -> None:
    manifest = make_manifest()
    base = manifest.deltas[0].from_sha256
    assert manifest.delta_from(base) == manifest.deltas[0]
    assert manifest.delta_from(sha256_hex(b"other")) is None


def test_a_compressed_artifact_round_trips_and_an_old_manifest_has_none(
    manifest: Manifest,
) -> None:
    packed = CompressedRef("zstd", "models/m/2/model.tflite.zst", "c" * 64, 700)
    with_packed = replace(manifest, artifact=replace(manifest.artifact, compressed=packed))
    assert parse_manifest(with_packed.to_bytes()).artifact.compressed == packed
    assert with_packed.to_json()["artifact"]["compressed"]["encoding"] == "zstd"
    # A version without a compressed target has no such key.
    assert "compressed" not in manifest.to_json()["artifact"]
    assert parse_manifest(manifest.to_bytes()).artifact.compressed is None


def test_a_compressed_artifact_path_is_checked_like_any_other(manifest: Manifest) -> None:
    doc = manifest.to_json()
    doc["artifact"]["compressed"] = {
        "encoding": "zstd",
        "path": "../../etc/passwd",
        "sha256": "c" * 64,
        "size": 10,
    }
    with pytest.raises(MalformedManifest, match=r"manifest\.artifact\.compressed\.path"):
        parse_manifest(json.dumps(doc).encode())


def test_a_version_spec_round_trips_and_rebuilds_the_manifest(manifest: Manifest) -> None:
    spec = VersionSpec.of(manifest)
    assert VersionSpec.from_bytes(spec.to_bytes()) == spec
    golden = manifest.health_checks[0].inputs
    rebuilt = spec.manifest(manifest.artifact, golden_inputs(golden_bytes(golden)), manifest.deltas)
    assert rebuilt == manifest


def test_an_upload_request_is_signed_with_the_version_and_absent_when_not_asked(
    manifest: Manifest,
) -> None:
    asking = replace(manifest, upload_sample_rate=0.5)
    spec = VersionSpec.of(asking)
    assert VersionSpec.from_bytes(spec.to_bytes()).upload_sample_rate == 0.5
    assert parse_manifest(asking.to_bytes()) == asking
    golden = manifest.health_checks[0].inputs
    rebuilt = spec.manifest(manifest.artifact, golden_inputs(golden_bytes(golden)), manifest.deltas)
    assert rebuilt.upload_sample_rate == 0.5
    # A version that asks nothing keeps the bytes it had before the field existed.
    assert b"upload" not in VersionSpec.of(manifest).to_bytes()
    assert b"upload" not in manifest.to_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"upload": {"sample_rate": 2.0}}, "spec.upload.sample_rate"),
        ({"upload": {}}, "spec.upload.sample_rate is missing"),
        ({"model": "Not A Name"}, "spec.model"),
        ({"created_at": "yesterday"}, "spec.created_at"),
        ({"tolerance": -1}, "spec.tolerance"),
        ({"expected": "none"}, "spec.expected"),
    ],
)
def test_a_malformed_spec_is_refused_with_the_field_named(
    manifest: Manifest, change: dict[str, Any], message: str
) -> None:
    doc = json.loads(VersionSpec.of(manifest).to_bytes())
    doc.update(change)
    with pytest.raises(MalformedTrustTarget, match=message):
        VersionSpec.from_bytes(json.dumps(doc).encode())


def test_golden_inputs_that_do_not_match_the_expected_outputs_are_refused(
    manifest: Manifest,
) -> None:
    spec = VersionSpec.of(manifest)
    with pytest.raises(MalformedTrustTarget, match="golden inputs"):
        spec.manifest(manifest.artifact, ())


def test_a_nudge_round_trips_and_anything_else_is_malformed() -> None:
    assert Nudge.from_bytes(Nudge("vibration", 3).to_bytes()) == Nudge("vibration", 3)
    assert Nudge.from_bytes(b'{"model":"vibration","version":null}').version is None
    for raw in (b"", b"\xff", b"[]", b'{"model":"v","version":1,"extra":1}', b"x" * 300):
        with pytest.raises(MalformedNudge):
            Nudge.from_bytes(raw)
