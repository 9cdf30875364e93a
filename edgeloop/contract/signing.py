"""Signing manifests in the cloud and verifying them on the device.

What is signed is a short statement, `edgeloop-manifest-v1\\n` followed by the
SHA-256 of the manifest's canonical bytes, rather than the bytes themselves.
KMS signs at most 4096 bytes as a RAW message, and manifests carrying golden
health-check inputs grow past that; signing the statement keeps one code path
for KMS, local keys and every manifest size. The prefix separates manifest
signatures from anything else the same key might ever sign.

The key id is derived from the public key (SHA-256 of its DER
SubjectPublicKeyInfo), so a device pinning a PEM file knows the id without
being told, and a manifest cannot claim a key id that does not match its key.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgeloop.contract.errors import MalformedManifest, SignatureInvalid, UnknownKey
from edgeloop.contract.manifest import (
    Manifest,
    Signature,
    TensorSpec,
    canonical_json,
    check_fresh,
    check_input,
    check_newer,
    load_json_object,
    manifest_from_json,
    signature_from_json,
)

ALGORITHM = "ECDSA_P256_SHA256"
_STATEMENT_PREFIX = b"edgeloop-manifest-v1\n"


def signing_statement(payload: bytes) -> bytes:
    return _STATEMENT_PREFIX + hashlib.sha256(payload).hexdigest().encode("ascii")


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()[:32]


def load_public_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """Load a P-256 public key from PEM or DER (KMS GetPublicKey returns DER)."""
    try:
        key = (
            serialization.load_pem_public_key(data)
            if data.lstrip().startswith(b"-----BEGIN")
            else serialization.load_der_public_key(data)
        )
    except ValueError as exc:
        raise ValueError(f"not a PEM or DER public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("manifest keys must be ECDSA P-256 (KMS key spec ECC_NIST_P256)")
    return key


def public_key_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


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


class TrustedKeys:
    """The public keys a device pins, by derived key id."""

    def __init__(self, keys: Iterable[ec.EllipticCurvePublicKey]) -> None:
        self._keys: Mapping[str, ec.EllipticCurvePublicKey] = {key_id_of(k): k for k in keys}
        if not self._keys:
            raise ValueError("at least one trusted manifest key is needed")

    @classmethod
    def from_pem(cls, *pems: bytes) -> TrustedKeys:
        return cls(load_public_key(p) for p in pems)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def verify(self, raw: bytes) -> Manifest:
        """Check the signature over everything but itself, then parse.

        The signature is checked on the raw JSON object before any field is
        interpreted, so nothing an attacker wrote is believed first, and fields
        this version of the agent does not know are covered too.
        """
        doc = load_json_object(raw)
        what = f"manifest for {str(doc.get('model'))[:64]} v{str(doc.get('version'))[:16]}"
        try:
            sig = signature_from_json(doc)
        except MalformedManifest as exc:
            raise SignatureInvalid(f"{what} has an unreadable signature: {exc}") from exc
        if sig is None:
            raise SignatureInvalid(
                f"{what} is unsigned; only manifests signed by the fleet's key are installed"
            )
        if sig.alg != ALGORITHM:
            raise SignatureInvalid(f"signature algorithm {sig.alg!r} is not {ALGORITHM}")
        key = self._keys.get(sig.key_id)
        if key is None:
            raise UnknownKey(
                f"{what} is signed by key {sig.key_id}, which this device does not trust "
                f"(trusted: {', '.join(self.key_ids)}); pin the fleet's public key in the "
                "agent config"
            )
        try:
            signature = base64.b64decode(sig.value, validate=True)
        except ValueError as exc:
            raise SignatureInvalid(f"{what}: signature value is not valid base64") from exc
        unsigned = {k: v for k, v in doc.items() if k != "signature"}
        try:
            payload = canonical_json(unsigned)
        except MalformedManifest as exc:
            raise SignatureInvalid(f"{what} cannot be canonicalised: {exc}") from exc
        try:
            key.verify(signature, signing_statement(payload), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise SignatureInvalid(
                f"signature on {what} does not match its contents; it was altered after "
                "signing, discard it"
            ) from exc
        return manifest_from_json(doc)


def accept_manifest(
    raw: bytes,
    trusted: TrustedKeys,
    *,
    installed_version: int | None,
    device_input: TensorSpec | None = None,
    now: datetime | None = None,
) -> Manifest:
    """Every check a device makes before it spends a byte on downloading.

    Order matters: nothing from an unverified manifest is believed, so the
    signature comes first, then freshness, version and fit.
    """
    manifest = trusted.verify(raw)
    check_fresh(manifest, now or datetime.now(UTC))
    check_newer(manifest, installed_version)
    if device_input is not None:
        check_input(manifest, device_input)
    return manifest
