"""Faults a running agent meets: a model that misbehaves after the swap, a killed process.

Cases from the reliability and security issue, numbered as there.
"""

from __future__ import annotations

import pytest

from edge.sources import synthetic_vibration
from tests.support_release import vibration_runs
from tests.support_world import World, _status, wait_for


def test_a_health_failure_after_the_swap_rolls_back_and_reports_failed(world: World) -> None:
    """Case 10: the rollout counts `rolled_back` as a failure (see test_rollout_faults)."""
    v1, v2, _ = vibration_runs()
    world.cloud.announce("vibration", "canary", world.releases.release(1, v1))
    agent = world.agent("pump-1", source=iter(()), watch="window = 300\n")
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1")

    def claims_rare_alarms(manifest):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(manifest, stats={**manifest.stats, "alarm_rate": 0.0001})

    world.cloud.announce(
        "vibration", "canary", world.releases.release(2, v2, bases=[1], mutate=claims_rare_alarms)
    )
    # Succeeded, not just swapped: the watch is armed once v2 is committed.
    wait_for(
        lambda: agent.step == "succeeded" and agent.board.target_version == 2,
        what="v2 installed and watched",
    )
    for sample in synthetic_vibration(8, 0.3, seed=7, count=400):
        agent.process(sample)
    wait_for(lambda: agent.version == 1, what="the rollback to v1")
    wait_for(
        lambda: (world.cloud.last_status("pump-1") or {}).get("step") == "rolled_back",
        what="report",
    )
    status = _status(world, "pump-1")
    assert (status["health"], status["target_version"]) == ("degraded", 2)
    assert "alarms on" in status["detail"]
    assert agent.store.current().version == 1  # type: ignore[union-attr]
    # The retained announcement of v2 is not retried on this device.
    assert agent.updater.handle(world.releases.release(2, v2, bases=[1])).step == "failed"


def test_an_agent_process_killed_mid_download_restarts_on_a_complete_model(world: World) -> None:
    """Case 9, with a real SIGKILL of `edgeloop-agent run`."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from tests.support_http import Fault

    v1, v2, _ = vibration_runs()
    world.cloud.announce("vibration", "canary", world.releases.release(1, v1))
    config = world.config_file("pump-9", source="rate = 50.0\n")
    command = [sys.executable, "-m", "edge.cli", "run", "--config", str(config)]

    def launch() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )

    first = launch()
    try:
        wait_for(lambda: _status(world, "pump-9").get("version") == 1, what="v1 in the process")
        path = "models/vibration/2/model.tflite"
        raw = world.releases.release(2, v2)
        world.server.faults[path] = Fault(stall_after=500)
        world.cloud.announce("vibration", "canary", raw)
        wait_for(lambda: world.server.served(path) >= 1, what="download started")
        wait_for(lambda: _status(world, "pump-9").get("step") == "downloading", what="downloading")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    state = world.tmp / "state-pump-9" / "models"
    assert json.loads((state / "state.json").read_text())["current"] == 1
    del world.server.faults[path]
    second = launch()
    try:
        assert second.stdout is not None
        started = json.loads(second.stdout.readline())
        assert started["version"] == 1  # a complete model, before any network
        wait_for(lambda: _status(world, "pump-9").get("version") == 2, what="v2 after restart")
        # The restart resumed the partial download instead of starting over.
        ranges = [r for p, r in world.server.requests if p == path]
        assert ranges[-1] == "bytes=500-"
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(second.pid, signal.SIGKILL)
    assert json.loads((state / "state.json").read_text())["current"] == 2


def test_an_update_that_failed_on_the_cdn_is_retried_until_it_succeeds(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Case 7: a retained announcement arrives once, so after a CDN failure the agent
    retries it itself, with a growing, jittered pause."""
    import edge.update_worker
    from edge.download import HttpFetcher
    from tests.support_http import Fault

    monkeypatch.setattr(edge.update_worker, "RETRY_MIN_SECONDS", 0.2)
    v1, _, _ = vibration_runs()
    raw = world.releases.release(1, v1)
    path = "models/vibration/1/model.tflite"
    world.server.faults[path] = Fault(stall_after=10)
    impatient = HttpFetcher(world.server.base_url, timeout=0.2, retries=0, backoff=0.01)
    agent = world.agent("pump-1", source=iter(()), fetcher=impatient)
    agent.start(score=False)
    world.cloud.announce("vibration", "canary", raw)
    wait_for(lambda: _status(world, "pump-1").get("step") == "failed", what="a failed download")
    assert "DownloadFailed" in _status(world, "pump-1")["detail"]
    del world.server.faults[path]
    wait_for(lambda: agent.version == 1, what="the retry to succeed")
