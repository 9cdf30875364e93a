"""The agent as a device runs it: its own process, measured from outside.

`edgeloop-agent run` (`python -m edge.cli run`) starts in a fresh interpreter with
a config of its own, fetches and installs a k-means model from a signed
repository behind the CDN stand-in, and reads JSON lines on stdin. From outside
(psutil, and /proc for the peak) this measures:

- resident memory once the model is installed, and its peak over the whole run;
- idle CPU: the model installed and no sample flowing, over IDLE_SECONDS;
- CPU seconds per 1,000 samples: SAMPLES lines written at RATE a second, the
  last one a sentinel far off every mode, whose alarm event (on the broker) says
  every line before it was scored.

Beside it, the libraries' floor (bench/footprint_floor.py): what the same
interpreter holds resident once NumPy, the TFLite interpreter with the model, ssl and
paho, and python-tuf's signature check have done their part with no agent around
them. The agent verifies in a short-lived child (edge.trust_child), so its peak
minus the floor up to the link is what the agent itself adds. The children
(verifying, then the model's check) live for a second or so during an update; the
agent with them is sampled every 10 ms while the first install runs.

Each interpreter runs it in turn: LiteRT in this environment, tflite-runtime 2.14
in its own (EDGELOOP_TFLITE214_PYTHON, with this source tree on its path).
Uploads are off (sample_rate 0): nothing answers them here, and a device's upload
cost is the cloud's round trip, not the agent's footprint.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import tarfile
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import BenchRepository, interpreters, wait_until, write_result
from bench.swap import _runs
from edge.sources import synthetic_vibration
from edgeloop.contract.topics import ThingTopics
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.factory.config import ModelConfig, parse_config
from edgeloop.factory.run import RunResult
from tests.support_broker import start_broker
from tests.support_http import cdn_of_files

TREE = Path(__file__).parents[1]
THING = "footprint-1"
IDLE_SECONDS = 20.0
SAMPLES = 20_000
RATE = 2_000
# The sentinel's distance to the nearest mode is in the thousands; no sample of
# the stream comes near, so an event this large can only be the sentinel's.
SENTINEL = [1000.0] * 8
SENTINEL_VALUE = 100.0
GOAL_RSS_MB = {"ai_edge_litert": 70.0, "tflite_runtime": 50.0}
GOAL_IDLE_PCT = 0.5
IMPORT_RUNS = 7
_VENV_HINT = "rm .venv-tflite214/.installed && make .venv-tflite214/.installed"


def _config(workdir: Path, broker_url: str, base_url: str) -> Path:
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    path = workdir / "agent.toml"
    path.write_text(
        f"""
[device]
thing = "{THING}"
model = "vibration"
n_features = 8

[broker]
url = "{broker_url}"

[artifacts]
base_url = "{base_url}"

[trust]
root = "{workdir / "root.json"}"

[state]
dir = "{workdir / "state"}"

[source]
kind = "stdin"
rate = 0.0

[upload]
sample_rate = 0.0
"""
    )
    return path


class _Events:
    """The agent's alarm events as the broker carries them."""

    def __init__(self, broker_url: str) -> None:
        self.values: list[float] = []
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = lambda _c, _u, m: self.values.append(
            float(json.loads(m.payload)["value"])
        )
        self._client.connect(host, int(port))
        self._client.subscribe(ThingTopics(THING).events, qos=1)
        self._client.loop_start()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _lines(count: int) -> list[bytes]:
    stream = synthetic_vibration(8, 0.0, seed=3, count=count)
    return [json.dumps({"x": [round(float(v), 4) for v in s.x]}).encode() + b"\n" for s in stream]


class _TreePeak:
    """The largest resident set of the agent and its children together, and of the
    children alone, sampled every SAMPLE_SECONDS: a child lives for a second or so, and
    its own high-water mark goes with it."""

    SAMPLE_SECONDS = 0.01

    def __init__(self, process: psutil.Process) -> None:
        self.total_mb = 0.0
        self.children_mb = 0.0
        self._process = process
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(self.SAMPLE_SECONDS):
            try:
                own = self._process.memory_info().rss
                children = 0
                for child in self._process.children(recursive=True):
                    try:
                        children += child.memory_info().rss
                    except psutil.Error:
                        continue  # gone between the listing and the reading
            except psutil.Error:
                return
            self.children_mb = max(self.children_mb, children / 2**20)
            self.total_mb = max(self.total_mb, (own + children) / 2**20)

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()


