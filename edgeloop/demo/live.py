"""The demo's live view: stages, gate decisions, each device's model and bytes, as they happen."""

from __future__ import annotations

import sys
import threading
from typing import Any

from edgeloop.demo.state import DemoState


def _table(state: DemoState, bytes_by_device: dict[str, dict[str, int]]) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    devices = Table(expand=True, title="devices")
    for column in (
        "device",
        "stage",
        "model",
        "step",
        "samples",
        "uploaded",
        "queued",
        "bytes metadata",
        "bytes patch",
        "bytes .zstd",
        "bytes .tflite",
    ):
        devices.add_column(
            column, justify="right" if column not in ("device", "stage", "step") else "left"
        )
    for agent in state.agents:
        c = agent.counters
        received = bytes_by_device.get(agent.config.device.thing, {})
        devices.add_row(
            agent.config.device.thing,
            state.stages.get(agent.config.device.thing, "-"),
            f"v{agent.version}" if agent.version else "-",
            agent.step,
            str(c.scored),
            str(c.uploaded_rows_without_model + c.uploaded_rows_with_model),
            str(len(agent.queue)),
            str(received.get("metadata", 0)),
            str(received.get("patch", 0)),
            str(received.get("compressed", 0)),
            str(received.get("full", 0)),
        )
    header = f"[bold]{state.scenario}[/bold]  stage: {state.stage}  ({state.elapsed:.0f} s)"
    events = "\n".join(state.events[-10:]) or "(starting)"
    return Group(
        Panel(header, title="edgeloop demo"), devices, Panel(events, title="what happened")
    )


class LiveView:
    """A rich live view on a terminal; plain lines otherwise (CI, pipes)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self._printed = 0
        self._state: DemoState | None = None
        self._live: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def update(self, state: DemoState) -> None:
        self._state = state
        if not self.enabled:
            for line in state.events[self._printed :]:
                print(line, flush=True)
            self._printed = len(state.events)
            return
        if self._live is None:
            from rich.live import Live

            self._live = Live(_table(state, {}), refresh_per_second=4, transient=False)
            self._live.start()
            self._thread = threading.Thread(target=self._refresh, daemon=True)
            self._thread.start()
        self._live.update(_table(state, state.bytes_by_device()))

    def _refresh(self) -> None:
        while not self._stop.wait(0.25):
            if self._state is not None and self._live is not None:
                self._live.update(_table(self._state, self._state.bytes_by_device()))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._live is not None:
            self._live.stop()
