"""The libraries' floor under the agent: what a process resident holds once it has done,
with the libraries alone, the work the agent cannot run without.

Run by path in the agent's interpreter (`python -P bench/footprint_floor.py MODEL ROOT`),
so that nothing of this tree is imported; it prints one JSON object, the resident
megabytes after each cumulative step:

- python: the bare interpreter;
- numpy: NumPy imported (the interpreter's Python API is built on it);
- interpreter: the TFLite interpreter with MODEL loaded, its tensors allocated,
  invoked once;
- link: ssl and paho-mqtt imported (the agent's MQTT link);
- verifying: python-tuf imported (with boto3 kept out, as `run` keeps it out) and
  ROOT's signatures checked by it once (ECDSA, through cryptography).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("/proc/self/status has no VmRSS line")


def _interpreter(model: bytes) -> object:
    for name in BACKENDS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        interpreter = module.Interpreter(model_content=model, num_threads=1)
        interpreter.allocate_tensors()
        interpreter.invoke()
        return interpreter
    raise RuntimeError(f"none of {BACKENDS} imports here")


def main(model_path: str, root_path: str) -> dict[str, float]:
    steps = {"python": _rss_mb()}
    import numpy  # noqa: F401

    steps["numpy"] = _rss_mb()
    model = Path(model_path).read_bytes()
    interpreter = _interpreter(model)
    steps["interpreter"] = _rss_mb()
    import ssl  # noqa: F401

    import paho.mqtt.client  # noqa: F401

    steps["link"] = _rss_mb()
    for sdk in ("boto3", "botocore"):
        sys.modules.setdefault(sdk, None)  # type: ignore[arg-type]
    from tuf.api.metadata import Metadata, Root

    root = Metadata[Root].from_bytes(Path(root_path).read_bytes())
    root.verify_delegate(Root.type, root)
    steps["verifying"] = _rss_mb()
    # Held to here: the model stays loaded through every step, as in the agent.
    del interpreter
    return steps


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
