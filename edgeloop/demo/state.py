"""What the demo knows as it runs: read by the live view and the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.agent import Agent


class DemoFailed(RuntimeError):
    """The loop did not get where it should within its time limit; the message says where."""


@dataclass
class DemoState:
    """What the live view and the report read."""

    scenario: str
    stage: str = "starting"
    started: float = field(default_factory=time.monotonic)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)
    champion: int | None = None
    watch_errors: list[str] = field(default_factory=list)
    bytes_by_device: Callable[[], dict[str, dict[str, int]]] = dict
    # The rollout stage the cloud puts each device in, by thing.
    stages: dict[str, str] = field(default_factory=dict)

    def log(self, message: str) -> None:
        self.events.append(f"{time.monotonic() - self.started:6.1f}s  {message}")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")
