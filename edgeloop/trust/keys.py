"""The repository's keys: offline root keys in local files, the online key in AWS KMS.

Root keys are ECDSA P-256 in PKCS#8 PEM files, encrypted with a passphrase by
default. A root key file is carried on removable media between ceremonies; an
encrypted file that is copied or lost is not yet a key, and the passphrase is a
second thing an attacker must get. Plain files exist for the demo and tests,
and the CLI warns every time it writes or reads one.

The online key signs targets, snapshot and timestamp. It is the KMS key the
functions already use (ECC_NIST_P256), reached through securesystemslib's AWS
KMS signer with the caller's boto3 client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import AWSSigner, CryptoSigner, Signature, SSlibKey
from securesystemslib.signer._utils import compute_default_keyid

KEY_TYPE = "ecdsa"
SCHEME = "ecdsa-sha2-nistp256"
KMS_KEY_SPEC = "ECC_NIST_P256"
# KMS signs at most this many bytes as a RAW message; longer payloads go as a digest.
KMS_RAW_LIMIT = 4096


class KeyFileError(ValueError):
    """A root key file that cannot be used: wrong passphrase, wrong curve, not a key."""


def public_key_of(public: ec.EllipticCurvePublicKey) -> SSlibKey:
    if public.curve.name != "secp256r1":
        raise KeyFileError("trust keys must be ECDSA P-256")
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    keyval = {"public": pem}
    return SSlibKey(compute_default_keyid(KEY_TYPE, SCHEME, keyval), KEY_TYPE, SCHEME, keyval)


def generate_root_key(path: Path, passphrase: bytes | None) -> CryptoSigner:
    """A new P-256 root key written to `path` (mode 0600); None writes it unencrypted."""
    private = ec.generate_private_key(ec.SECP256R1())
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 rather than chmod-ed after, so the key is never readable by others;
    # O_EXCL because a root key is never overwritten.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} exists; a root key file is never overwritten") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return CryptoSigner(private, public_key_of(private.public_key()))


def is_encrypted(pem: bytes) -> bool:
    return b"ENCRYPTED" in pem.split(b"\n", 1)[0]


def load_root_key(path: Path, passphrase: bytes | None) -> CryptoSigner:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror}") from exc
    try:
        private = serialization.load_pem_private_key(
            pem, password=passphrase if is_encrypted(pem) else None
        )
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: cannot load the key (wrong passphrase?): {exc}") from exc
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{path} is not an ECDSA P-256 private key")
    return CryptoSigner(private, public_key_of(private.public_key()))


class KmsSigner(AWSSigner):
    """securesystemslib's AWS KMS signer over the caller's boto3 client.

    Payloads that fit go to KMS as RAW messages, so KMS hashes them itself;
    only larger ones are sent as a digest, the one thing AWSSigner does. moto
    (the test stand-in) ignores the DIGEST message type and hashes twice, so
    the repository's tests keep the KMS-signed roles under the RAW limit.
    """

    def __init__(self, kms: Any, aws_key_id: str, public_key: SSlibKey) -> None:
        # Not AWSSigner.__init__: it makes a boto3 client of its own from the process's
        # environment, which may not name a region (or the endpoint) the caller's does.
        self.aws_key_id = aws_key_id
        self._public_key = public_key
        self.client = kms
        self.aws_algo = self.aws_algos[public_key.scheme]

    @classmethod
    def of_key(cls, kms: Any, aws_key_id: str) -> KmsSigner:
        response = kms.get_public_key(KeyId=aws_key_id)
        if response.get("KeySpec") not in (None, KMS_KEY_SPEC):
            raise KeyFileError(
                f"KMS key {aws_key_id} has spec {response.get('KeySpec')}; "
                f"the online trust key must be {KMS_KEY_SPEC}"
            )
        public = serialization.load_der_public_key(response["PublicKey"])
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise KeyFileError(f"KMS key {aws_key_id} is not {KMS_KEY_SPEC}")
        return cls(kms, aws_key_id, public_key_of(public))

    def sign(self, payload: bytes) -> Signature:
        if len(payload) > KMS_RAW_LIMIT:
            return super().sign(payload)
        response = self.client.sign(
            KeyId=self.aws_key_id,
            Message=payload,
            MessageType="RAW",
            SigningAlgorithm=self.aws_algo,
        )
        return Signature(self.public_key.keyid, response["Signature"].hex())
