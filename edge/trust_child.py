"""Verifying in a short-lived child process, so the agent never holds python-tuf.

python-tuf, securesystemslib and cryptography are 11 MB of the agent's resident
memory (`make bench`, agent_footprint: the libraries' floor), held for the
whole life of a process that uses them for a refresh every two days and for an
update a week or a month. `ChildRepository` is the repository the updater asks
(edge.targets.Repository); it starts `python -m edge.trust_child` for a refresh
and the downloads that follow, and ends it (`release`) before the new model is
tried in the probe's own child, so the two never hold the device's memory at
once. The child is edge.trust's SignedRepository, unchanged: what it verifies,
and how, is the same code in either process.

The pipe speaks one JSON line per request and per answer; bytes (a model, a
patch) follow their answer's line raw, counted by its "length". The child's log
records come back with each answer and are logged here under their own names,
so the agent's log reads the same in either process. An answer that does not
come within the fetch's own deadline (edge.download: the timeout plus the length
at the minimum throughput) and a grace period ends the child: the update is
retried later, as after a CDN that failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edge import errors
from edge.children import child_environment, python_module
from edge.download import HttpFetcher
from edge.errors import TrustUnavailable, UpdateError
from edge.targets import InstalledModel, Offer, SignedTarget, decode_files, encode_files

log = logging.getLogger("edge.trust")

# Starting the interpreter and importing python-tuf, on a slow device, before any fetch.
GRACE_SECONDS = 60.0
# What a refresh may download: root, timestamp, snapshot, the top-level and model roles.
REFRESH_BYTES = 1024 * 1024
# The fetches a refresh makes (the root probe, timestamp, snapshot, top-level and model
# roles, a few root rotations), twice: a refused nudge is refreshed again from the CDN.
REFRESH_FETCHES = 16


@dataclass(frozen=True)
class ChildSettings:
    """What the child needs to build the same SignedRepository the agent would."""

    base_url: str
    timeout: float
    retries: int
    user_agent: str
    min_bytes_per_second: float
    root: str
    state_dir: str
    staging: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ChildRepository:
    """The fleet's repository, verified in a child process started when asked."""

    def __init__(
        self,
        http: HttpFetcher,
        root: Path,
        state_dir: Path,
        *,
        staging: Path,
        command: tuple[str, ...] = python_module("edge.trust_child"),
        grace: float = GRACE_SECONDS,
    ) -> None:
        self._http = http
        self._settings = ChildSettings(
            http.base_url,
            http.timeout,
            http.retries,
            http.user_agent,
            http.min_bytes_per_second,
            str(root),
            str(state_dir),
            str(staging),
        )
        self._command = command
        self._grace = grace
        self._child: subprocess.Popen[bytes] | None = None
        self._buffer = bytearray()
        self._child_bytes = 0
        self.bytes_received = 0
        self._lock = threading.Lock()

    # --- the repository ------------------------------------------------------------------

    def refresh(
        self,
        model: str,
        thing: str,
        installed: InstalledModel | None,
        carried: Mapping[str, bytes] | None = None,
    ) -> Offer:
        request = {
            "op": "refresh",
            "model": model,
            "thing": thing,
            "installed": None if installed is None else [installed.version, installed.sha256],
            "carried": encode_files(carried or {}),
        }
        http = self._http
        budget = REFRESH_FETCHES * http.timeout + REFRESH_BYTES / http.min_bytes_per_second
        answer, _ = self._ask(request, b"", budget)
        return Offer.from_json(answer["offer"])

    def download(self, target: SignedTarget, keep: bool = False) -> bytes:
        request = {"op": "download", "path": target.path, "keep": keep}
        # Twice one fetch's deadline: a carried copy refused is fetched again from the CDN.
        _, data = self._ask(request, b"", 2 * self._http.deadline(target.length))
        return data

    def vouches_for(self, model: str, version: int, data: bytes) -> bool | None:
        request = {"op": "vouches_for", "model": model, "version": version, "length": len(data)}
        try:
            answer, _ = self._ask(request, data, self._http.timeout)
        except UpdateError as exc:
            # As when the kept metadata cannot be read: it vouches for nothing.
            log.error("event=kept_metadata_unusable model=%s reason=%r", model, exc.reason[:200])
            return False
        vouched = answer["vouched"]
        return None if vouched is None else bool(vouched)

    def release(self) -> None:
        with self._lock:
            child, self._child = self._child, None
            self._buffer.clear()
            if child is None:
                return
            assert child.stdin is not None
            try:
                child.stdin.close()  # end of requests: the child exits
                child.wait(timeout=self._grace)
            except (OSError, subprocess.TimeoutExpired):
                child.kill()
                child.wait()
            _close_pipes(child)

    # --- the pipe ------------------------------------------------------------------------

    def abort(self) -> None:
        """End the child now, from any thread: the agent is stopping. A request under way
        fails as a child that died does (retryable), and nothing outlives the agent."""
        child = self._child
        if child is not None:
            with contextlib.suppress(OSError):
                child.kill()

    def _ask(
        self, request: dict[str, Any], body: bytes, seconds: float
    ) -> tuple[dict[str, Any], bytes]:
        with self._lock:
            deadline = time.monotonic() + seconds + self._grace
            try:
                child = self._started(deadline)
                assert child.stdout is not None
                self._send(child, json.dumps(request).encode() + b"\n", deadline)
                self._send(child, body, deadline)
                answer = json.loads(self._read_line(child.stdout, deadline))
                data = self._read_exact(child.stdout, int(answer.get("length", 0)), deadline)
            except (OSError, ValueError, _NoAnswer) as exc:
                self._end_locked()
                raise TrustUnavailable(
                    f"the verifying process failed: {exc}; the update is tried again later"
                ) from exc
            total = int(answer.get("bytes_received", self._child_bytes))
            self.bytes_received += total - self._child_bytes
            self._child_bytes = total
        for level, name, message in answer.get("logs", ()):
            logging.getLogger(name).log(level, "%s", message)
        if not answer.get("ok"):
            raise _error(answer)
        return answer, data

    def _started(self, deadline: float) -> subprocess.Popen[bytes]:
        if self._child is not None:
            if self._child.poll() is None:
                return self._child
            self._end_locked()  # exited between requests: its pipes go with it
        # Unbuffered pipes, both ways read and written under the deadline.
        child = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=child_environment(),
        )
        self._child = child
        self._buffer.clear()
        self._child_bytes = 0
        self._send(child, json.dumps(self._settings.to_json()).encode() + b"\n", deadline)
        return child

    def _send(self, child: subprocess.Popen[bytes], data: bytes, deadline: float) -> None:
        """All of `data` to the child, or _NoAnswer once the deadline passes: a child that
        stopped reading (a model's bytes fill the pipe) must not hold the agent."""
        assert child.stdin is not None
        fd = child.stdin.fileno()
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise _NoAnswer("it took no request within its deadline; it was stopped")
            # At most PIPE_BUF: a pipe select calls writable takes that much without blocking.
            view = view[os.write(fd, view[: select.PIPE_BUF]) :]

    def _end_locked(self) -> None:
        child, self._child = self._child, None
        self._buffer.clear()
        if child is not None:
            child.kill()
            child.wait()
            _close_pipes(child)

    def _fill(self, stream: IO[bytes], deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            raise _NoAnswer("no answer within its deadline; it was stopped")
        chunk = os.read(stream.fileno(), 64 * 1024)
        if not chunk:
            code: int | None = None
            if self._child is not None:
                # Its output closed: it is exiting, if it has not yet.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self._child.wait(timeout=self._grace)
            raise _NoAnswer(f"it exited ({code}) before answering")
        self._buffer += chunk  # a bytearray grows in place: a model is not copied per chunk

    def _read_line(self, stream: IO[bytes], deadline: float) -> bytes:
        while (end := self._buffer.find(b"\n")) < 0:
            self._fill(stream, deadline)
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line

    def _read_exact(self, stream: IO[bytes], n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            self._fill(stream, deadline)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data


class _NoAnswer(Exception):
    pass


def _close_pipes(child: subprocess.Popen[bytes]) -> None:
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                continue  # a broken pipe's buffer could not be flushed: nothing to keep


def _error(answer: Mapping[str, Any]) -> Exception:
    """The child's refusal as the same error type, with the same reason."""
    message = str(answer.get("message", "the verifying process refused"))
    if answer.get("error") == "OSError":
        return OSError(message)  # the disk: the updater says "cannot stage"
    kind = getattr(errors, str(answer.get("error")), None)
    if not (isinstance(kind, type) and issubclass(kind, UpdateError)) or kind is errors.NotOnCdn:
        kind = TrustUnavailable
    cause_name = answer.get("cause")
    # The reason names what refused (UnsignedMetadataError, ...) as it does in-process.
    cause = type(str(cause_name), (Exception,), {})(message) if cause_name else None
    return kind(message, cause)


# --- the child ---------------------------------------------------------------------------


class _Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelno, record.name, record.getMessage()))

    def take(self) -> list[tuple[int, str, str]]:
        records, self.records = self.records, []
        return records


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    # securesystemslib imports the SDK of every cloud signer it finds; this only verifies.
    for sdk in ("boto3", "botocore"):
        sys.modules.setdefault(sdk, None)  # type: ignore[arg-type]
    from edge.trust import SignedRepository, TrustLimits

    _leave_with_parent()
    settings = json.loads(stdin.readline())
    collected = _Collected()
    edge_log = logging.getLogger("edge")
    edge_log.handlers[:] = [collected]
    # Every record goes back: the agent's loggers decide what is written, as in-process.
    edge_log.setLevel(logging.DEBUG)
    edge_log.propagate = False
    http = HttpFetcher(
        settings["base_url"],
        float(settings["timeout"]),
        int(settings["retries"]),
        user_agent=str(settings["user_agent"]),
        min_bytes_per_second=float(settings["min_bytes_per_second"]),
    )
    repository = SignedRepository(
        http,
        Path(settings["root"]).read_bytes(),
        Path(settings["state_dir"]),
        limits=TrustLimits(min_refresh_seconds=0.0),
        staging=Path(settings["staging"]),
    )
    offered: dict[str, Any] = {}
    while line := stdin.readline():
        request = json.loads(line)
        answer: dict[str, Any] = {"ok": True}
        data = b""
        try:
            op = request["op"]
            if op == "refresh":
                installed = request["installed"]
                offer = repository.refresh(
                    request["model"],
                    request["thing"],
                    None if installed is None else InstalledModel(*installed),
                    decode_files(request["carried"]),
                )
                offered = _targets_of(offer)
                answer["offer"] = offer.to_json()
            elif op == "download":
                if not offered:
                    # A child started after the refresh (the last one died): the update
                    # is tried again, with a refresh, not refused.
                    raise errors.TrustUnavailable(
                        "this verifying process has not refreshed yet; the update is tried "
                        "again later"
                    )
                target = offered.get(request["path"])
                if target is None:
                    raise errors.TrustRefused(
                        f"{request['path']} is not a target the last refresh offered"
                    )
                data = repository.download(target, keep=bool(request["keep"]))
            elif op == "vouches_for":
                model_bytes = stdin.read(int(request["length"]))
                answer["vouched"] = repository.vouches_for(
                    request["model"], int(request["version"]), model_bytes
                )
            else:
                raise ValueError(f"unknown request {op!r}")
        except UpdateError as exc:
            answer = {
                "ok": False,
                "error": type(exc).__name__,
                "message": str(exc),
                "cause": None if exc.cause is None else type(exc.cause).__name__,
            }
        except OSError as exc:
            answer = {"ok": False, "error": "OSError", "message": str(exc)}
        except Exception as exc:  # reported, not fatal: the agent retries later
            answer = {"ok": False, "error": "TrustUnavailable", "message": repr(exc)[:500]}
        answer["length"] = len(data)
        answer["bytes_received"] = repository.bytes_received
        answer["logs"] = collected.take()
        try:
            stdout.write(json.dumps(answer).encode() + b"\n" + data)
            stdout.flush()
        except BrokenPipeError:
            return 0  # the agent stopped while this worked: nobody to answer
    return 0


def _leave_with_parent(every: float = 1.0) -> None:
    """Exit once the agent that started this process is gone (killed, say, mid-download):
    a child must not go on fetching into the staging directory a restarted agent uses."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _targets_of(offer: Offer) -> dict[str, Any]:
    """The offer's targets by path: a download names one, and only these are fetched."""
    named = [offer.model, offer.golden, offer.spec, *offer.compressed.values()]
    if offer.patch is not None:
        named.append(offer.patch[0])
    return {target.path: target for target in named if target is not None}


if __name__ == "__main__":
    raise SystemExit(serve(sys.stdin.buffer, sys.stdout.buffer))
