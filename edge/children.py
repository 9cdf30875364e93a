"""How the agent starts a Python child of its own (the model's probe, the verifier).

`-P` keeps the working directory off the child's `sys.path`: a `tuf.py` or an
`edge/` left where the agent happens to run must not stand in for the code that
checks what the device installs. The child finds this very `edge` package instead:
where it is not installed (a source tree), its directory goes first on PYTHONPATH.
"""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

# The directory holding the `edge` package this process runs.
_HOME = str(Path(__file__).resolve().parents[1])


def python_module(module: str) -> tuple[str, ...]:
    """The command that runs `module` in a fresh interpreter of this one."""
    return (sys.executable, "-P", "-m", module)


def child_environment() -> dict[str, str]:
    """This process's environment, with this `edge` on the path where it is not installed."""
    env = dict(os.environ)
    sites = (*site.getsitepackages(), site.getusersitepackages())
    installed = {str(Path(p).resolve()) for p in sites}
    if _HOME not in installed:
        parts = [_HOME, *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env
