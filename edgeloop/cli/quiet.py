"""Making the interpreter's start-up chatter happen before a command prints anything.

edgeloop.runtime filters LiteRT's INFO line from a process's first interpreter.
The command line makes that first interpreter itself, on a one-op model, so
the filter is over before any command output starts and never holds back a
line the user is waiting for.
"""

from __future__ import annotations

_done = False


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

        CompiledModel(model)  # the first interpreter: edgeloop.runtime filters its chatter
    except (ImportError, RuntimeError, ValueError):
        # No interpreter (or no factory) here: the command that needs one says so itself.
        return
