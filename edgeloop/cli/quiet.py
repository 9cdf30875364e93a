"""Keeping the interpreter's start-up chatter out of the user's way.

LiteRT's C++ code writes "INFO: Created TensorFlow Lite XNNPACK delegate for
CPU." to file descriptor 2 when the first interpreter of a process is made
(once per process; TF_CPP_MIN_LOG_LEVEL does not reach it). The command line
makes that first interpreter itself, on a one-op model, with descriptor 2
pointed at a temporary file; anything else written there meanwhile is passed
on, so real errors still show.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

_CHATTER = re.compile(rb"^INFO: (Created TensorFlow Lite|Initialized TensorFlow Lite)")
_done = False


@contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Capture what C/C++ code writes to fd 2 in the block; replay all but the chatter."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().splitlines(keepends=True)
                if not _CHATTER.match(line)
            ]
            if kept:
                sys.stderr.buffer.write(b"".join(kept))
                sys.stderr.flush()


def _one_op_model() -> bytes:
    from edgeloop.factory.tflite_writer import Graph

    graph = Graph("warm-up")
    x = graph.input("x", 1)
    c = graph.constant("c", [1.0])
    y = graph.activation("y", (1, 1))
    graph.mul(x, c, y)
    return graph.serialize([x], [y], "edgeloop CLI warm-up")


def quiet_interpreter() -> None:
    """Make this process's first interpreter now, with its INFO line swallowed."""
    global _done
    if _done:
        return
    _done = True
    try:
        model = _one_op_model()
        from edgeloop.runtime import CompiledModel

        with filtered_native_stderr():
            CompiledModel(model)
    except (ImportError, RuntimeError, ValueError):
        # No interpreter (or no factory) here: the command that needs one says so itself.
        return
