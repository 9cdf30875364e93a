"""Soak: many real agents on one broker through several model updates and a broker restart.

`make soak` (not CI). Every agent must end on the last version, every queued
upload must reach S3, and memory must stay flat. Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import shutil
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import BenchRepository, nudge_everyone, wait_until
from edge.agent import Agent
from edge.config import parse_agent_config
from edge.probe import InProcessProbe
from edge.sources import synthetic_vibration
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.factory.config import parse_config
from edgeloop.factory.data import Dataset
from edgeloop.factory.run import RunResult, train_run
from edgeloop.local.broker import EmbeddedBroker
from edgeloop.local.runtime import LocalRuntime
from edgeloop.trust import KmsSigner, S3Store
from edgeloop.trust.store import mutable
from tests.support_broker import Mosquitto

RESULTS = Path(__file__).parent / "results"


def train_versions(count: int) -> list[RunResult]:
    config = parse_config(tomllib.loads(ANOMALY_TOML))
    runs: list[RunResult] = []
    champion = None
    for i in range(count):
        rows = np.stack(
            [s.x for s in synthetic_vibration(8, 0.01, seed=100 + i, count=1500 * (i + 1))]
        )
        run = train_run(config, Dataset(X=rows.astype(np.float64), y=None, batches=()), champion)
        assert run.tflite is not None
        assert run.model is not None
        runs.append(run)
        champion = run.model
    return runs


def worker(pipe: Any, spec: dict[str, Any]) -> None:
    """A process hosting a slice of the fleet, driven over a pipe."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    process = psutil.Process()
    agents = []
    for i in range(spec["first"], spec["first"] + spec["count"]):
        config = parse_agent_config(
            {
                "device": {
                    "thing": f"soak-{i:04d}",
                    "model": "vibration",
                    "n_features": 8,
                },
                "broker": {"url": spec["broker"], "reconnect_min": 0.5, "reconnect_max": 15.0},
                "artifacts": {"base_url": spec["cdn"], "timeout": 30.0, "retries": 6},
                "trust": {
                    "root": "root.json",
                    "min_refresh_seconds": 0.0,
                    # Many agents share two cores here: verifying in a child each
                    # would measure the simulation (bench/swap.py times the child).
                    "verify_in": "agent",
                },
                "state": {"dir": f"agent-{i:04d}"},
                "upload": {"batch_rows": 40, "sample_rate": 1.0, "retry_seconds": 2.0},
                "status_interval": 3600.0,
            },
            Path(spec["dir"]),
        )
        # A few hundred agents share this process and two cores: each trying its
        # update in a child interpreter would measure the simulation, not the
        # fleet (a real device pays it on its own CPU: `python -m bench.run swap`).
        agents.append(Agent(config, source=iter(()), probe=InProcessProbe()))
    while True:
        command, *args = pipe.recv()
        if command == "start":
            for agent in agents:
                agent.start(score=False)
            pipe.send(None)
        elif command == "feed":
            samples = list(synthetic_vibration(8, 0.01, seed=args[0], count=40))
            for agent in agents:
                for sample in samples:
                    agent.process(sample)
                agent.flush_uploads()
            pipe.send(len(agents))
        elif command == "state":
            pipe.send(
                {
                    "agents": len(agents),
                    "connected": sum(a.link.connected for a in agents),
                    "versions": sorted({a.version for a in agents}, key=lambda v: v or 0),
                    "queued": sum(len(a.queue) for a in agents),
                    "dropped": sum(a.queue.dropped for a in agents),
                    "connections": sorted({a.link.connections for a in agents}),
                    "rss_mb": round(process.memory_info().rss / 2**20, 1),
                    "threads": process.num_threads(),
                }
            )
        elif command == "stop":
            for agent in agents:
                agent.link.stop()
            pipe.send(None)
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=3)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 16 * args.agents)), hard))
    config = parse_config(tomllib.loads(ANOMALY_TOML))
    started = time.monotonic()
    runs = train_versions(args.updates)
    has_mosquitto = shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()
    broker: Mosquitto | EmbeddedBroker = Mosquitto() if has_mosquitto else EmbeddedBroker()
    figures: dict[str, Any] = {
        "agents": args.agents,
        "updates": args.updates,
        "broker": broker.kind,
        "rounds": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="edgeloop-soak-"))
    # The soak publishes its own versions, so uploads only have to reach S3. The
    # data bucket's notifications are switched off: moto's SQS does work per
    # queued message on every send, and with thousands queued each upload took
    # longer than the agents' timeout. Retraining on uploads is covered by the
    # cloud and e2e tests.
    never_promote = ANOMALY_TOML.replace("threshold = 0.5", "threshold = 1.0")
    with LocalRuntime(
        {"vibration": never_promote},
        broker_url=broker.url,
        status_rule=False,
        batching_window=60.0,
        batch_size=10_000,
        moto_process=True,
    ) as cloud:
        for i in range(args.agents):
            cloud.enroll(f"soak-{i:04d}", "vibration")
        s3 = cloud.client("s3")
        s3.put_bucket_notification_configuration(
            Bucket=cloud.resources.data_bucket, NotificationConfiguration={}
        )
        (workdir / "root.json").write_bytes(cloud.trust_root)
        repository = BenchRepository(
            S3Store(s3, cloud.resources.artifact_bucket, REPOSITORY_PREFIX),
            KmsSigner.of_key(cloud.client("kms"), cloud.resources.signing_key_id),
            cloud.trust_root,
            config,
        )
        # paho's select() cannot watch file descriptors above 1024, so one process
        # holds at most a few hundred agents: the fleet is spread over processes,
        # as real devices would be (one agent each).
        per_process = 200
        context = multiprocessing.get_context("spawn")
        workers = []
        for first in range(0, args.agents, per_process):
            parent, child = context.Pipe()
            count = min(per_process, args.agents - first)
            spec = {
                "broker": broker.url,
                "cdn": cloud.cdn.base_url,
                "dir": str(workdir),
                "first": first,
                "count": count,
            }
            proc = context.Process(target=worker, args=(child, spec), daemon=True)
            proc.start()
            workers.append((proc, parent))

        def ask(command: str, *args: Any) -> list[Any]:
            for _, pipe in workers:
                pipe.send((command, *args))
            return [pipe.recv() for _, pipe in workers]

        connect_start = time.monotonic()
        ask("start")
        wait_until(
            lambda: all(r["connected"] == r["agents"] for r in ask("state")), 300, "connections"
        )
        figures["connect_seconds"] = round(time.monotonic() - connect_start, 1)
        announcer = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-announcer")
        announcer.connect("127.0.0.1", broker.port)
        announcer.loop_start()
        queued = 0
        for version, run in enumerate(runs, start=1):
            round_start = time.monotonic()
            if version == 2:
                broker.stop()  # the broker goes away; agents keep scoring and queueing uploads
                wait_until(
                    lambda: all(r["connected"] == 0 for r in ask("state")), 120, "disconnects"
                )
            queued += sum(ask("feed", version))
            if version == 2:
                broker.start()
                wait_until(lambda: announcer.is_connected(), 60, "the announcer to reconnect")
            repository.publish(version, run)
            # What is published goes to the CDN stand-in's cache too, as CloudFront
            # warmed at publish time would hold it: moto, busy with a thousand
            # devices' uploads, answered cache misses after the agents' timeouts.
            for path, data in repository.files.items():
                if not mutable(path):
                    cloud.artifacts.prime(path, data)
            nudge_everyone(announcer, "vibration", version)

            def everyone_on(v: int = version) -> bool:
                return all(r["versions"] == [v] for r in ask("state"))

            took = wait_until(everyone_on, 600, f"every agent on v{version}")
            states = ask("state")
            figures["rounds"].append(
                {
                    "version": version,
                    "broker_restart": version == 2,
                    "all_swapped_seconds": round(took, 1),
                    "round_seconds": round(time.monotonic() - round_start, 1),
                    "rss_mb_per_process": [r["rss_mb"] for r in states],
                    "threads_per_process": [r["threads"] for r in states],
                }
            )
            print(json.dumps(figures["rounds"][-1]), flush=True)
        figures["drain_seconds"] = round(
            wait_until(lambda: all(r["queued"] == 0 for r in ask("state")), 900, "upload queues"), 1
        )
        time.sleep(2)
        keys: list[str] = []
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=cloud.resources.data_bucket, Prefix="data/"):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        states = ask("state")
        figures["uploads_queued"] = queued
        figures["uploads_in_s3"] = len(keys)
        figures["uploads_dropped"] = sum(r["dropped"] for r in states)
        figures["final_versions"] = sorted({v for r in states for v in r["versions"]})
        figures["reconnections_per_agent"] = sorted({c for r in states for c in r["connections"]})
        ask("stop")
        announcer.loop_stop()
        for proc, _ in workers:
            proc.join(30)
    broker.close()
    first, last = figures["rounds"][0], figures["rounds"][-1]
    figures["agent_rss_growth_last_over_first_update"] = round(
        sum(last["rss_mb_per_process"]) / sum(first["rss_mb_per_process"]), 3
    )
    figures["elapsed_seconds"] = round(time.monotonic() - started, 1)
    figures["machine"] = {
        "cpus": psutil.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    ok = (
        figures["final_versions"] == [args.updates]
        and figures["uploads_in_s3"] == queued
        and figures["uploads_dropped"] == 0
    )
    figures["passed"] = ok
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