def _peak_rss_mb(pid: int) -> float:
    """The kernel's high-water mark of the process's resident set (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _log_lines(stream: Any) -> Iterator[str]:
    for raw in iter(stream.readline, b""):
        yield raw.decode(errors="replace").rstrip()


def measure_one(
    python: str, tree: Path, workdir: Path, broker_url: str, base_url: str
) -> dict[str, Any]:
    """Start one agent under `python` with `tree` on its path and measure it."""
    config = _config(workdir, broker_url, base_url)
    # This tree after `tree`: its packages come from `tree`, and importlib.metadata still
    # finds edgeloop's (the tflite-runtime venv has it installed nowhere else).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys((str(tree), str(TREE))))}
    lines = _lines(SAMPLES)
    events = _Events(broker_url)
    import_ms = _import_ms(python, env, workdir)
    log: list[str] = []
    first_line: list[float] = []
    spawned = time.monotonic()
    agent = subprocess.Popen(
        [python, "-m", "edge.cli", "run", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env=env,
    )
    assert agent.stdin is not None
    assert agent.stdout is not None

    def read(stream: Any) -> None:
        for line in _log_lines(stream):
            if not first_line:
                first_line.append(time.monotonic())
            log.append(line)

    reader = threading.Thread(target=read, args=(agent.stdout,), daemon=True)
    reader.start()
    process = psutil.Process(agent.pid)
    tree_peak = _TreePeak(process)
    try:
        wait_until(
            lambda: (
                any("event=update_installed version=1" in line for line in log)
                or agent.poll() is not None
            ),
            180,
            "the agent to install v1",
        )
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited: {log[-5:]}")
        backend = _backend(python, env)
        time.sleep(2.0)  # the install's child-process check and its allocations settle
        # The children live only while an update runs; sampling them costs the machine
        # CPU the idle and streaming figures should not share.
        tree_peak.stop()
        installed_rss = process.memory_info().rss / 2**20
        cpu0 = _cpu_s(process)
        time.sleep(IDLE_SECONDS)
        idle_pct = 100 * (_cpu_s(process) - cpu0) / IDLE_SECONDS
        cpu1, start = _cpu_s(process), time.monotonic()
        # Paced in blocks of 10 ms, as a sensor's driver hands over its buffer.
        block = RATE // 100
        for i in range(0, SAMPLES, block):
            due = start + i / RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            agent.stdin.write(b"".join(lines[i : i + block]))
            agent.stdin.flush()
        # A second apart, so the alarm cap's window (20 a second) cannot hold it back.
        time.sleep(1.1)
        agent.stdin.write(json.dumps({"x": SENTINEL}).encode() + b"\n")
        agent.stdin.flush()
        wait_until(
            lambda: any(v > SENTINEL_VALUE for v in events.values), 120, "the sentinel's alarm"
        )
        streamed_s = time.monotonic() - start
        cpu_per_1000 = (_cpu_s(process) - cpu1) / (SAMPLES + 1) * 1000
        after_rss = process.memory_info().rss / 2**20
        peak = _peak_rss_mb(agent.pid)
    finally:
        tree_peak.stop()
        agent.terminate()
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)
        events.close()
    return {
        "python": python,
        "backend": backend,
        # Spawn to the first line, printed once the agent is imported and its stored
        # model (none here) restored: what a device waits after boot before scoring.
        "startup_s": round(first_line[0] - spawned, 2),
        "run_import_ms": import_ms,
        "installed_rss_mb": round(installed_rss, 1),
        "after_stream_rss_mb": round(after_rss, 1),
        "peak_rss_mb": peak,
        # The agent with its short-lived children (verifying, the model's check), sampled.
        "with_children_peak_rss_mb": round(tree_peak.total_mb, 1),
        "children_peak_rss_mb": round(tree_peak.children_mb, 1),
        "idle_cpu_pct_of_core": round(idle_pct, 3),
        "idle_seconds": IDLE_SECONDS,
        "cpu_s_per_1000_samples": round(cpu_per_1000, 4),
        "samples": SAMPLES,
        "rate": RATE,
        "streamed_s": round(streamed_s, 1),
    }


def _import_ms(python: str, env: dict[str, str], workdir: Path) -> float:
    """What `run` imports (edge.agent and all below it), by `python -X importtime`: the
    median of IMPORT_RUNS fresh interpreters, each stopped by a config that is not there
    once the imports are done."""
    command = [python, "-X", "importtime", "-m", "edge.cli", "run", "--config"]
    command.append(str(workdir / "absent.toml"))
    totals = []
    for _ in range(IMPORT_RUNS):
        done = subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True)
        line = next((x for x in done.stderr.splitlines() if re.search(r"\| edge\.agent$", x)), None)
        if line is None:
            raise RuntimeError(f"no import time for edge.agent: {done.stderr[-500:]}")
        totals.append(int(line.split("|")[1]) / 1000)
    return round(statistics.median(totals), 1)


def _cannot_run_agent(python: str) -> str | None:
    """Why `python` cannot import the agent from this tree (a tflite-runtime venv built
    before it got the edge dependencies, say), in one line; None if it can."""
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    done = subprocess.run(
        [python, "-c", "import edge.agent"], env=env, capture_output=True, text=True
    )
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
    return f"{python} cannot import the agent ({last}); rebuild it: {_VENV_HINT}"


def _backend(python: str, env: dict[str, str]) -> str:
    code = "from edgeloop.runtime import _interpreter_class; print(_interpreter_class()[0])"
    done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _agent_run(
    python: str, tree: Path, run: RunResult, config: ModelConfig, broker_url: str
) -> dict[str, Any]:
    """One agent's measurement, with a repository and CDN of its own holding v1."""
    with tempfile.TemporaryDirectory(prefix="edgeloop-footprint-") as tmp:
        workdir = Path(tmp)
        repository = BenchRepository.local(workdir / "cloud", config)
        repository.publish(1, run)
        (workdir / "root.json").write_bytes(repository.root)
        cdn = cdn_of_files(repository.files)
        try:
            entry = measure_one(python, tree, workdir, broker_url, cdn.base_url)
        finally:
            cdn.stop()
        assert run.tflite is not None
        (workdir / "model.tflite").write_bytes(run.tflite)
        entry["floor_rss_mb"] = _floor(python, workdir / "model.tflite", workdir / "root.json")
    # Above the floor: the agent's own code and running state, and what it imports
    # besides the floor's libraries. The agent verifies in a child (edge.trust_child), so
    # its floor stops at the link; the verifying step is the child's.
    entry["above_floor_mb"] = round(entry["peak_rss_mb"] - entry["floor_rss_mb"]["link"], 1)
    goal = GOAL_RSS_MB.get(entry["backend"])
    entry["goal_rss_mb"] = goal
    entry["meets_goal"] = (
        goal is not None
        and entry["peak_rss_mb"] <= goal
        and entry["idle_cpu_pct_of_core"] <= GOAL_IDLE_PCT
    )
    return entry


