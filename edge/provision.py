"""Provisioning by claim, on the device: its own key, a certificate for it, a thing.

The agent starts with a claim certificate and its serial. It makes an EC P-256
key here (the key is never sent anywhere), asks `CreateCertificateFromCsr` for a
certificate, then `RegisterThing` for the thing its serial names. The cloud's
hook decides whether the serial is admitted and which model it runs. The key,
the certificate and what the cloud answered are kept owner-only in the state
directory (`identity/`); the answer file is written last, so an interrupted
provisioning leaves nothing half-made to trust and is simply done again.

Every later start uses that identity and never the claim again. Answers are
taken only when they are this device's: a certificate for its own key, a thing
named by its serial, a refusal of its serial (see
`edgeloop.contract.provisioning.is_for`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from edge.backoff import Backoff
from edge.config import AgentConfig, ProvisioningSection
from edge.errors import AgentConfigError, ProvisioningFailed
from edge.tls import broker_tls
from edgeloop.contract.device_policy import MODEL_ATTRIBUTE
from edgeloop.contract.provisioning import (
    SERIAL,
    CallRejected,
    CertificateIssued,
    ProvisioningRefused,
    RegisterRequest,
    ThingRegistered,
    create_from_csr,
    csr_request,
    is_for,
    register_thing,
)
from edgeloop.contract.topics import check_model_name, check_thing_name
from edgeloop.files import write_private

log = logging.getLogger(__name__)

IDENTITY_DIR = "identity"
CERT_FILE = "device.pem"
KEY_FILE = "device.key"
ANSWER_FILE = "identity.json"


@dataclass(frozen=True)
class Identity:
    thing: str
    model: str
    certificate_id: str
    cert: Path
    key: Path


def _identity_dir(config: AgentConfig) -> Path:
    return config.state.dir / IDENTITY_DIR


def load_identity(directory: Path) -> Identity | None:
    answer = directory / ANSWER_FILE
    if not answer.is_file():
        return None
    try:
        doc = json.loads(answer.read_text())
        return Identity(
            thing=check_thing_name(doc["thing"]),
            model=check_model_name(doc["model"]),
            certificate_id=str(doc["certificate_id"]),
            cert=directory / CERT_FILE,
            key=directory / KEY_FILE,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise AgentConfigError(
            f"{answer} is damaged ({exc}): remove {directory} to provision this device again"
        ) from exc


def with_identity(config: AgentConfig, identity: Identity) -> AgentConfig:
    """The config as this thing: its name, its model and its own certificate."""
    return replace(
        config,
        device=replace(config.device, thing=identity.thing, model=identity.model),
        broker=replace(config.broker, cert=identity.cert, key=identity.key),
    )


class _Exchange:
    """One MQTT connection with the claim, and the answers it waits for."""

    def __init__(self, config: AgentConfig, section: ProvisioningSection, serial: str) -> None:
        self.section = section
        self.serial = serial
        self._csr = create_from_csr()
        self._register = register_thing(section.template)
        self._answers: dict[str, list[bytes]] = {}
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self._connect_error: str | None = None
        broker = config.broker
        # A client id of its own: the claim is shared, and a broker drops the older of
        # two connections with one id.
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"provision-{serial}-{secrets.token_hex(3)}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        self._client.tls_set_context(broker_tls(broker, section.claim_cert, section.claim_key))
        self._client.on_connect = self._connected
        self._client.on_subscribe = self._on_subscribed
        self._client.on_message = self._message
        self._host, self._port, self._keepalive = broker.host, broker.port, broker.keepalive

    def __enter__(self) -> _Exchange:
        try:
            self._client.connect(self._host, self._port, keepalive=self._keepalive)
        except (OSError, ssl.SSLError) as exc:
            raise ProvisioningFailed(
                f"cannot reach the broker at {self._host}:{self._port} with the claim: {exc}",
                final=False,
            ) from exc
        self._client.loop_start()
        if not self._subscribed.wait(self.section.timeout):
            self.close()
            why = self._connect_error or "no subscription acknowledged"
            raise ProvisioningFailed(
                f"the broker did not take the claim within {self.section.timeout} s ({why})",
                final=False,
            )
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            self._client.disconnect()
        self._client.loop_stop()

    def _connected(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._connect_error = f"connection refused: {reason}"
            return
        # Subscribe before asking: the answers are published once, to whoever listens.
        client.subscribe(
            [
                (topic, 1)
                for call in (self._csr, self._register)
                for topic in (call.accepted, call.rejected)
            ]
        )

    def _on_subscribed(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        if any(r.is_failure for r in reasons):
            self._connect_error = "the broker refused the claim's subscriptions (is it a claim?)"
            return
        self._subscribed.set()

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self._answers.setdefault(message.topic, []).append(bytes(message.payload))
            self._changed.notify_all()

    def _take(self, topic: str) -> list[bytes]:
        return self._answers.pop(topic, [])

    def call(
        self, request_topic: str, payload: bytes, accepted: str, rejected: str, mine: Any
    ) -> bytes:
        """Publish one request and wait for the first answer that is this device's:
        the accepted payload, or ProvisioningFailed from its refusal."""
        with self._changed:
            self._take(accepted)
            self._take(rejected)
        self._client.publish(request_topic, payload, qos=1)
        deadline = time.monotonic() + self.section.timeout
        with self._changed:
            while True:
                for data in self._take(accepted):
                    # Another device's answer, or a malformed one, is not this one's.
                    with contextlib.suppress(ProvisioningRefused, ValueError):
                        if mine(data):
                            return data
                for data in self._take(rejected):
                    try:
                        refusal = CallRejected.from_bytes(data)
                    except ProvisioningRefused:
                        continue
                    if is_for(refusal, self.serial):
                        raise ProvisioningFailed(
                            f"{request_topic} refused: {refusal.status_code} "
                            f"{refusal.error_code}: {refusal.message}",
                            # A client error is this device's to fix; a server's may pass.
                            final=400 <= refusal.status_code < 500 and refusal.status_code != 429,
                        )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProvisioningFailed(
                        f"no answer on {accepted} within {self.section.timeout} s", final=False
                    )
                self._changed.wait(left)

    def create_certificate(self, key: ec.EllipticCurvePrivateKey) -> CertificateIssued:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.serial)]))
            .sign(key, hashes.SHA256())
        )
        ours = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

        def mine(data: bytes) -> bool:
            issued = CertificateIssued.from_bytes(data)
            cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
            theirs = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return theirs == ours

        data = self.call(
            self._csr.request,
            csr_request(csr.public_bytes(serialization.Encoding.PEM).decode()),
            self._csr.accepted,
            self._csr.rejected,
            mine,
        )
        return CertificateIssued.from_bytes(data)

    def register(self, issued: CertificateIssued) -> ThingRegistered:
        def mine(data: bytes) -> bool:
            return ThingRegistered.from_bytes(data).thing_name == self.serial

        request = RegisterRequest(issued.ownership_token, {SERIAL: self.serial})
        data = self.call(
            self._register.request,
            request.to_bytes(),
            self._register.accepted,
            self._register.rejected,
            mine,
        )
        return ThingRegistered.from_bytes(data)


def provision(config: AgentConfig, serial: str) -> Identity:
    """One provisioning by claim, start to end; ProvisioningFailed if it did not."""
    section = config.provisioning
    if section is None:
        raise AgentConfigError("no [provisioning] section: this device is enrolled by hand")
    directory = _identity_dir(config)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        with _Exchange(config, section, serial) as exchange:
            issued = exchange.create_certificate(key)
            registered = exchange.register(issued)
    except ProvisioningRefused as exc:
        raise ProvisioningFailed(f"the cloud's answer is not AWS's shape: {exc}", False) from exc
    model = registered.device_configuration.get(MODEL_ATTRIBUTE, "")
    try:
        check_model_name(model)
    except ValueError as exc:
        raise ProvisioningFailed(
            f"RegisterThing named no usable model ({exc}): the provisioning template must "
            f"return deviceConfiguration.{MODEL_ATTRIBUTE}",
            final=True,
        ) from exc
    write_private(
        directory / KEY_FILE,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private(directory / CERT_FILE, issued.certificate_pem.encode())
    answer = {
        "thing": registered.thing_name,
        "model": model,
        "certificate_id": issued.certificate_id,
        "serial": serial,
    }
    staged = directory / (ANSWER_FILE + ".new")
    write_private(staged, json.dumps(answer, indent=2).encode())
    staged.replace(directory / ANSWER_FILE)
    return Identity(
        registered.thing_name,
        model,
        issued.certificate_id,
        directory / CERT_FILE,
        directory / KEY_FILE,
    )


def serial_of(config: AgentConfig, given: str | None) -> str:
    """The serial: given on the command line, else EDGELOOP_SERIAL, else the config's."""
    section = config.provisioning
    serial = given or os.environ.get("EDGELOOP_SERIAL") or (section.serial if section else "")
    if not serial:
        raise AgentConfigError(
            "no serial to provision with: give --serial, set EDGELOOP_SERIAL, "
            "or provisioning.serial"
        )
    try:
        return check_thing_name(serial)
    except ValueError as exc:
        raise AgentConfigError(f"serial: {exc}") from exc


