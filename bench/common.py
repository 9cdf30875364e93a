"""What every benchmark shares: the machine it ran on, timing and result files.

Absolute timings drift on a shared machine, so every goal is a ratio measured
side by side in one run, or a count; the machine is recorded beside it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from edgeloop.contract import announcement
from edgeloop.contract.signers import LocalSigner, sign_manifest
from edgeloop.contract.stages import BANDS
from edgeloop.factory.config import ModelConfig
from edgeloop.factory.deltas import plan_deltas
from edgeloop.factory.release import build_manifest, compressed_file, delta_files, version_prefix
from edgeloop.factory.run import RunResult

RESULTS = Path(__file__).parent / "results"


def announce_to_everyone(client: Any, model: str, raw: bytes) -> int:
    """What the cloud publishes when a rollout covers the whole fleet: the manifest,
    retained, on each of the model's 1% bands. Returns the publishes made."""
    for band in range(BANDS):
        client.publish(announcement(model, band), raw, qos=1, retain=True).wait_for_publish(30)
    return BANDS


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


def release_files(
    config: ModelConfig, runs: Sequence[RunResult], signer: LocalSigner
) -> tuple[list[bytes], dict[str, bytes]]:
    """Publish `runs` as versions 1..n the way the retrain function does: the
    model, patches from every earlier version, the compressed model and a
    signed manifest. Returns the manifests and every file by its CDN path."""
    model = config.model.name
    files: dict[str, bytes] = {}
    manifests: list[bytes] = []
    published: dict[int, bytes] = {}
    for version, run in enumerate(runs, start=1):
        if run.tflite is None:
            raise ValueError(f"run {version} produced no model to publish")
        files[version_prefix(model, version) + "model.tflite"] = run.tflite
        plan = plan_deltas(run.tflite, published)
        deltas = []
        for ref, data in delta_files(model, version, plan):
            files[ref.path] = data
            deltas.append(ref)
        packed, packed_data = compressed_file(model, version, plan)
        files[packed.path] = packed_data
        manifest = build_manifest(
            config, version, run.tflite, deltas, run.record, timedelta(days=1), None, packed
        )
        manifests.append(sign_manifest(manifest, signer).to_bytes())
        published[version] = run.tflite
    return manifests, files
