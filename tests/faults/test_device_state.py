"""The device against its own disk, its clock and a hostile path to the CDN.

A version is its bytes, a fetch has a deadline, a redirect stays on the CDN's host,
the stored model answers to the signed metadata at start, a damaged state file
falls back without forgetting the clock floor, and a clock that jumps neither
installs stale metadata nor locks the device out.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from edge.download import HttpFetcher
from edge.errors import DownloadFailed, RedirectRefused
from edgeloop.contract import sha256_hex, utc_now
from tests.support_http import Fault, artifact_server
from tests.support_release import Releases, vibration_runs
from tests.support_rig import Rig, assert_serving, install_v1
from tests.support_world import World, wait_for

# --- a version is its bytes ---------------------------------------------------------------


def test_the_same_version_number_with_other_bytes_is_a_new_install(rig: Rig) -> None:
    """Finding 3: the local cloud restarted with new keys and a new history; the device's
    trust folder cleared to follow the new root. The new cloud's v1 has other bytes than
    the v1 the device runs: it is installed, not "already running"."""
    install_v1(rig)
    old = rig.store.current()
    assert old is not None
    shutil.rmtree(rig.root / "trust")
    _, other, _ = vibration_runs()
    rig.releases = Releases(rig.server, rig.root / "new-cloud")
    rig.releases.release(1, other)
    result = rig.updater(repository=rig.repository(rig.releases.root)).handle()
    assert result.step == "succeeded", result.detail
    assert_serving(rig, 1)
    served = rig.scorer.model
    assert served is not None
    assert served.manifest.artifact.sha256 == sha256_hex(rig.releases.models[1])
    assert served.manifest.artifact.sha256 != old.manifest.artifact.sha256


# --- the path to the CDN ------------------------------------------------------------------


def test_a_fetch_that_trickles_bytes_is_given_up_at_its_deadline() -> None:
    """Finding 5: one byte every 50 ms never trips the 1 s read timeout; 200 bytes at a
    minimum of 100 bytes/s must be done within 1 + 2 s, retries included."""
    with artifact_server() as server:
        path = "models/tuf/targets/slow.bin"
        server.files[path] = b"x" * 200
        server.faults[path] = Fault(trickle_seconds=0.05)
        fetcher = HttpFetcher(
            server.base_url + "models/",
            timeout=1.0,
            retries=2,
            backoff=0.01,
            min_bytes_per_second=100.0,
        )
        with pytest.raises(DownloadFailed, match="deadline"):
            fetcher.fetch_at_most("tuf/targets/slow.bin", 200)


def test_a_redirect_to_another_host_is_refused_and_one_on_the_cdn_followed(
    tmp_path: Path,
) -> None:
    """Finding 6: the CDN (or a path in front of it) answers 302 to another host: the
    device asks that host nothing. A redirect on the CDN's own host is followed."""
    with artifact_server() as cdn, artifact_server() as elsewhere:
        moved = "models/tuf/targets/moved.bin"
        elsewhere.files[moved] = b"the bytes"
        cdn.files["models/tuf/targets/here.bin"] = b"the bytes"
        cdn.faults[moved] = Fault(redirect_to=elsewhere.base_url + moved)
        cdn.faults["models/tuf/targets/alias.bin"] = Fault(
            redirect_to=cdn.base_url + "models/tuf/targets/here.bin"
        )
        cdn.files["models/tuf/targets/alias.bin"] = b""
        fetcher = HttpFetcher(cdn.base_url + "models/", timeout=2.0, retries=1, backoff=0.01)
        with pytest.raises(RedirectRefused, match="another host"):
            fetcher.fetch("tuf/targets/moved.bin", tmp_path / "moved.part", 9)
        assert elsewhere.requests == []
        assert fetcher.fetch("tuf/targets/alias.bin", tmp_path / "alias.part", 9) == b"the bytes"


# --- the device's own disk ----------------------------------------------------------------


