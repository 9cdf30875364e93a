"""Verifying in a child process answers what verifying in the agent's process does."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from edge.download import HttpFetcher
from edge.errors import TrustRefused, TrustUnavailable
from edge.targets import Offer, SignedTarget, TargetRef
from edge.trust_child import ChildRepository
from tests.security.test_trust_root_mismatch import other_root
from tests.support_trust import PREFIX, TrustWorld, installed, model_bytes, world
from tests.support_world import wait_for

__all__ = ["world"]


def child_device(
    world: TrustWorld,
    tmp: Path,
    root: bytes | None = None,
    command: tuple[str, ...] | None = None,
    grace: float = 60.0,
    timeout: float = 2.0,
) -> ChildRepository:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "root.json").write_bytes(root or world.shipped_root())
    # A fast link's deadlines: a refresh may take its timeout and a second or so.
    http = HttpFetcher(
        world.cdn.base_url + PREFIX, timeout=timeout, retries=0, min_bytes_per_second=2**20
    )
    extra = {} if command is None else {"command": command}
    return ChildRepository(
        http, tmp / "root.json", tmp / "trust", staging=tmp / "staging", grace=grace, **extra
    )


def targets(offer: Offer) -> list[SignedTarget]:
    named = [offer.model, offer.golden, offer.spec, *offer.compressed.values()]
    return [t for t in (*named, offer.patch[0] if offer.patch else None) if t is not None]


def test_the_child_offers_and_downloads_what_the_agents_process_would(
    world: TrustWorld, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world.publish("digits", 1)
    world.publish("digits", 2)
    here = world.device()
    there = child_device(world, tmp_path)
    with caplog.at_level(logging.INFO, logger="edge.trust"):
        offer_here = here.refresh("digits", "thing-1", installed(1))
        offer_there = there.refresh("digits", "thing-1", installed(1))
    assert offer_there.version == 2
    assert offer_there.patch is not None
    assert offer_there.to_json() == offer_here.to_json()
    for target in targets(offer_there):
        assert there.download(target) == here.download(target)
    assert there.bytes_received == here.bytes_received > 0
    # The child's own log lines, logged here under their names.
    assert [r.name for r in caplog.records if "event=refreshed" in r.getMessage()] == [
        "edge.trust",
        "edge.trust",
    ]
    there.release()
    assert there._child is None
    # The kept metadata vouches for the signed bytes only.
    assert there.vouches_for("digits", 2, model_bytes(2)) is True
    assert there.vouches_for("digits", 2, model_bytes(1)) is False
    there.release()  # as the agent does once its stored models are checked
    assert there._child is None


def test_a_refusal_in_the_child_is_the_same_error_with_the_same_reason(
    world: TrustWorld, tmp_path: Path
) -> None:
    world.publish("digits", 1)
    root = other_root(tmp_path)
    here = world.device(root=root)
    there = child_device(world, tmp_path / "child", root=root)
    with pytest.raises(TrustRefused) as refused_here:
        here.refresh("digits", "thing-1", None)
    with pytest.raises(TrustRefused) as refused_there:
        there.refresh("digits", "thing-1", None)
    assert refused_there.value.reason == refused_here.value.reason
    assert refused_there.value.reason.startswith("UnsignedMetadataError: ")
    there.release()


def test_a_target_the_refresh_did_not_offer_is_not_fetched(
    world: TrustWorld, tmp_path: Path
) -> None:
    world.publish("digits", 1)
    there = child_device(world, tmp_path)
    offer = there.refresh("digits", "thing-1", None)
    assert offer.model is not None
    forged = TargetRef("digits/9/model.tflite", 10, {"sha256": "0" * 64})
    with pytest.raises(TrustRefused, match="not a target the last refresh offered"):
        there.download(forged)
    there.release()


@pytest.mark.parametrize(
    ("code", "said"),
    [
        ("import sys; sys.exit(3)", "exited (3) before answering"),
        ("import time; time.sleep(120)", "no answer within its deadline"),
    ],
)
def test_a_child_that_dies_or_hangs_is_a_retryable_failure(
    world: TrustWorld, tmp_path: Path, code: str, said: str
) -> None:
    world.publish("digits", 1)
    # A refresh's budget is sixteen fetch timeouts: short ones, so the hang ends in seconds.
    command = (sys.executable, "-c", code)
    there = child_device(world, tmp_path, command=command, grace=1.0, timeout=0.1)
    with pytest.raises(TrustUnavailable, match=re.escape(said)) as failed:
        there.refresh("digits", "thing-1", None)
    assert failed.value.reason.startswith("TrustUnavailable: the verifying process failed")
    assert there._child is None  # ended, so the next refresh starts afresh


def test_a_child_that_cannot_run_vouches_for_nothing(
    world: TrustWorld, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At start the agent asks whether its stored model is signed; a verifying process
    that cannot run answers as unreadable kept metadata does: no."""
    there = child_device(world, tmp_path, command=(sys.executable, "-c", "raise SystemExit(1)"))
    with caplog.at_level(logging.ERROR, logger="edge.trust"):
        assert there.vouches_for("digits", 1, model_bytes(1)) is False
    assert "event=kept_metadata_unusable" in caplog.text
    assert "exited (1) before answering" in caplog.text


