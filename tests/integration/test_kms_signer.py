"""The KMS signer against moto's server over HTTP."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from edgeloop.contract import HealthCheck, SignatureInvalid, TrustedKeys, load_public_key
from edgeloop.contract.signers import KmsSigner, sign_manifest
from tests.conftest import make_manifest


@pytest.fixture
def kms(moto_endpoint: str) -> Any:
    return boto3.client("kms", endpoint_url=moto_endpoint, region_name="eu-west-1")


@pytest.fixture
def kms_key(kms: Any) -> str:
    key_id: str = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"][
        "KeyId"
    ]
    return key_id


def test_kms_signed_manifest_verifies_with_the_exported_public_key(kms: Any, kms_key: str) -> None:
    signed = sign_manifest(make_manifest(), KmsSigner(kms, kms_key))
    exported = kms.get_public_key(KeyId=kms_key)["PublicKey"]
    trusted = TrustedKeys([load_public_key(exported)])
    assert trusted.verify(signed.to_bytes()) == signed


def test_kms_signs_manifests_larger_than_its_raw_message_limit(kms: Any, kms_key: str) -> None:
    """KMS refuses RAW messages over 4096 bytes; golden inputs make manifests bigger."""
    base = make_manifest(n_features=64)
    golden = HealthCheck(
        inputs=tuple(tuple(float(i * j) for j in range(64)) for i in range(16)),
        expected=tuple((float(i),) for i in range(16)),
        tolerance=1e-4,
    )
    big = base.__class__(**{**base.__dict__, "health_checks": (golden,)})
    assert len(big.to_bytes()) > 4096
    signed = sign_manifest(big, KmsSigner(kms, kms_key))
    trusted = TrustedKeys([load_public_key(kms.get_public_key(KeyId=kms_key)["PublicKey"])])
    assert trusted.verify(signed.to_bytes()).health_checks == (golden,)


def test_kms_signature_fails_under_another_kms_key(kms: Any, kms_key: str) -> None:
    other: str = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"][
        "KeyId"
    ]
    signed = sign_manifest(make_manifest(), KmsSigner(kms, kms_key)).to_json()
    other_signer = KmsSigner(kms, other)
    signed["signature"]["key_id"] = other_signer.key_id
    import json

    with pytest.raises(SignatureInvalid):
        TrustedKeys([other_signer.public_key()]).verify(json.dumps(signed).encode())


def test_kms_key_of_the_wrong_spec_is_refused(kms: Any) -> None:
    rsa: str = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ValueError, match="ECC_NIST_P256"):
        _ = KmsSigner(kms, rsa).key_id
