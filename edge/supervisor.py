"""The agent's threads, supervised: none of them dies silently.

Each loop survives what one message or one sample can throw at it (it counts
and logs it, then goes on). What escapes a loop cannot heal in place: a data
source gone for good, or a bug. The supervisor then halts the agent with one
line saying why, so the process exits non-zero and systemd restarts it,
instead of a device that keeps reporting `healthy` with a dead thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edge.errors import SourceGone

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, prefix: str, on_fatal: Callable[[str], None]) -> None:
        self._prefix, self._on_fatal = prefix, on_fatal
        self._threads: list[threading.Thread] = []
        self.halted = threading.Event()
        self.failure: str | None = None

    def start(self, name: str, job: Callable[[], None]) -> None:
        thread = threading.Thread(
            target=self._run, args=(name, job), name=f"{self._prefix}-{name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _run(self, name: str, job: Callable[[], None]) -> None:
        try:
            job()
        except SourceGone as exc:
            self.fail(str(exc))
        except Exception as exc:
            log.exception("event=thread_died thread=%s", name)
            self.fail(f"the {name} thread stopped: {type(exc).__name__}: {exc}")

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("event=halted reason=%r", reason)
            self._on_fatal(reason)
        self.halted.set()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=timeout)
