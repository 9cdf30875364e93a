"""Faults a running agent meets: a model that misbehaves after the swap, a killed process.

Cases from the reliability and security issue, numbered as there.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.config import load_agent_config
from edge.download import HttpFetcher
from edge.errors import AgentConfigError, SourceGone
from edge.sources import Sample, SkippedLines, csv_replay, json_lines, synthetic_vibration
from edgeloop.contract import Manifest, TensorSpec
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from tests.support_release import vibration_runs, with_fields
from tests.support_world import World, _status, wait_for


def test_a_health_failure_after_the_swap_rolls_back_and_reports_failed(world: World) -> None:
    """Case 10: the rollout counts `rolled_back` as a failure (see test_rollout_faults)."""
    v1, v2, _ = vibration_runs()
    world.publish(1, v1)
    agent = world.agent("pump-1", source=iter(()), watch="window = 300\n")
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1")

    def claims_rare_alarms(manifest):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(manifest, stats={**manifest.stats, "alarm_rate": 0.0001})

    world.publish(2, v2, bases=[1], mutate=claims_rare_alarms)
    # v2's nudge answered, not just v2 swapped in: a late refresh would report again
    # over the rollback. Its step may read `already_installed`, for the refresh of v1's
    # retained nudge can find v2 first; the watch is armed either way, at the commit.
    wait_for(
        lambda: agent.version == 2 and agent.updates.answered == 2,
        what="v2 installed and its nudge answered",
    )
    assert agent.board.target_version == 2
    assert agent.step in ("succeeded", "already_installed")
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
    # v2, which the pointer still names, is not tried again on this device.
    again = agent.updater.handle()
    assert again.step == "failed"
    assert "RefusedBefore" in again.detail


def test_an_agent_process_killed_mid_download_restarts_on_a_complete_model(world: World) -> None:
    """Case 9, with a real SIGKILL of `edgeloop-agent run`."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from tests.support_http import Fault

    v1, v2, _ = vibration_runs()
    world.publish(1, v1)
    config = world.config_file("pump-9", source="rate = 50.0\n")
    command = [sys.executable, "-m", "edge.cli", "run", "--config", str(config)]

    def launch() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )

    first = launch()
    try:
        wait_for(lambda: _status(world, "pump-9").get("version") == 1, what="v1 in the process")
        world.releases.release(2, v2)
        path = world.releases.target_key("vibration/2/model.tflite")
        world.server.faults[path] = Fault(stall_after=500)
        world.cloud.nudge("vibration", 2)
        wait_for(lambda: world.server.served(path) >= 1, what="download started")
        # Killed mid-download: the agent reports no intermediate step to the cloud, so
        # the test watches the partial file it resumes from, 500 bytes on disk.
        staging = world.tmp / "state-pump-9" / "models" / "staging"

        def partial_download() -> bool:
            return any(p.stat().st_size >= 500 for p in staging.glob("*.part"))

        wait_for(partial_download, what="500 bytes of v2 on disk")
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
    """Case 7: a retained nudge arrives once, so after a CDN failure the agent refreshes
    again itself, with a growing, jittered pause."""
    import edge.update_worker
    from tests.support_http import Fault

    monkeypatch.setattr(edge.update_worker, "RETRY_MIN_SECONDS", 0.2)
    v1, _, _ = vibration_runs()
    world.releases.release(1, v1)
    path = world.releases.target_key("vibration/1/model.tflite")
    world.server.faults[path] = Fault(stall_after=10)
    impatient = HttpFetcher(
        world.server.base_url + REPOSITORY_PREFIX, timeout=0.2, retries=0, backoff=0.01
    )
    agent = world.agent("pump-1", source=iter(()), http=impatient)
    agent.start(score=False)
    world.cloud.nudge("vibration", 1)
    wait_for(lambda: _status(world, "pump-1").get("step") == "failed", what="a failed download")
    assert "DownloadError" in _status(world, "pump-1")["detail"]
    del world.server.faults[path]
    wait_for(lambda: agent.version == 1, what="the retry to succeed")