def provisioned(config: AgentConfig) -> AgentConfig:
    """The config as the thing this device already is; never provisions."""
    if config.provisioning is None:
        return config
    known = load_identity(_identity_dir(config))
    if known is None:
        raise AgentConfigError(
            "this device has no identity yet: `edgeloop-agent run` provisions it with the claim"
        )
    return with_identity(config, known)


def ensure_identity(
    config: AgentConfig,
    serial: str | None = None,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
) -> AgentConfig:
    """The config as the thing this device is: as enrolled by hand, as provisioned
    before, or provisioned now (asking again, with backoff, until it is done, refused
    for good, or `stop` is set)."""
    if config.provisioning is None:
        return config
    directory = _identity_dir(config)
    known = load_identity(directory)
    if known is not None:
        return with_identity(config, known)
    serial = serial_of(config, serial)
    stop = stop or threading.Event()
    backoff = backoff or Backoff(config.broker.reconnect_min, config.broker.reconnect_max)
    while True:
        try:
            identity = provision(config, serial)
        except ProvisioningFailed as exc:
            if exc.final:
                raise
            delay = backoff.next()
            log.warning("event=provisioning_failed retry_in=%.1f reason=%r", delay, str(exc))
            if stop.wait(delay):
                raise
            continue
        log.info(
            "event=provisioned thing=%s model=%s certificate=%s",
            identity.thing,
            identity.model,
            identity.certificate_id[:12],
        )
        return with_identity(config, identity)
