"""How the command line fails: one line for people, one JSON object for programs."""

from __future__ import annotations

import json
import sys
from typing import Any

# Exit codes shared by every command (train keeps 3 for a run the gate refused).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A command that cannot go on; `message` says what to do, `code` is for programs."""

    def __init__(self, message: str, code: str = "usage", exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code


def report(error: CliError, as_json: bool) -> int:
    """Print the error the way the command prints everything else, and return its exit code."""
    if as_json:
        print(json.dumps({"error": error.message, "code": error.code}, sort_keys=True))
    else:
        print(f"error: {error.message}", file=sys.stderr)
    return error.exit_code


def emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, sort_keys=True))
