"""The local brokers: mosquitto, with identity enforced as IoT Core enforces it, or an
embedded amqtt on loopback when mosquitto is not installed; and the helpers that
start a local stand-in process beside busy threads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgeloop.contract import parse_ingest
from edgeloop.contract.device_policy import (
    MODEL_VARIABLE,
    THING_VARIABLE,
    DeviceAction,
    DeviceGrant,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def _aws_iot_broker() -> type[Any]:
    """amqtt's broker, taking Basic Ingest publishes as AWS IoT Core does.

    amqtt closes the connection of any client that publishes on a topic starting
    with '$'. MQTT only keeps such topics out of wildcard subscriptions; AWS IoT
    Core takes `$aws/rules/{rule}/...` from devices and hands it to the rule. Here
    those publishes reach whoever subscribed to them by name (the local rules
    engine, on `$aws/rules/#`), and every other '$' topic is still refused.
    """
    from amqtt.broker import Broker

    # The override below hooks amqtt's internals; fail at start, not by silently
    # closing every agent that reports its status.
    for method in ("_handle_message_delivery", "_broadcast_message"):
        if not callable(getattr(Broker, method, None)):
            raise RuntimeError(
                f"this amqtt has no Broker.{method}: the embedded broker cannot take "
                "Basic Ingest publishes; use mosquitto (--broker) or set "
                "[broker] basic_ingest = false on the agents"
            )

    class AwsIotBroker(Broker):  # type: ignore[misc]
        async def _handle_message_delivery(
            self, client_session: Any, handler: Any, wait_deliver: Any
        ) -> bool:
            message = wait_deliver.result()
            topic = getattr(message, "topic", None) or ""
            if parse_ingest(topic) is not None and "+" not in topic and "#" not in topic:
                await self._broadcast_message(client_session, topic, message.data)
                return True
            delivered: bool = await super()._handle_message_delivery(
                client_session, handler, wait_deliver
            )
            return delivered

    return AwsIotBroker


class EmbeddedBroker:
    kind = "amqtt"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = _aws_iot_broker()(config, loop=loop)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(broker.start())
            started.set()
            loop.run_forever()

        self._loop, self._broker = loop, broker
        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        self._thread.start()
        # broker.start() returns once the listener is bound; probing it with a bare
        # TCP connection would only make amqtt log a failed session.
        if not started.wait(10):
            raise TimeoutError(f"amqtt did not start on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        # With clients still attached shutdown may not finish; stopping the loop ends them.
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, OSError):
            future.result(1)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = self._broker = None

    def close(self) -> None:
        self.stop()


def dying_with_parent(command: list[str]) -> list[str]:
    """Linux: wrap `command` so it gets SIGTERM if this process dies first.

    `setpriv --pdeathsig` (util-linux) sets it and then execs the broker. A
    Python `preexec_fn` would do the same from inside the forked child, but in
    a process with other threads (an agent fleet, a moto server) the child can
    deadlock on a lock one of them held at fork time, and `Popen` never returns.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return command  # not Linux or no util-linux: the broker is stopped by close() only
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


# --- mosquitto --------------------------------------------------------------------------

# The user the local cloud's own services (the rules engine, the functions' data-plane
# publisher, the provisioning service) connect as, on their own listener: they stand
# in for what IAM authorizes on AWS, never for a device.
CLOUD_USER = "edgeloop-cloud"


def mosquitto_topic(name: str) -> str:
    """An IoT policy topic name as a mosquitto ACL topic: IoT's `*` within a level is
    MQTT's `+` (the grants use `*` only as a whole level)."""
    return "/".join("+" if level == "*" else level for level in name.split("/"))


def acl_lines(grants: Iterable[DeviceGrant], thing: str = "", model: str = "") -> list[str]:
    """mosquitto ACL lines for one identity's grants, with the thing's policy variables
    filled in. mosquitto checks topics only: the connect grant (client id is the thing
    name) has no mosquitto form, so the local broker does not enforce it."""
    lines: list[str] = []
    for grant in grants:
        if grant.action is DeviceAction.CONNECT:
            continue
        access = "write" if grant.action is DeviceAction.PUBLISH else "read"
        for name in grant.names:
            topic = mosquitto_topic(
                name.replace(THING_VARIABLE, thing).replace(MODEL_VARIABLE, model)
            )
            line = f"topic {access} {topic}"
            if line not in lines:
                lines.append(line)
    return lines