def _floor(python: str, model: Path, root: Path) -> dict[str, float]:
    """The libraries' floor under the agent in `python` (bench/footprint_floor.py): resident
    MB after each step the agent cannot do without, done by the libraries alone."""
    done = subprocess.run(
        [python, "-P", str(Path(__file__).with_name("footprint_floor.py")), str(model), str(root)],
        capture_output=True,
        text=True,
        check=True,
    )
    steps: dict[str, float] = json.loads(done.stdout)
    return steps


def _export(rev: str, into: Path) -> None:
    """The agent's packages (edge, edgeloop) as they were at `rev`."""
    archive = subprocess.run(
        ["git", "-C", str(TREE), "archive", rev, "edge", "edgeloop"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def measure(compare: str | None = None) -> dict[str, Any]:
    """The agent as this tree has it; with `compare`, the agent at that revision too,
    each interpreter running the two one after the other in the same run."""
    config = parse_config(tomllib.loads(ANOMALY_TOML))
    run = _runs(1)[0]
    broker = start_broker()
    figures: dict[str, Any] = {"agents": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="edgeloop-footprint-before-") as before:
            trees = {"now": TREE}
            if compare:
                _export(compare, Path(before))
                trees = {"before": Path(before), "now": TREE}
                figures["before"] = {"revision": compare, "agents": {}}
            for name, python in interpreters("agent_footprint").items():
                missing = _cannot_run_agent(python)
                if missing:
                    print(f"agent_footprint: {name} skipped: {missing}", flush=True)
                    figures["skipped"] = {**figures.get("skipped", {}), name: missing}
                    continue
                for label, tree in trees.items():
                    entry = _agent_run(python, tree, run, config, broker.url)
                    into = figures["agents"] if label == "now" else figures["before"]["agents"]
                    into[name] = entry
                    print(label, name, json.dumps(entry), flush=True)
    finally:
        broker.close()
    figures["goal_idle_cpu_pct"] = GOAL_IDLE_PCT
    figures["meets_goal"] = (
        bool(figures["agents"])
        and "skipped" not in figures
        and all(a["meets_goal"] for a in figures["agents"].values())
    )
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--compare", metavar="REV", help="also measure the agent as it was at this git revision"
    )
    args = parser.parse_args()
    result = measure(args.compare)
    if args.compare:
        print(f"-> {write_result('agent_footprint_compare', result)}")
    else:
        print(json.dumps(result, indent=1))
