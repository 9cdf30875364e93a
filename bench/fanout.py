"""Fan-out: one nudge, 1,000 agents on one machine, each swapped.

The agents are the real `edge.agent.Agent` (MQTT link, TUF refresh, download,
patch, health check, swap), without sensors or uploads, spread over processes
(one process cannot watch more than ~1,000 sockets with select()). The cloud
side signs the version and its pointer into the repository, then publishes once
per version and band: a retained QoS 1 nudge on each of the model's 100 band
topics (a rollout at 100%), each device subscribed to one, which the broker
fans out. Every agent then refreshes the signed metadata from the CDN and
fetches the version: the full model (compressed) first, then a patch.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import shutil
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import BenchRepository, nudge_everyone, wait_until
from bench.soak import train_versions, worker
from edgeloop.contract.stages import BANDS
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.factory.config import parse_config
from edgeloop.local.broker import EmbeddedBroker
from tests.support_broker import Mosquitto
from tests.support_http import cdn_of_files

AGENTS = 1000
PER_PROCESS = 200
GOAL_SECONDS = 60.0


def measure(agents: int = AGENTS) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 16 * agents)), hard))
    config = parse_config(tomllib.loads(ANOMALY_TOML))
    runs = train_versions(2)
    workdir = Path(tempfile.mkdtemp(prefix="edgeloop-fanout-"))
    repository = BenchRepository.local(workdir / "cloud", config)
    has_mosquitto = shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()
    broker = Mosquitto() if has_mosquitto else EmbeddedBroker()
    cdn = cdn_of_files(repository.files)
    (workdir / "root.json").write_bytes(repository.root)
    context = multiprocessing.get_context("spawn")
    workers = []
    for first in range(0, agents, PER_PROCESS):
        parent, child = context.Pipe()
        spec = {
            "broker": broker.url,
            "cdn": cdn.base_url,
            "dir": str(workdir),
            "first": first,
            "count": min(PER_PROCESS, agents - first),
        }
        proc = context.Process(target=worker, args=(child, spec), daemon=True)
        proc.start()
        workers.append((proc, parent))

    def ask(command: str) -> list[Any]:
        for _, pipe in workers:
            pipe.send((command,))
        return [pipe.recv() for _, pipe in workers]

    rounds: list[dict[str, Any]] = []
    publishes = 0
    try:
        ask("start")
        wait_until(lambda: all(r["connected"] == r["agents"] for r in ask("state")), 300, "links")
        announcer = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fanout-announcer")
        announcer.connect("127.0.0.1", broker.port)
        announcer.loop_start()
        for version, run in enumerate(runs, start=1):
            start = time.monotonic()
            repository.publish(version, run)
            publishes += nudge_everyone(announcer, "vibration", version)

            def everyone_on(v: int = version) -> bool:
                return all(r["versions"] == [v] for r in ask("state"))

            took = wait_until(everyone_on, 300, f"every agent on v{version}")
            rounds.append(
                {
                    "version": version,
                    "shipped": "full (zstd)" if version == 1 else "patch",
                    "announce_to_all_swapped_s": round(took, 1),
                    "elapsed_s": round(time.monotonic() - start, 1),
                }
            )
            print(json.dumps(rounds[-1]), flush=True)
        announcer.loop_stop()
        ask("stop")
    finally:
        for proc, _ in workers:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        cdn.stop()
        broker.close()
    worst = max(float(r["announce_to_all_swapped_s"]) for r in rounds)
    return {
        "agents": agents,
        "processes": len(workers),
        "broker": broker.kind,
        "cloud_publishes_per_version": publishes // len(runs),
        "rounds": rounds,
        "worst_announce_to_all_swapped_s": worst,
        "meets_goal": worst < GOAL_SECONDS and publishes == len(runs) * BANDS,
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=1))
