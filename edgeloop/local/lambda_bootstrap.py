"""The runtime side of a local Lambda container: run as a script, never imported by the host.

Started as `python -I -S lambda_bootstrap.py TASK_ROOT HANDLER FD`: no site-packages,
no user site, no environment-driven path, so the only code it can import is the
standard library and the task tree, as in the functions image (`/var/task`). It
imports the handler once (the cold start), then answers invocations: one JSON
line per event on stdin, one JSON line per answer on file descriptor FD (stdout
and stderr are the function's log, as CloudWatch Logs takes them in Lambda).

Lambda's file system is read-only except `/tmp`; an audit hook refuses any write
outside TMPDIR with the error a read-only file system gives, so code that would
write beside itself fails here as it would there. This file uses the standard
library only.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import sys
import time
import traceback
import uuid
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
WRITABLE = ("/dev/",)


def _writable(path: object, tmp: str) -> bool:
    if isinstance(path, int):  # an already-open descriptor
        return True
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    full = os.path.abspath(text)
    return full == tmp or full.startswith(tmp + os.sep) or full.startswith(WRITABLE)


def _read_only_outside(tmp: str) -> None:
    def refuse(path: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(str(path)))

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS
            )
            if writing and path is not None and not _writable(path, tmp):
                refuse(path)
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.chmod"):
            if not _writable(args[0], tmp):
                refuse(args[0])
        elif event in ("os.rename", "os.link", "os.symlink") and not _writable(args[1], tmp):
            refuse(args[1])

    sys.addaudithook(hook)


class Context:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self.function_name: str = fields["function_name"]
        self.function_version = "$LATEST"
        self.memory_limit_in_mb: int = fields["memory_limit_in_mb"]
        self.invoked_function_arn: str = fields["invoked_function_arn"]
        self.aws_request_id: str = fields.get("aws_request_id") or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + fields["timeout"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    task_root, handler_name, answer_fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, task_root)
    _read_only_outside(os.path.abspath(os.environ["TMPDIR"]))
    answers = os.fdopen(answer_fd, "w", buffering=1)
    module_name, function_name = handler_name.rsplit(".", 1)
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:  # Lambda's Runtime.ImportModuleError: every call fails alike
        failure = _failure(exc, "Runtime.ImportModuleError")
        answers.write(json.dumps({"init_error": failure}) + "\n")
        return
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = handler(request["event"], Context(request["context"]))
            answer = {"result": result}
        except Exception as exc:
            answer = {"error": _failure(exc, type(exc).__name__)}
        sys.stdout.flush()
        sys.stderr.flush()
        answers.write(json.dumps(answer, default=str) + "\n")


def _failure(exc: BaseException, kind: str) -> dict[str, Any]:
    traceback.print_exception(exc)
    return {
        "errorType": kind,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(exc),
    }


if __name__ == "__main__":
    main()