@dataclass(frozen=True)
class CrashesOnce(HttpFetcher):
    """A fetcher with a bug that shows on its first download of a target: not a
    network failure."""

    calls: list[str] = field(default_factory=list)

    def fetch(self, path: str, dest: Path, size: int) -> bytes:
        self.calls.append(path)
        if len(self.calls) == 1:
            raise RuntimeError("an unforeseen bug")
        return super().fetch(path, dest, size)


def test_an_update_that_crashes_unexpectedly_does_not_stop_later_updates(world: World) -> None:
    """Finding 1 (#15): one message must not end the update thread."""
    v1, v2, _ = vibration_runs()
    fetcher = CrashesOnce(world.server.base_url + REPOSITORY_PREFIX, timeout=2.0, retries=1)
    agent = world.agent("pump-1", source=iter(()), http=fetcher)
    agent.start(score=False)
    world.publish(1, v1)
    wait_for(lambda: "unexpected RuntimeError" in _status(world, "pump-1").get("detail", ""))
    world.publish(2, v2)
    wait_for(lambda: agent.version == 2, what="the next update installed")
    assert agent.failure is None


def _csv(path: Path, rows: list[str]) -> Path:
    header = ",".join(f"f{i}" for i in range(8))
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


GOOD = ",".join(["1.5"] * 8)


def test_bad_csv_lines_are_skipped_counted_and_reported(world: World) -> None:
    """Finding 8 (#15): a bad cell and a wrong column count skip their line, nothing more."""
    data = _csv(world.tmp / "sensor.csv", [GOOD, "1.5,oops" + ",1.5" * 6, "1.5,1.5", GOOD, GOOD])
    config = world.config_file(
        "pump-1", source=f'kind = "csv"\npath = "{data}"\nloop = false\nrate = 0.0\n'
    )
    agent = Agent(load_agent_config(config))
    world.agents.append(agent)
    agent.start()
    wait_for(lambda: agent.counters.scored == 3, what="the good lines scored")
    wait_for(lambda: agent.skipped.count == 2, what="the bad lines counted")
    assert agent.failure is None
    agent.publish_status()
    wait_for(lambda: "skipped 2 lines" in _status(world, "pump-1").get("detail", ""))
    assert "sensor.csv:4" in _status(world, "pump-1")["detail"]  # the last one, by line


def test_a_bad_stdin_line_is_skipped_and_the_next_one_scored() -> None:
    """Finding 8 (#15)."""
    lines = io.StringIO('{"x": [1,2,3]}\nnot json\n{"x": [1,2,"a"]}\n\n{"x": [4,5,6], "y": 1}\n')
    skipped = SkippedLines()
    samples = list(json_lines(3, lines, skipped))
    assert [s.x.tolist() for s in samples] == [[1, 2, 3], [4, 5, 6]]
    assert samples[1].label == 1
    assert skipped.count == 2
    assert skipped.last.startswith("stdin line 3")


def test_a_source_gone_for_good_halts_the_agent_and_reports_failed_health(world: World) -> None:
    """Finding 8 (#15): never a dead scoring thread under a `healthy` status."""

    def gone() -> Iterator[Sample]:
        yield from synthetic_vibration(8, 0.0, seed=1, count=10)
        raise SourceGone("csv source /data/sensor.csv: No such file or directory")

    agent = world.agent("pump-1", source=gone())
    agent.start()
    assert agent.supervisor.halted.wait(20)
    assert agent.failure == "csv source /data/sensor.csv: No such file or directory"
    status = agent.status()
    assert status.health == "failed"
    assert "sensor.csv" in status.detail
    wait_for(lambda: _status(world, "pump-1").get("health") == "failed", what="failed reported")


