"""A restart is quiet: the broker's retained nudge, older than what the device now
trusts, is no cause for a warning."""

from __future__ import annotations

import logging

import pytest

from edgeloop.contract import Nudge
from tests.support_release import vibration_runs
from tests.support_world import World, wait_for


def test_an_agent_restarted_under_its_retained_nudge_logs_no_warning(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    v1, v2, _ = vibration_runs()
    world.publish(1, v1)
    first = world.agent("pump-1", source=iter(()))
    first.start(score=False)
    wait_for(lambda: first.version == 1, what="v1")
    world.releases.release(2, v2)
    # The nudge as rollouts send it, carrying the metadata it fits: retained, it is
    # what the restarted agent hears first, by then older than what it trusts.
    files = world.releases.repo().nudge_files("vibration", 2)
    world.cloud.nudge("vibration", payload=Nudge.filled("vibration", 2, files, 5000).to_bytes())
    wait_for(lambda: first.version == 2, what="v2")
    world.releases.repo().resign_due()
    world.releases.sync()
    first.stop()
    world.agents.remove(first)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = world.agent("pump-1", source=iter(()))
        again.start(score=False)

        def refreshed_twice() -> bool:
            # The start's refresh and the retained nudge's, each said once.
            said = [r for r in caplog.records if "event=update_already_installed" in r.message]
            return len(said) >= 2 or "nudge_metadata" in caplog.text

        wait_for(refreshed_twice, what="the start's refresh and the retained nudge's")
    assert again.version == 2
    loud = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("edge")
    ]
    assert loud == []