def test_a_child_that_stops_reading_cannot_hold_the_agent(
    world: TrustWorld, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored model's bytes fill the pipe to a child that reads nothing: the write
    gives up at the deadline instead of blocking the agent's start."""
    sleeper = (sys.executable, "-c", "import time; time.sleep(120)")
    there = child_device(world, tmp_path, command=sleeper, grace=1.0, timeout=0.1)
    with caplog.at_level(logging.ERROR, logger="edge.trust"):
        assert there.vouches_for("digits", 1, bytes(4 * 2**20)) is False
    assert "took no request within its deadline" in caplog.text
    assert there._child is None


def test_a_child_started_after_the_refresh_retries_rather_than_refuses(
    world: TrustWorld, tmp_path: Path
) -> None:
    """The child died between the refresh and a download (the OOM killer, say): a fresh
    one has verified nothing yet, so the update is retried, never refused for good."""
    world.publish("digits", 1)
    there = child_device(world, tmp_path)
    offer = there.refresh("digits", "thing-1", None)
    assert offer.model is not None
    assert there._child is not None
    there._child.kill()
    there._child.wait()
    with pytest.raises(TrustUnavailable, match="has not refreshed yet"):
        there.download(offer.model)
    there.release()


def test_abort_ends_a_request_under_way_from_another_thread(
    world: TrustWorld, tmp_path: Path
) -> None:
    world.publish("digits", 1)
    sleeper = (sys.executable, "-c", "import time; time.sleep(120)")
    there = child_device(world, tmp_path, command=sleeper)
    failed: list[BaseException] = []

    def refresh() -> None:
        try:
            there.refresh("digits", "thing-1", None)
        except TrustUnavailable as exc:
            failed.append(exc)

    worker = threading.Thread(target=refresh)
    worker.start()
    wait_for(lambda: there._child is not None)
    there.abort()  # as Agent.stop does
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert len(failed) == 1
    assert there._child is None


_ORPHANED = """
import os, sys, threading, time
from pathlib import Path
from edge.download import HttpFetcher
from edge.trust_child import ChildRepository
base, tmp = sys.argv[1], Path(sys.argv[2])
repository = ChildRepository(
    HttpFetcher(base, timeout=120.0, retries=0), tmp / "root.json", tmp / "trust",
    staging=tmp / "staging",
)
threading.Thread(
    target=lambda: repository.refresh("digits", "thing-1", None), daemon=True
).start()
while repository._child is None:
    time.sleep(0.01)
print(repository._child.pid, flush=True)
time.sleep(1.0)  # the child is inside its first fetch, which will not answer
os._exit(0)  # killed, as far as the child can tell: no release, no word
"""


def test_the_child_leaves_when_its_agent_is_gone(tmp_path: Path, world: TrustWorld) -> None:
    """An agent killed mid-refresh: its child, stuck in a fetch the CDN never answers
    (a 120 s timeout), leaves within seconds instead of fetching on without it."""
    (tmp_path / "root.json").write_bytes(world.shipped_root())
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        base = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        # The child inherits stderr: not a pipe here, or reading it would wait for the child.
        agent = subprocess.Popen(
            [sys.executable, "-c", _ORPHANED, base, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=Path(__file__).parents[3],
        )
        assert agent.stdout is not None
        child = psutil.Process(int(agent.stdout.readline()))
        assert agent.wait(timeout=30) == 0
        agent.stdout.close()
        wait_for(
            lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
            30,
            "the orphaned child to exit",
        )


def test_a_planted_module_in_the_working_directory_is_not_imported(
    world: TrustWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child runs with -P: a tuf/ where the agent runs does not replace python-tuf."""
    world.publish("digits", 1)
    planted = tmp_path / "cwd" / "tuf"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("raise ImportError('planted')\n")
    monkeypatch.chdir(planted.parent)
    there = child_device(world, tmp_path / "device")
    assert there.refresh("digits", "thing-1", None).version == 1
    there.release()