def test_a_csv_file_gone_for_good_ends_the_process_with_one_line(world: World) -> None:
    """Finding 8 (#15), as systemd sees it: a non-zero exit and one line saying why."""
    import subprocess
    import sys

    data = _csv(world.tmp / "sensor.csv", [GOOD] * 5)
    config = world.config_file("pump-7", source=f'kind = "csv"\npath = "{data}"\nrate = 200.0\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        json.loads(process.stdout.readline())  # started
        data.unlink()
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("edgeloop-agent: halted: csv source")
    assert "sensor.csv" in last


@pytest.mark.parametrize(
    ("section", "body", "named"),
    [
        ("broker", 'url = "mqtt://localhost:99999"', r"broker\.url .*port must be in \[1, 65535\]"),
        ("broker", 'url = "mqtt://localhost:0"', r"broker\.url .*port must be in"),
        ("artifacts", 'base_url = "http://cdn:70000/"', r"artifacts\.base_url .*port"),
        ("artifacts", 'base_url = "http:///models"', r"artifacts\.base_url must be .* with a host"),
        ("source", 'kind = "csv"\npath = "gone.csv"', r"source\.path: .*gone\.csv does not exist"),
        ("trust", 'root = "bad.pem"', r"trust\.root: .*bad\.pem is not TUF root metadata"),
    ],
)
def test_the_whole_config_is_validated_when_it_loads(
    world: World, section: str, body: str, named: str
) -> None:
    """Finding 5 (#15): mqtt://host:99999 used to pass and kill the MQTT thread later."""
    (world.tmp / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nnonsense\n")
    path = world.config_file("pump-1")
    text = path.read_text()
    key = body.split(" = ", 1)[0]
    if f"\n{key} = " in text:  # replace the key the world wrote
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key} = ")]
        text = "\n".join(lines) + "\n"
    text = (
        text.replace(f"[{section}]\n", f"[{section}]\n{body}\n")
        if f"[{section}]" in text
        else (text + f"[{section}]\n{body}\n")
    )
    path.write_text(text)
    with pytest.raises(AgentConfigError, match=named):
        load_agent_config(path)


class AgentProcess:
    """`edgeloop-agent run` as a user starts it, its stdout collected line by line."""

    def __init__(self, config: Path, *extra: str) -> None:
        import subprocess
        import sys
        import threading

        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # the interpreter's own banner; the log is stdout
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        try:
            wait_for(condition, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the agent's log:\n" + "\n".join(self.lines)) from None

    def saw(self, *parts: str) -> bool:
        return any(all(p in line for p in parts) for line in self.lines)

    def count(self, part: str) -> int:
        return sum(1 for line in self.lines if part in line)

    def stop(self) -> None:
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
        self._reader.join(5)


def test_an_agent_run_prints_a_log_a_person_can_follow(world: World) -> None:
    """Finding 7 (#15): connecting, a refused update, an installed update, a rollback, the
    broker going away and coming back; one line each, never one per sample."""
    from dataclasses import replace

    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata

    v1, v2, _ = vibration_runs()
    world.publish(1, v1)
    config = world.config_file(
        "pump-5", source="anomaly_rate = 0.3\nrate = 400.0\n", watch="window = 300\n"
    )
    agent = AgentProcess(config, "--log-level", "info")
    try:
        agent.wait_for(lambda: agent.saw("event=connected", "pump-5"), what="connected")
        agent.wait_for(
            lambda: agent.saw("event=update_installed", "version=1"), what="v1 installed"
        )
        timestamp = REPOSITORY_PREFIX + "tuf/metadata/timestamp.json"
        genuine = world.server.files[timestamp]
        forged = Metadata.from_bytes(genuine)
        forged.signed.version += 1
        forged.sign(CryptoSigner.generate_ecdsa(), append=False)
        world.server.files[timestamp] = forged.to_bytes()
        world.cloud.nudge("vibration", 2)
        agent.wait_for(lambda: agent.saw("event=update_refused", "Unsigned"), what="refused")
        world.server.files[timestamp] = genuine

        def claims_rare_alarms(manifest: Manifest) -> Manifest:
            return replace(manifest, stats={**manifest.stats, "alarm_rate": 0.0001})

        world.publish(2, v2, bases=[1], mutate=claims_rare_alarms)
        agent.wait_for(
            lambda: agent.saw("event=update_installed", "version=2"), what="v2 installed"
        )
        agent.wait_for(
            lambda: agent.saw("event=rollback", "version=2", "alarms on"), what="rollback"
        )
        world.broker.stop()
        agent.wait_for(lambda: agent.saw("event=disconnected"), what="disconnected")
        world.broker.start()
        agent.wait_for(lambda: agent.count("event=connected") >= 2, timeout=30, what="reconnected")
        assert _status(world, "pump-5") is not None
    finally:
        agent.stop()
    assert json.loads(agent.lines[0])["thing"] == "pump-5"
    for line in agent.lines[1:]:
        assert line.startswith("level="), line
    # Thousands of samples were scored; the log stayed at lifecycle events.
    assert len(agent.lines) < 80, "\n".join(agent.lines)


def test_an_unreachable_broker_is_said_and_retried(world: World) -> None:
    """Finding 7 (#15): it used to wait silently forever."""
    from edgeloop.local.broker import free_port

    config = world.config_file("pump-6")
    text = config.read_text().replace(world.broker.url, f"mqtt://127.0.0.1:{free_port()}")
    config.write_text(text)
    agent = AgentProcess(config)
    try:
        wait_for(lambda: agent.count("event=connect_failed") >= 2, what="two failed attempts")
        assert agent.process.poll() is None  # still running, still trying
        assert agent.saw("event=connect_failed", "retry_in=")
    finally:
        agent.stop()


NAMES = tuple(f"f{i}" for i in range(8))


def test_csv_columns_are_matched_by_name_extra_ones_ignored(tmp_path: Path) -> None:
    """Finding 9 (#15): a timestamp column, reordered features, the label anywhere."""
    order = [3, 0, 7, 1, 6, 2, 5, 4]
    header = ["timestamp", *(f"f{i}" for i in order[:4]), "label", *(f"f{i}" for i in order[4:])]
    cells = [str(10 + i) for i in order]
    row = ["2026-06-01T12:00:00Z", *cells[:4], "1", *cells[4:]]
    path = tmp_path / "sensor.csv"
    path.write_text(",".join(header) + "\n" + ",".join(row) + "\n")
    (sample,) = list(csv_replay(path, 8, "label", loop=False, feature_names=NAMES))
    assert sample.x.tolist() == [10.0 + i for i in range(8)]
    assert sample.label == 1


def test_a_csv_without_one_of_the_models_columns_names_it(tmp_path: Path) -> None:
    """Finding 9 (#15): a missing column is named, and it ends the source for good."""
    path = tmp_path / "sensor.csv"
    path.write_text(",".join(n for n in NAMES if n != "f5") + ",extra\n" + "1," * 7 + "1\n")
    with pytest.raises(SourceGone, match="has no column 'f5'"):
        list(csv_replay(path, 8, "label", loop=False, feature_names=NAMES))


def test_stdin_lines_may_carry_named_fields() -> None:
    """Finding 9 (#15)."""
    named = json.dumps({"x": {n: float(i) for i, n in reversed(list(enumerate(NAMES)))}})
    lines = io.StringIO(named + "\n" + json.dumps({"x": {"f0": 1.0}}) + "\n")
    skipped = SkippedLines()
    (sample,) = list(json_lines(8, lines, skipped, feature_names=NAMES))
    assert sample.x.tolist() == [float(i) for i in range(8)]
    assert skipped.count == 1
    assert "no field 'f1'" in skipped.last


def test_the_csv_source_takes_the_feature_names_from_the_installed_manifest(
    world: World,
) -> None:
    """Finding 9 (#15): with no names in the config, the running model's input names."""
    v1, _, _ = vibration_runs()
    named = with_fields(input=TensorSpec(shape=(-1, 8), names=NAMES))
    world.publish(1, v1, mutate=named)
    first = world.agent("pump-1", source=iter(()))
    first.start(score=False)
    wait_for(lambda: first.version == 1, what="v1 with named inputs")
    first.stop()
    world.agents.remove(first)
    rows = [",".join(["2026-06-01T12:00:00Z", *["1.5"] * 8]) for _ in range(20)]
    data = world.tmp / "sensor.csv"
    data.write_text(",".join(["timestamp", *reversed(NAMES)]) + "\n" + "\n".join(rows) + "\n")
    config = world.config_file(
        "pump-1", source=f'kind = "csv"\npath = "{data}"\nloop = false\nrate = 0.0\n'
    )
    agent = Agent(load_agent_config(config))
    world.agents.append(agent)
    agent.start()
    wait_for(lambda: agent.counters.scored == 20, what="every row scored")
    assert agent.failure is None
    assert agent.skipped.count == 0
