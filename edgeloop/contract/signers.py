"""Signing manifests in the cloud: a local PEM key (demo, tests) or an AWS KMS key.

Cloud side only: the device verifies (edgeloop.contract.verify) and never
imports this module, which import-linter checks.
"""

from __future__ import annotations

import base64
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgeloop.contract.manifest import Manifest, Signature
from edgeloop.contract.verify import ALGORITHM, key_id_of, load_public_key, signing_statement


class Signer(Protocol):
    """Something that signs manifest statements with an ECDSA P-256 key."""

    @property
    def key_id(self) -> str: ...

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign(self, message: bytes) -> bytes:
        """DER-encoded ECDSA-SHA256 signature over `message`."""
        ...


class LocalSigner:
    """A PEM private key on disk: for the local demo and tests, never for a fleet."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if private_key.curve.name != "secp256r1":
            raise ValueError("manifest keys must be ECDSA P-256")
        self._key = private_key
        self._key_id = key_id_of(private_key.public_key())

    @classmethod
    def generate(cls) -> LocalSigner:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: bytes) -> LocalSigner:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the signing key must be an ECDSA P-256 private key in PEM")
        return cls(key)

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def key_id(self) -> str:
        return self._key_id

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


class KmsSigner:
    """An AWS KMS asymmetric key (ECC_NIST_P256, SIGN_VERIFY).

    Takes a boto3 KMS client rather than importing boto3, so the contract stays
    importable on a device.
    """

    def __init__(self, kms_client: Any, kms_key_id: str) -> None:
        self._kms = kms_client
        self._kms_key_id = kms_key_id
        self._public: ec.EllipticCurvePublicKey | None = None

    def public_key(self) -> ec.EllipticCurvePublicKey:
        if self._public is None:
            response = self._kms.get_public_key(KeyId=self._kms_key_id)
            if response.get("KeySpec") not in (None, "ECC_NIST_P256"):
                raise ValueError(
                    f"KMS key {self._kms_key_id} has spec {response.get('KeySpec')}; "
                    "manifests need ECC_NIST_P256"
                )
            self._public = load_public_key(response["PublicKey"])
        return self._public

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key())

    def sign(self, message: bytes) -> bytes:
        response = self._kms.sign(
            KeyId=self._kms_key_id,
            Message=message,
            MessageType="RAW",
            SigningAlgorithm="ECDSA_SHA_256",
        )
        signature: bytes = response["Signature"]
        return signature


def sign_manifest(manifest: Manifest, signer: Signer) -> Manifest:
    statement = signing_statement(manifest.signing_payload())
    value = base64.b64encode(signer.sign(statement)).decode("ascii")
    return manifest.with_signature(Signature(alg=ALGORITHM, key_id=signer.key_id, value=value))