def test_an_edited_stored_model_and_manifest_are_not_served_after_a_restart(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 7: v2's stored model is replaced by other (valid) bytes and its manifest
    edited to match, so the store's own check passes. At start the signed metadata the
    device verified says otherwise: v2 is not served, the kept v1 is."""
    v1, v2, v3 = vibration_runs()
    world.releases.release(1, v1)
    agent = world.agent("pump-1", source=iter(()))
    agent.start(score=False)
    wait_for(lambda: agent.version == 1, what="v1 installed")
    world.publish(2, v2, bases=[1], previous=1)
    wait_for(lambda: agent.version == 2, what="v2 installed")
    agent.stop()
    world.agents.remove(agent)
    folder = agent.store.versions / "2"
    forged = v3.tflite
    assert forged is not None
    manifest = json.loads((folder / "manifest.json").read_bytes())
    manifest["artifact"].update(sha256=sha256_hex(forged), size=len(forged))
    (folder / "model.tflite").write_bytes(forged)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    again = world.agent("pump-1", source=iter(()))
    assert again.store.current() is not None  # the store's own check passes
    with caplog.at_level(logging.ERROR, logger="edge.agent"):
        again.restore()
    assert "event=stored_model_refused version=2" in caplog.text
    assert again.version == 1


def test_a_damaged_state_file_falls_back_to_the_verified_copy_or_to_what_the_disk_proves(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 8: state.json torn. The copy it replaced is read instead, said in the log;
    with both gone, the store keeps its versions and a clock floor at least the newest
    version's creation, and says the refusals are forgotten: never an empty device."""
    install_v1(rig)
    _, v2, _ = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    assert rig.updater().handle().step == "succeeded"
    rig.store.refuse(7)
    floor = rig.store.state.clock_floor
    assert floor is not None
    state = rig.root / "models" / "state.json"
    state.write_bytes(state.read_bytes()[:20])  # torn
    with caplog.at_level(logging.ERROR, logger="edge.store"):
        store = rig.reopen()
    assert "event=state_damaged fell_back_to=state.prev.json" in caplog.text
    assert (store.state.current, store.state.previous) == (2, 1)
    assert store.state.clock_floor is not None
    assert store.state.clock_floor >= floor
    caplog.clear()
    (rig.root / "models" / "state.prev.json").write_bytes(b"\0" * 64)
    state.write_text(state.read_text().replace("2", "3"))  # edited: the checksum no longer fits
    with caplog.at_level(logging.ERROR, logger="edge.store"):
        store = rig.reopen()
    assert "event=state_lost" in caplog.text
    assert "refused before are forgotten" in caplog.text
    assert (store.state.current, store.state.previous) == (2, 1)
    assert store.state.clock_floor is not None
    assert store.state.clock_floor >= floor
    assert store.current() is not None


# --- the device's clock -------------------------------------------------------------------


def test_a_clock_jumping_forward_and_back_locks_nothing_out_and_behind_refreshes_nothing(
    rig: Rig,
) -> None:
    """Finding 8: an update made while the clock reads ten years ahead raises the clock
    floor only to what the signed versions prove (their creation), never to the clock:
    set right again, the device still updates. A day behind that floor, it does not
    refresh at all (expired metadata could look fresh to it)."""
    install_v1(rig)
    v1, v2, v3 = vibration_runs()
    rig.releases.release(2, v2, bases=[1], previous=1)
    now = [utc_now() + timedelta(days=3650)]

    def clock() -> datetime:
        return now[0]

    assert rig.updater(clock=clock).handle().step == "succeeded"
    floor = rig.store.state.clock_floor
    assert floor is not None
    assert floor <= utc_now()
    now[0] = utc_now()
    rig.releases.release(3, v3, bases=[2], previous=2)
    assert rig.updater(clock=clock).handle().step == "succeeded"
    raised = rig.store.state.clock_floor
    assert raised is not None
    now[0] = raised - timedelta(days=1)
    rig.releases.release(4, v1, bases=[3], previous=3)
    asked = len(rig.server.requests)
    behind = rig.updater(clock=clock).handle()
    assert behind.step == "failed"
    assert "ClockBehind" in behind.detail
    assert behind.retryable
    assert rig.server.requests[asked:] == []
    assert_serving(rig, 3)
