"""Patch generation time and memory for each codec, at 100 KB, 1 MB and 16 MB.

The model is a float32 weight blob behind a fixed header, and the new version
is every weight nudged by training (1% relative noise), which is what a
warm-started retrain looks like. Each measurement runs in a fresh process, and
the peak RSS (Linux VmHWM, reset just before the call) above the RSS before it
is the memory that call needed on top of the two models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

SIZES = {"100 KB": 100_000, "1 MB": 1_000_000, "16 MB": 16_000_000}
CODECS = ("bsdiff4", "zstd", "wdiff")

_ONE = """
import json, sys, time
from pathlib import Path
import numpy as np
from edgeloop.delta import apply_patch, make_patch

def mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field + " not in /proc/self/status")

def reset_peak():
    # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS.
    Path("/proc/self/clear_refs").write_text("5")

size, codec = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
w = rng.normal(0, 0.3, size // 4).astype(np.float32)
header = bytes(256)
old = header + w.tobytes()
new = header + (w * (1 + rng.normal(0, 0.01, w.size))).astype(np.float32).tobytes()
del w
reset_peak()
base = mb("VmRSS")
t = time.perf_counter()
patch = make_patch(old, new, codec)
make_s = time.perf_counter() - t
make_peak = mb("VmHWM") - base
reset_peak()
base = mb("VmRSS")
t = time.perf_counter()
out = apply_patch(old, patch, codec, max_size=len(new))
apply_s = time.perf_counter() - t
apply_peak = mb("VmHWM") - base
assert out == new
print(json.dumps({"patch_bytes": len(patch), "ratio_to_model": len(patch) / len(new),
                  "make_s": make_s, "apply_s": apply_s,
                  "make_peak_extra_mb": make_peak, "apply_peak_extra_mb": apply_peak,
                  "inputs_mb": 2 * len(new) / 2**20}))
"""


def measure() -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for label, size in SIZES.items():
        rows[label] = {}
        for codec in CODECS:
            done = subprocess.run(
                [sys.executable, "-c", _ONE, str(size), codec],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows[label][codec] = {k: round(v, 4) for k, v in result.items()}
            print(label, codec, json.dumps(rows[label][codec]), flush=True)
    return {"sizes": rows}


if __name__ == "__main__":
    measure()
