"""The interpreter's start-up INFO line is kept from the user; real errors are not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgeloop.cli.quiet import _one_op_model

REPO = Path(__file__).resolve().parents[3]
INFO = "Created TensorFlow Lite XNNPACK delegate"


def _predict(tmp_path: Path, data: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "model.tflite").write_bytes(_one_op_model())
    (tmp_path / "rows.csv").write_text(data)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeloop.cli.main",
            "predict",
            str(tmp_path / "model.tflite"),
            str(tmp_path / "rows.csv"),
            "--threshold",
            "1.5",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_predict_prints_no_interpreter_info_line(tmp_path: Path) -> None:
    done = _predict(tmp_path, "x\n1\n2\n")
    assert done.returncode == 0, done.stderr
    assert INFO not in done.stderr
    assert done.stderr == ""
    assert "2 rows (6 bytes read) scored" in done.stdout


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_what_else_native_code_writes_meanwhile_still_shows() -> None:
    code = (
        "import os\n"
        "from edgeloop.runtime import filtered_native_stderr\n"
        "with filtered_native_stderr():\n"
        "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
        "    os.write(2, b'ERROR: something real\\n')\n"
    )
    done = _python("-c", code)
    assert done.stderr == "ERROR: something real\n"


def test_any_process_s_first_interpreter_is_quiet_the_agent_s_too() -> None:
    """The filter lives in the interpreter wrapper, so the agent (which never
    imports the CLI) and the factory get it without a warm-up of their own."""
    code = (
        "from edgeloop.cli.quiet import _one_op_model\n"
        "model = _one_op_model()\n"
        "from edgeloop.runtime import CompiledModel\n"
        "CompiledModel(model)\n"
        "CompiledModel(model)\n"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_the_agent_prints_its_version() -> None:
    done = _python("-m", "edge.cli", "--version")
    assert done.returncode == 0
    assert done.stdout.startswith("edgeloop-agent ")
