"""The local stand-ins' processes: started beside busy threads, never left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()),
    reason="mosquitto is not installed (make test installs it)",
)

# The parent starts a broker while other threads are busy (a fork while another
# thread holds the import lock once hung Popen forever), prints the broker's pid,
# then dies without cleaning up.
PARENT = """
import os, threading, importlib, sys
stop = False
def churn():
    while not stop:
        importlib.reload(importlib.import_module("json"))
threads = [threading.Thread(target=churn, daemon=True) for _ in range(4)]
for t in threads: t.start()
from tests.support_broker import Mosquitto
for _ in range(5):
    broker = Mosquitto()
    broker.stop()
broker = Mosquitto()
print(broker._process.pid, flush=True)
os._exit(0)
"""


def test_broker_starts_beside_busy_threads_and_dies_with_its_parent() -> None:
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin"}
    done = subprocess.run(
        [sys.executable, "-c", PARENT],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"broker {pid} outlived the process that started it"
        time.sleep(0.1)


def test_moto_in_its_own_process_serves_and_stops() -> None:
    from edgeloop.local.aws import MotoServer

    aws = MotoServer(own_process=True)
    process = aws._process
    assert process is not None
    try:
        s3 = aws.client("s3")
        s3.create_bucket(
            Bucket="soak-check", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        s3.put_object(Bucket="soak-check", Key="k", Body=b"v")
        assert s3.get_object(Bucket="soak-check", Key="k")["Body"].read() == b"v"
    finally:
        aws.stop()
    assert process.poll() is not None
