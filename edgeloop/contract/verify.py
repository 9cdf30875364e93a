"""Verifying a manifest on the device: the pinned keys, the signed statement, acceptance.

What is signed is a short statement, `edgeloop-manifest-v1\\n` followed by the
SHA-256 of the manifest's canonical bytes, rather than the bytes themselves.
KMS signs at most 4096 bytes as a RAW message, and manifests carrying golden
health-check inputs grow past that; signing the statement keeps one code path
for KMS, local keys and every manifest size. The prefix separates manifest
signatures from anything else the same key might ever sign.

The key id is derived from the public key (SHA-256 of its DER
SubjectPublicKeyInfo), so a device pinning a PEM file knows the id without
being told, and a manifest cannot claim a key id that does not match its key.
The cloud's signers live in edgeloop.contract.signers, which a device never imports.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgeloop.contract.acceptance import check_fresh, check_input, check_newer
from edgeloop.contract.encoding import EncodingError, canonical_json, utc_now
from edgeloop.contract.errors import MalformedManifest, SignatureInvalid, UnknownKey
from edgeloop.contract.manifest import Manifest, Signature, TensorSpec, load_json_object
from edgeloop.contract.reader import Fields

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
        if doc.get("signature") is None:
            raise SignatureInvalid(
                f"{what} is unsigned; only manifests signed by the fleet's key are installed"
            )
        try:
            sig = Signature.from_json(Fields(doc, "manifest", MalformedManifest).child("signature"))
        except MalformedManifest as exc:
            raise SignatureInvalid(f"{what} has an unreadable signature: {exc}") from exc
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
        except EncodingError as exc:
            raise SignatureInvalid(f"{what} cannot be canonicalised: {exc}") from exc
        try:
            key.verify(signature, signing_statement(payload), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise SignatureInvalid(
                f"signature on {what} does not match its contents; it was altered after "
                "signing, discard it"
            ) from exc
        return Manifest.from_json(doc)


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
    check_fresh(manifest, now or utc_now())
    check_newer(manifest, installed_version)
    if device_input is not None:
        check_input(manifest, device_input)
    return manifest