@dataclass(frozen=True)
class BrokerTls:
    """The device listener's TLS: the CA that signs client certificates, and the
    broker's own certificate."""

    ca: Path
    cert: Path
    key: Path


class Mosquitto:
    """mosquitto with persistence, so retained messages and sessions survive a restart.

    Without `tls` it is one anonymous listener, as the agent tests use it. With `tls`
    it is the local IoT Core: devices connect on a TLS listener with client
    certificates and may use only the topics the ACL gives their certificate's
    identity (`use_identity_as_username`), and the cloud's services connect on a
    second, password-protected loopback listener (`cloud_url`). `set_acl` rewrites
    the devices' ACL and has mosquitto reload it.
    """

    kind = "mosquitto"

    def __init__(
        self,
        tls: BrokerTls | None = None,
        directory: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        cloud_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.host = host
        self.tls = tls
        self._owns_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="edgeloop-mosquitto-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._process: subprocess.Popen[bytes] | None = None
        # Run as root, mosquitto would switch to its own user, and changing
        # credentials clears the parent-death signal; stay who started it.
        common = (
            f"persistence true\npersistence_location {self.dir}/\n"
            "max_queued_messages 10000\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
        )
        if tls is None:
            self.cloud_port = self.port
            self.cloud_url = self.url
            (self.dir / "mosquitto.conf").write_text(
                f"listener {self.port} {host}\nallow_anonymous true\n{common}"
            )
        else:
            self.cloud_port = cloud_port or free_port()
            password = self._cloud_password()
            self.cloud_url = (
                f"mqtt://{CLOUD_USER}:{quote(password, safe='')}@127.0.0.1:{self.cloud_port}"
            )
            (self.dir / "cloud.acl").write_text(
                f"user {CLOUD_USER}\ntopic readwrite #\ntopic readwrite $aws/#\n"
            )
            if not (self.dir / "devices.acl").exists():
                (self.dir / "devices.acl").write_text("")
            (self.dir / "mosquitto.conf").write_text(
                common
                + f"per_listener_settings true\nlog_dest file {self.log}\n"
                + "".join(f"log_type {t}\n" for t in ("error", "warning", "notice", "information"))
                + f"\nlistener {self.cloud_port} 127.0.0.1\nallow_anonymous false\n"
                f"password_file {self.dir / 'passwords'}\nacl_file {self.dir / 'cloud.acl'}\n"
                f"\nlistener {self.port} {host}\nallow_anonymous false\n"
                f"cafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n"
                "require_certificate true\nuse_identity_as_username true\n"
                f"acl_file {self.dir / 'devices.acl'}\n"
            )
        self.start()

    @property
    def log(self) -> Path:
        return self.dir / "mosquitto.log"

    def _cloud_password(self) -> str:
        """The cloud user's password, made once per directory and hashed by mosquitto's
        own tool into its password file."""
        secret = self.dir / "cloud.secret"
        if not secret.is_file():
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        password = secret.read_text().strip()
        passwords = self.dir / "passwords"
        passwords.unlink(missing_ok=True)
        passwords.touch(0o600)
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwords), CLOUD_USER, password],
            check=True,
            capture_output=True,
        )
        return password

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            dying_with_parent(["mosquitto", "-c", str(self.dir / "mosquitto.conf")]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.cloud_port)
        if self.tls is not None:
            wait_listening(self.port)

    def set_acl(self, text: str, timeout: float = 10.0) -> None:
        """Replace the devices' ACL and return once mosquitto has reloaded it.

        mosquitto reloads on SIGHUP in its single-threaded main loop, logging
        "Reloading config" as it starts; what anyone publishes after the line is
        handled after the reload, so an answer sent then meets the new rules.
        """
        if self.tls is None or self._process is None:
            raise RuntimeError("only the identity-enforcing mosquitto has an ACL")
        path = self.dir / "devices.acl"
        staged = path.with_suffix(".new")
        staged.write_text(text)
        staged.replace(path)
        before = self._reloads()
        self._process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self._reloads() <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"mosquitto did not reload its ACL within {timeout} s")
            time.sleep(0.01)

    def _reloads(self) -> int:
        try:
            return self.log.read_text(errors="replace").count("Reloading config")
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
