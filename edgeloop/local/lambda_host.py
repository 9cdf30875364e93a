"""Local Lambda: each function runs from the packaged task tree, in its own interpreter.

A `PackagedFunction` is what Lambda gives a function, on one machine:
- a separate interpreter (`python -I -S`) whose only code is the standard library
  and the task tree that `make lambda-task-local` builds from the functions' lock,
  never the development virtualenv;
- the environment the synthesized template gives that function, its references
  resolved to the local resources, plus what Lambda's runtime adds (region,
  function name, memory, task root, `_HANDLER`) and the image's own `ENV`;
- its role's credentials (an IAM user holding the role's statements, enforced by
  moto's IAM mode), and no HOME;
- a file system that is read-only except its own TMPDIR;
- warm containers reused between calls, a new one (a cold start) when all are
  busy, up to a concurrency limit; the template's timeout, after which the
  container is killed and the call fails as "Task timed out".

What differs from Lambda, and why, is in docs/DESIGN.md ("What ships is what is
tested"): the interpreter and ABI tags are this machine's, the base image's
system libraries are the host's, and the endpoints point at the local stand-ins.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgeloop.local.stack_template import ACCOUNT, FunctionSpec

log = logging.getLogger(__name__)

BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
TASK_ROOT_IN_IMAGE = "/var/task"


class FunctionError(Exception):
    """The function raised, as Lambda reports it: the error type and message."""

    def __init__(self, function: str, failure: Mapping[str, Any]) -> None:
        self.error_type = str(failure.get("errorType", "Unknown"))
        self.error_message = str(failure.get("errorMessage", ""))
        super().__init__(f"{function}: {self.error_type}: {self.error_message}")


class FunctionTimeout(FunctionError):
    def __init__(self, function: str, seconds: float) -> None:
        super().__init__(
            function,
            {"errorType": "Task.TimedOut", "errorMessage": f"Task timed out after {seconds} s"},
        )


def image_environment(dockerfile: Path, task_root: Path) -> dict[str, str]:
    """The `ENV` lines of the functions image, with /var/task as the local task tree."""
    env: dict[str, str] = {}
    for line in dockerfile.read_text().splitlines():
        if line.startswith("ENV "):
            key, _, value = line[4:].strip().partition("=")
            env[key] = value.replace(TASK_ROOT_IN_IMAGE, str(task_root))
    return env


@dataclass
class _Container:
    process: subprocess.Popen[bytes]
    answers: IO[str]
    tmp: Path


class PackagedFunction:
    """Call it like the handler: `function(event, context=None) -> result`."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        task_root: Path,
        workdir: Path,
        region: str,
        credentials: Mapping[str, str],
        extra_env: Mapping[str, str] | None = None,
        image_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        max_concurrency: int = 4,
        function_name: str | None = None,
    ) -> None:
        self.spec = spec
        self.name = function_name or spec.name
        self.task_root = task_root
        self.workdir = workdir
        self.python = python
        self.max_concurrency = max_concurrency
        self.log_path = workdir / "logs" / f"{spec.name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.environment = {
            # What Lambda's runtime sets.
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "LAMBDA_TASK_ROOT": str(task_root),
            "_HANDLER": spec.handler,
            "TZ": ":UTC",
            "LANG": "en_US.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            **(image_env or {}),
            **spec.environment,
            **credentials,
            **(extra_env or {}),
        }
        self.cold_starts = 0
        self._idle: list[_Container] = []
        self._running = 0
        self._lock = threading.Condition()
        self._closed = False

    def __call__(self, event: Mapping[str, Any], context: Any = None) -> Any:
        container = self._acquire()
        try:
            answer = self._invoke(container, event)
        except BaseException:
            self._discard(container)
            raise
        self._release(container)
        if "error" in answer:
            raise FunctionError(self.name, answer["error"])
        return answer["result"]

    def _invoke(self, container: _Container, event: Mapping[str, Any]) -> dict[str, Any]:
        request = {
            "event": event,
            "context": {
                "function_name": self.name,
                "memory_limit_in_mb": self.spec.memory,
                "invoked_function_arn": (
                    f"arn:aws:lambda:{self.environment['AWS_REGION']}:{ACCOUNT}"
                    f":function:{self.name}"
                ),
                "aws_request_id": str(uuid.uuid4()),
                "timeout": self.spec.timeout,
            },
        }
        assert container.process.stdin is not None
        container.process.stdin.write((json.dumps(request) + "\n").encode())
        container.process.stdin.flush()
        return self._answer(container, float(self.spec.timeout))

    def _answer(self, container: _Container, timeout: float) -> dict[str, Any]:
        """The container's next answer, or a timeout after which it is killed."""
        box: list[str] = []
        reader = threading.Thread(
            target=lambda: box.append(container.answers.readline()), daemon=True
        )
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            container.process.kill()
            raise FunctionTimeout(self.name, timeout)
        if not box or not box[0]:
            code = container.process.wait()
            raise FunctionError(
                self.name,
                {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"the container exited with {code}; see {self.log_path}",
                },
            )
        answer: dict[str, Any] = json.loads(box[0])
        return answer

    def _acquire(self) -> _Container:
        with self._lock:
            while True:
                if self._closed:
                    raise FunctionError(
                        self.name, {"errorType": "Closed", "errorMessage": "the host stopped"}
                    )
                if self._idle:
                    self._running += 1
                    return self._idle.pop()
                if self._running < self.max_concurrency:
                    self._running += 1
                    break
                self._lock.wait()
        try:
            return self._start()
        except BaseException:
            with self._lock:
                self._running -= 1
                self._lock.notify()
            raise

    def _release(self, container: _Container) -> None:
        with self._lock:
            self._running -= 1
            if self._closed:
                self._stop(container)
            else:
                self._idle.append(container)
            self._lock.notify()

    def _discard(self, container: _Container) -> None:
        self._stop(container)
        with self._lock:
            self._running -= 1
            self._lock.notify()

    def _start(self) -> _Container:
        """A cold start: a fresh interpreter that imports the handler from the task tree."""
        tmp = self.workdir / "tmp" / f"{self.spec.name}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir(parents=True)
        read_fd, write_fd = os.pipe()
        with open(self.log_path, "ab") as log_file:
            process = subprocess.Popen(
                [
                    self.python,
                    "-I",
                    "-S",
                    str(BOOTSTRAP),
                    str(self.task_root),
                    self.spec.handler,
                    str(write_fd),
                ],
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**self.environment, "TMPDIR": str(tmp)},
                cwd=str(self.task_root),
                pass_fds=(write_fd,),
            )
        os.close(write_fd)
        container = _Container(process, os.fdopen(read_fd, "r"), tmp)
        # Importing scikit-learn on a loaded machine takes a while; a cold start gets
        # the function's timeout plus Lambda's 10 s init phase.
        ready = self._answer(container, float(self.spec.timeout) + 10.0)
        if "init_error" in ready:
            self._stop(container)
            raise FunctionError(self.name, ready["init_error"])
        self.cold_starts += 1
        return container

    def _stop(self, container: _Container) -> None:
        if container.process.poll() is None:
            assert container.process.stdin is not None
            container.process.stdin.close()
            try:
                container.process.wait(5)
            except subprocess.TimeoutExpired:
                container.process.kill()
                container.process.wait()
        container.answers.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._lock.notify_all()
        for container in idle:
            self._stop(container)
