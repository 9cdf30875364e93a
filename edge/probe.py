"""Trying an untrusted model in a child process, before the agent's own process touches it.

A model file a few bytes away from a real export can crash the interpreter
(SIGSEGV) or make it score for tens of seconds. Both would take the agent
down with it, and with the pointer still naming that version it would crash again on every
start. So the agent first loads the model and runs its health checks in
`python -m edge.probe`, with a time limit, and swaps only after the child
succeeds.

The child reads one JSON header line (features, health checks) and then the
model's bytes on stdin. It imports only numpy and the interpreter wrapper, so
it starts in a few hundred milliseconds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.children import child_environment, python_module
from edgeloop.runtime import CompiledModel, ModelLoadError

# Exit codes of the child; anything else (a signal, a traceback) is a crash.
OK, REFUSED = 0, 10


def compare(
    i: int, got: npt.NDArray[np.float32], want: npt.NDArray[np.float64], tolerance: float
) -> str | None:
    """Why health check `i` failed, or None when the outputs are within tolerance."""
    if got.shape != want.shape:
        return f"health check {i}: outputs have shape {got.shape}, expected {want.shape}"
    error = float(np.max(np.abs(got - want)))
    if not np.isfinite(error) or error > tolerance:
        return (
            f"health check {i}: max error {error:.3g} is over the tolerance {tolerance:.3g}; "
            "the model does not compute what the cloud shipped"
        )
    return None


def check_in_this_process(model: bytes, n_features: int, checks: list[dict[str, Any]]) -> str:
    """Load and check; returns the refusal (kind: message), or "" when the model passed."""
    try:
        runtime = CompiledModel(model)
    except ModelLoadError as exc:
        return f"ModelLoadError: {exc}"
    if runtime.n_features != n_features:
        return (
            f"ModelUnusable: model takes {runtime.n_features} features, "
            f"this device produces {n_features}"
        )
    for i, check in enumerate(checks):
        inputs = np.asarray(check["inputs"], dtype=np.float32)
        got = runtime.predict(inputs).reshape(len(inputs), -1)
        want = np.asarray(check["expected"], dtype=np.float64).reshape(len(inputs), -1)
        reason = compare(i, got, want, float(check["tolerance"]))
        if reason:
            return f"HealthCheckFailed: {reason}"
    return ""


@dataclass(frozen=True)
class ProbeVerdict:
    passed: bool
    reason: str = ""  # "Kind: message" when refused


class InProcessProbe:
    """The check in the agent's own process: no isolation from a model that crashes the
    interpreter. For many simulated devices in one process (a thousand child
    interpreters at once would measure the simulation, not the fleet), and as the
    baseline the child's cost is measured against."""

    def check(self, model: bytes, n_features: int, checks: list[dict[str, Any]]) -> ProbeVerdict:
        reason = check_in_this_process(model, n_features, checks)
        return ProbeVerdict(passed=not reason, reason=reason)


@dataclass(frozen=True)
class ChildProcessProbe:
    """Runs the check in `command` (by default `python -P -m edge.probe`) within `timeout`
    seconds."""

    timeout: float
    command: Sequence[str] = field(default=python_module("edge.probe"))

    def check(self, model: bytes, n_features: int, checks: list[dict[str, Any]]) -> ProbeVerdict:
        header = json.dumps({"n_features": n_features, "checks": checks}).encode() + b"\n"
        try:
            done = subprocess.run(
                list(self.command),
                input=header + model,
                capture_output=True,
                timeout=self.timeout,
                check=False,
                env=child_environment(),
            )
        except subprocess.TimeoutExpired:
            return ProbeVerdict(
                False,
                f"ModelTooSlow: loading and checking the model took over {self.timeout:g} s "
                "in a child process; it was stopped",
            )
        if done.returncode == OK:
            return ProbeVerdict(True)
        if done.returncode == REFUSED:
            return ProbeVerdict(False, done.stdout.decode("utf-8", "replace").strip()[:1000])
        if done.returncode < 0:
            name = signal.Signals(-done.returncode).name
            return ProbeVerdict(
                False,
                f"ModelCrashed: the interpreter died with {name} loading or checking the model "
                "in a child process; the agent kept the old model",
            )
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return ProbeVerdict(
            False, f"ModelCrashed: the check process exited {done.returncode}: {tail[0][:300]}"
        )


def main() -> int:
    header = json.loads(sys.stdin.buffer.readline())
    model = sys.stdin.buffer.read()
    reason = check_in_this_process(model, int(header["n_features"]), list(header["checks"]))
    if reason:
        print(reason, flush=True)
        return REFUSED
    return OK


if __name__ == "__main__":
    raise SystemExit(main())
