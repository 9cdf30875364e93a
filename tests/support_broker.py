"""A real MQTT broker on loopback: mosquitto when installed, else amqtt embedded."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgeloop.local.broker import EmbeddedBroker, dying_with_parent, free_port, wait_listening

# The local runtime's embedded broker, under the name the tests use.
EmbeddedAmqtt = EmbeddedBroker


class Mosquitto:
    """mosquitto with persistence, so retained messages and sessions survive a restart."""

    kind = "mosquitto"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="edgeloop-mosquitto-"))
        (self.dir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.dir}/\nmax_queued_messages 10000\n"
            # Run as root, mosquitto would switch to its own user, and changing
            # credentials clears the parent-death signal; stay who started it.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        )
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            dying_with_parent(["mosquitto", "-c", str(self.dir / "mosquitto.conf")]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_broker(kind: str | None = None) -> Mosquitto | EmbeddedBroker:
    kind = (
        kind
        or os.environ.get("EDGELOOP_TEST_BROKER")
        or ("mosquitto" if shutil.which("mosquitto") else "amqtt")
    )
    return Mosquitto() if kind == "mosquitto" else EmbeddedBroker()
