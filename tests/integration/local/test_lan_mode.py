"""The local cloud on the network: devices reach the broker over TLS at the host it was
given, whose name its certificate carries, and the CDN and upload grants at that host."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from edgeloop.local.runtime import LocalRuntime, is_loopback, lan_address
from tests.support_aws import VIBRATION_TOML

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto"),
]


def test_lan_mode_names_the_host_everywhere_devices_look(tmp_path: Path) -> None:
    host = lan_address()
    if is_loopback(host):
        pytest.skip("this machine has no address on a network")
    with pytest.raises(ValueError, match="TLS with client"):
        LocalRuntime({"vibration": VIBRATION_TOML}, host="0.0.0.0")
    with LocalRuntime(
        {"vibration": VIBRATION_TOML}, identity=True, host="0.0.0.0", state_dir=tmp_path
    ) as cloud:
        assert cloud.broker_url.startswith(f"mqtts://{host}:")
        assert cloud.cdn.base_url.startswith(f"http://{host}:")
        assert cloud.ca is not None
        pem = (cloud.ca.dir / f"broker-{host}.pem").read_bytes()
        names = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        assert ipaddress.ip_address(host) in names.value.get_values_for_type(x509.IPAddress)
        # A device at that address: the broker's certificate verifies against the CA.
        context = ssl.create_default_context(cafile=str(cloud.ca.cert_path))
        context.load_cert_chain(str(cloud.claim.cert), str(cloud.claim.key))  # type: ignore[union-attr]
        port = int(cloud.broker_url.rsplit(":", 1)[1])
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            assert tls.version() is not None
