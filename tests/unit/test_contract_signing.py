"""Signing and verification: any change to a signed manifest is caught."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from edgeloop.contract import (
    InputSpecMismatch,
    Manifest,
    ManifestExpired,
    SignatureInvalid,
    TensorSpec,
    TrustedKeys,
    UnknownKey,
    VersionNotNewer,
    accept_manifest,
    public_key_pem,
)
from edgeloop.contract.signers import LocalSigner, sign_manifest
from tests.conftest import NOW


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _flipped(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1")
    if value is None:
        return 1.0
    raise AssertionError(f"no flip for {value!r}")


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _signed_leaves(manifest: Manifest) -> list[tuple[Any, ...]]:
    return [p for p, _ in _leaves(manifest.to_json()) if p[0] != "signature"]


def test_signed_manifest_verifies(
    signer: LocalSigner, trusted: TrustedKeys, manifest: Manifest
) -> None:
    signed = sign_manifest(manifest, signer)
    assert trusted.verify(signed.to_bytes()) == signed


def test_flipping_any_single_field_breaks_the_signature(
    signer: LocalSigner, trusted: TrustedKeys, manifest: Manifest
) -> None:
    signed = sign_manifest(manifest, signer)
    leaves = _signed_leaves(signed)
    assert len(leaves) > 30  # every field of the fixture, down to health-check numbers
    for path in leaves:
        doc = signed.to_json()
        original = dict(_leaves(doc))[path]
        _set(doc, path, _flipped(original))
        raw = json.dumps(doc).encode()
        with pytest.raises(SignatureInvalid, match="altered after signing"):
            trusted.verify(raw)


def test_an_added_field_breaks_the_signature(
    signer: LocalSigner, trusted: TrustedKeys, manifest: Manifest
) -> None:
    doc = sign_manifest(manifest, signer).to_json()
    doc["artifact_url"] = "https://evil.example/model.tflite"
    with pytest.raises(SignatureInvalid):
        trusted.verify(json.dumps(doc).encode())


def test_unsigned_manifest_is_refused(trusted: TrustedKeys, manifest: Manifest) -> None:
    with pytest.raises(SignatureInvalid, match="unsigned"):
        trusted.verify(manifest.to_bytes())


def test_wrong_key_is_unknown(signer: LocalSigner, manifest: Manifest) -> None:
    signed = sign_manifest(manifest, LocalSigner.generate())
    with pytest.raises(UnknownKey, match="does not trust"):
        TrustedKeys([signer.public_key()]).verify(signed.to_bytes())


def test_forged_key_id_does_not_help(signer: LocalSigner, manifest: Manifest) -> None:
    """An attacker's signature under the trusted key's id still fails."""
    forged = sign_manifest(manifest, LocalSigner.generate()).to_json()
    forged["signature"]["key_id"] = signer.key_id
    with pytest.raises(SignatureInvalid):
        TrustedKeys([signer.public_key()]).verify(json.dumps(forged).encode())


def test_signature_over_other_bytes_is_refused(
    signer: LocalSigner, trusted: TrustedKeys, manifest: Manifest
) -> None:
    other = sign_manifest(manifest, signer)
    doc = manifest.to_json()
    doc["version"] = manifest.version + 10
    doc["signature"] = other.to_json()["signature"]
    with pytest.raises(SignatureInvalid):
        trusted.verify(json.dumps(doc).encode())


def test_garbage_signature_value_is_refused(
    signer: LocalSigner, trusted: TrustedKeys, manifest: Manifest
) -> None:
    doc = sign_manifest(manifest, signer).to_json()
    doc["signature"]["value"] = "not base64!"
    with pytest.raises(SignatureInvalid, match="base64"):
        trusted.verify(json.dumps(doc).encode())
    doc["signature"]["value"] = base64.b64encode(b"\x30\x00").decode()
    with pytest.raises(SignatureInvalid):
        trusted.verify(json.dumps(doc).encode())


def test_key_rotation_trusts_either_pinned_key(manifest: Manifest) -> None:
    old, new = LocalSigner.generate(), LocalSigner.generate()
    trusted = TrustedKeys.from_pem(
        public_key_pem(old.public_key()), public_key_pem(new.public_key())
    )
    for s in (old, new):
        assert trusted.verify(sign_manifest(manifest, s).to_bytes()).version == manifest.version


def test_accept_checks_expiry_version_and_input_in_turn(
    signer: LocalSigner, trusted: TrustedKeys, manifest: Manifest
) -> None:
    raw = sign_manifest(manifest, signer).to_bytes()
    ok = accept_manifest(
        raw, trusted, installed_version=2, device_input=TensorSpec(shape=(-1, 8)), now=NOW
    )
    assert ok.version == 3
    with pytest.raises(ManifestExpired):
        accept_manifest(raw, trusted, installed_version=2, now=NOW.replace(year=2027))
    with pytest.raises(VersionNotNewer):
        accept_manifest(raw, trusted, installed_version=3, now=NOW)
    with pytest.raises(InputSpecMismatch):
        accept_manifest(
            raw, trusted, installed_version=2, device_input=TensorSpec(shape=(-1, 4)), now=NOW
        )


def test_verification_covers_fields_this_agent_does_not_know(
    signer: LocalSigner, trusted: TrustedKeys, manifest: Manifest
) -> None:
    """A newer cloud may add fields; they are signed, and verification still passes."""
    from edgeloop.contract import ALGORITHM, canonical_json
    from edgeloop.contract.verify import signing_statement

    doc = manifest.to_json()
    doc["rollout"] = {"ring": "canary"}
    value = base64.b64encode(signer.sign(signing_statement(canonical_json(doc)))).decode()
    doc["signature"] = {"alg": ALGORITHM, "key_id": signer.key_id, "value": value}
    assert trusted.verify(json.dumps(doc).encode()).version == manifest.version
    doc["rollout"]["ring"] = "all"
    with pytest.raises(SignatureInvalid):
        trusted.verify(json.dumps(doc).encode())
