"""What every benchmark shares: the machine it ran on, timing and result files.

Absolute timings drift on a shared machine, so every goal is a ratio measured
side by side in one run, or a count; the machine is recorded beside it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from securesystemslib.signer import CryptoSigner, Signer

from edgeloop.contract import Manifest, Nudge, announcement
from edgeloop.contract.stages import BANDS
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX, RolloutPointer
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.release import build_release
from edgeloop.factory.run import RunResult
from edgeloop.trust import (
    ByteStore,
    DirectoryStore,
    RootCeremony,
    TrustRepository,
    VersionRelease,
)
from edgeloop.trust.keys import generate_root_key

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    return {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    figures = {"benchmark": name, "machine": machine(), **figures}
    path.write_text(json.dumps(figures, indent=2, default=float) + "\n")
    return path


def interpreters(section: str) -> dict[str, str]:
    """The Python to run the edge side in, by the backend it loads: LiteRT in this one,
    tflite-runtime 2.14 in its own venv (`make bench` sets EDGELOOP_TFLITE214_PYTHON)."""
    out = {"ai_edge_litert": sys.executable}
    old = os.environ.get("EDGELOOP_TFLITE214_PYTHON")
    if old:
        out["tflite_runtime"] = old
    else:
        print(f"{section}: tflite-runtime 2.14 skipped (EDGELOOP_TFLITE214_PYTHON unset)")
    return out


def percentiles(samples_s: list[float] | np.ndarray) -> dict[str, float]:
    """p50/p99/mean in microseconds."""
    us = np.asarray(samples_s, dtype=np.float64) * 1e6
    return {
        "p50_us": round(float(np.percentile(us, 50)), 2),
        "p99_us": round(float(np.percentile(us, 99)), 2),
        "mean_us": round(float(us.mean()), 2),
    }


def time_calls(call: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, poll: float = 0.2
) -> float:
    """Seconds until `condition()` holds; TimeoutError naming `what` after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - start


class BenchRepository:
    """A fleet's TUF repository, signed as the cloud signs it, and every file of it by the
    path a CDN serves it under: `files` is what `tests.support_http.cdn_of_files` serves,
    kept current."""

    def __init__(self, store: ByteStore, online: Signer, root: bytes, config: ModelConfig) -> None:
        self.config, self.store, self.online, self.root = config, store, online, root
        self.files: dict[str, bytes] = {}
        self.published: dict[int, bytes] = {}
        self.sync()

    @staticmethod
    def local(workdir: Path, config: ModelConfig) -> BenchRepository:
        """In a directory, with a local root of three keys and a local online key."""
        store = DirectoryStore(workdir / "bucket")
        keys = [generate_root_key(workdir / "root-keys" / f"{i}.pem", None) for i in range(3)]
        online = CryptoSigner.generate_ecdsa()
        root = RootCeremony(store).init(keys, 2, online.public_key).to_bytes()
        TrustRepository(store, online).resign_due()
        return BenchRepository(store, online, root, config)

    def repo(self) -> TrustRepository:
        return TrustRepository(self.store, self.online)

    def sync(self) -> None:
        for key in self.store.list("tuf/"):
            data = self.store.get(key)
            assert data is not None
            self.files[REPOSITORY_PREFIX + key] = data

    def publish(self, version: int, run: RunResult, percent: int = 100) -> Manifest:
        """Version `version` with patches from every earlier one, and the pointer naming it
        for `percent` of the fleet, as the retrain function and the rollout do."""
        if run.tflite is None:
            raise ValueError(f"run {version} produced no model to publish")
        plan = plan_deltas(run.tflite, self.published)
        manifest, files = build_release(self.config, version, run.tflite, plan, run.record)
        repo = self.repo()
        repo.publish(VersionRelease.of(manifest, files))
        previous = max(self.published) if self.published else None
        repo.set_pointer(RolloutPointer(self.config.model.name, version, previous, percent))
        self.published[version] = run.tflite
        self.sync()
        return manifest


def nudge_everyone(client: Any, model: str, version: int) -> int:
    """What the cloud publishes when a rollout covers the whole fleet: a nudge, retained,
    on each of the model's 1% bands. Returns the publishes made."""
    payload = Nudge(model, version).to_bytes()
    for band in range(BANDS):
        client.publish(announcement(model, band), payload, qos=1, retain=True).wait_for_publish(30)
    return BANDS
