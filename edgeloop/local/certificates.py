"""The local cloud's certificate authority: it stands in for AWS IoT's CA.

It signs the broker's server certificate, the claim certificate a batch of devices
leaves the factory with, and each device's own certificate from the CSR the device
sends by `CreateCertificateFromCsr`. The device's private key never leaves it.

A certificate's id is the SHA-256 of its DER bytes, as IoT Core's certificate ids
are. The broker takes the subject's common name as the user name (mosquitto's
`use_identity_as_username`), so the CA sets it: the claim's is a name no thing can
have, and a device's is the serial its CSR names, which RegisterThing must then
name too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeloop.contract.topics import check_thing_name
from edgeloop.files import write_private

# '/' is in no thing name, so no device can register the claim's identity.
CLAIM_IDENTITY = "claim/edgeloop"
# How long a device certificate from the local CA lasts: IoT Core's from a CSR last
# until 2049; a local cloud is not kept that long.
DEVICE_DAYS = 3650


class CsrRefused(ValueError):
    """A CSR the CA will not sign: unreadable, badly signed, or naming no serial."""


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def certificate_id(pem: str | bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def common_name(pem: str | bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class LocalCa:
    """A CA in `directory`: made on first use, loaded after."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = directory / "ca.pem"
        key_path = directory / "ca.key"
        if self.cert_path.is_file() and key_path.is_file():
            self._key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            return
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeloop local CA")])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=DEVICE_DAYS + 1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        self._key = key
        write_private(key_path, _key_pem(key))
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    @property
    def pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def _sign(
        self,
        subject: str,
        public_key: ec.EllipticCurvePublicKey,
        usage: x509.ObjectIdentifier,
        hosts: tuple[str, ...] = (),
    ) -> bytes:
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=DEVICE_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pair(
        self, name: str, subject: str, hosts: tuple[str, ...] = (), server: bool = False
    ) -> KeyPair:
        """A key and certificate made here (the broker's, the claim's), kept in the
        CA's directory and reused on the next start."""
        pair = KeyPair(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        if pair.cert.is_file() and pair.key.is_file():
            return pair
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        write_private(pair.key, _key_pem(key))
        pair.cert.write_bytes(self._sign(subject, key.public_key(), usage, hosts))
        return pair

    def sign_csr(self, csr_pem: str) -> str:
        """A device certificate for a CSR, as `CreateCertificateFromCsr` makes one. The
        subject is the serial the CSR names; RegisterThing must name the same."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as exc:
            raise CsrRefused(f"the CSR is not a PEM certificate signing request: {exc}") from exc
        if not csr.is_signature_valid:
            raise CsrRefused("the CSR's signature does not verify with its own key")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CsrRefused("the CSR's key must be an EC key (P-256)")
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        serial = str(names[0].value) if names else ""
        try:
            check_thing_name(serial)
        except ValueError as exc:
            raise CsrRefused(f"the CSR's common name must be the device's serial: {exc}") from exc
        return self._sign(serial, public_key, ExtendedKeyUsageOID.CLIENT_AUTH).decode()
