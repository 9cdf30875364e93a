"""An embedded MQTT broker (amqtt) on loopback, in a thread of this process, and the
helpers that start a local stand-in process beside busy threads."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import threading
import time
from typing import Any

from edgeloop.contract import parse_ingest


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
