"""The agent's TLS to the broker: the broker's CA, the client certificate that is the
device's identity (its own, or the claim while it provisions), and ALPN on port 443."""

from __future__ import annotations

import ssl
from pathlib import Path

from edge.config import BrokerSection


def broker_tls(broker: BrokerSection, cert: Path, key: Path) -> ssl.SSLContext:
    """A client context that verifies the broker against `broker.ca` only (never the
    system's store: the fleet pins its broker's CA) and presents `cert`."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(broker.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    if broker.alpn_protocol:
        context.set_alpn_protocols([broker.alpn_protocol])
    return context
