"""The agent's TLS: the fleet's CA only, its client certificate, and IoT Core's ALPN on 443."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from edge.config import AWS_IOT_ALPN, BrokerSection
from edge.tls import broker_tls
from edgeloop.local.certificates import LocalCa, common_name


@pytest.mark.parametrize(
    ("url", "alpn", "offered"),
    [
        ("mqtts://iot.example:443", None, AWS_IOT_ALPN),
        ("mqtts://iot.example:8883", None, ""),
        ("mqtts://iot.example:443", "", ""),
        ("mqtts://iot.example:8883", "x-amzn-mqtt-ca", AWS_IOT_ALPN),
    ],
)
def test_alpn_is_offered_on_port_443_unless_configured(
    tmp_path: Path, url: str, alpn: str | None, offered: str
) -> None:
    (tmp_path / "ca.pem").write_text("-")
    broker = BrokerSection(url, ca=tmp_path / "ca.pem", alpn=alpn)
    assert broker.alpn_protocol == offered


def test_the_handshake_offers_the_alpn_and_presents_the_devices_certificate(
    tmp_path: Path,
) -> None:
    ca = LocalCa(tmp_path / "ca")
    server_pair = ca.key_pair("server", "localhost", hosts=("127.0.0.1",), server=True)
    device = ca.key_pair("device", "pump-1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert_path))
    server.load_cert_chain(str(server_pair.cert), str(server_pair.key))
    server.verify_mode = ssl.CERT_REQUIRED
    server.set_alpn_protocols([AWS_IOT_ALPN])
    seen: dict[str, object] = {}
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        conn, _ = listener.accept()
        with server.wrap_socket(conn, server_side=True) as tls:
            seen["alpn"] = tls.selected_alpn_protocol()
            peer = tls.getpeercert(binary_form=True)
            assert peer is not None
            seen["peer"] = common_name(ssl.DER_cert_to_PEM_cert(peer))

    thread = threading.Thread(target=accept)
    thread.start()
    broker = BrokerSection(f"mqtts://127.0.0.1:{port}", ca=ca.cert_path, alpn=AWS_IOT_ALPN)
    client = broker_tls(broker, device.cert, device.key)
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == AWS_IOT_ALPN
    thread.join(10)
    listener.close()
    assert seen == {"alpn": AWS_IOT_ALPN, "peer": "pump-1"}


def test_a_broker_signed_by_another_ca_is_refused(tmp_path: Path) -> None:
    ours = LocalCa(tmp_path / "ours")
    theirs = LocalCa(tmp_path / "theirs")
    server_pair = theirs.key_pair("server", "localhost", hosts=("127.0.0.1",), server=True)
    device = ours.key_pair("device", "pump-1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(server_pair.cert), str(server_pair.key))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            server.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=accept)
    thread.start()
    broker = BrokerSection(f"mqtts://127.0.0.1:{port}", ca=ours.cert_path)
    client = broker_tls(broker, device.cert, device.key)
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.wrap_socket(raw, server_hostname="127.0.0.1")
    thread.join(10)
    listener.close()
