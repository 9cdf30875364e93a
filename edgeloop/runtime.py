"""The TFLite interpreter on the device.

LiteRT (`ai_edge_litert`) is preferred: it is maintained and works with NumPy 2.
`tflite_runtime` 2.14 is the fallback for images that still pin NumPy < 2;
it is the last release and will not load under NumPy 2.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
import numpy.typing as npt

_BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")

# LiteRT's C++ code writes "INFO: Created TensorFlow Lite XNNPACK delegate for
# CPU." to file descriptor 2 when a process makes its first interpreter
# (TF_CPP_MIN_LOG_LEVEL does not reach it). It says nothing a user can act on,
# and in an agent's journal or a CLI's output it reads like a problem, so the
# first interpreter of a process is made with descriptor 2 filtered.
_CHATTER = re.compile(rb"^INFO: (Created TensorFlow Lite|Initialized TensorFlow Lite)")
_first = threading.Lock()
_quiet_done = False


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


def _first_interpreter() -> AbstractContextManager[None]:
    """The chatter filter for this process's first interpreter, and nothing after it."""
    global _quiet_done
    with _first:
        if _quiet_done:
            return nullcontext()
        _quiet_done = True
    return filtered_native_stderr()


class RuntimeUnavailable(RuntimeError):
    """No TFLite interpreter could be imported."""


class ModelLoadError(ValueError):
    """The bytes are not a model this interpreter can run."""


def _interpreter_class() -> tuple[str, Any]:
    errors = []
    for name in _BACKENDS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        return name.split(".")[0], module.Interpreter
    raise RuntimeUnavailable(
        "no TFLite interpreter found ("
        + "; ".join(errors)
        + "). Install ai-edge-litert, or tflite-runtime==2.14.0 with numpy<2 on Python <= 3.11"
    )


class CompiledModel:
    """One interpreter over one model. Not thread-safe: give each thread its own."""

    def __init__(self, model: bytes, num_threads: int = 1, inspect: bool = False) -> None:
        """`inspect` keeps every intermediate tensor readable after `predict` (see
        `tensor`), at the cost of the interpreter's memory reuse: for checks, not devices."""
        self.backend, interpreter_class = _interpreter_class()
        # The interpreter keeps a pointer into the buffer, so hold a reference.
        self._model = bytes(model)
        extra = {"experimental_preserve_all_tensors": True} if inspect else {}
        try:
            with _first_interpreter(), warnings.catch_warnings():
                # LiteRT warns that keeping every tensor costs memory: `inspect` asks for that.
                warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
                self._interpreter = interpreter_class(
                    model_content=self._model, num_threads=num_threads, **extra
                )
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"model does not load in {self.backend}: {exc}") from exc
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"edgeloop models have one input and one output, this one has "
                f"{len(inputs)} and {len(outputs)}"
            )
        self._input = inputs[0]
        self._output = outputs[0]
        self._in = int(self._input["index"])
        self._out = int(self._output["index"])
        # get_tensor already returns a copy: only an output of another type needs one more.
        self._out_is_float32 = self._output["dtype"] == np.float32
        self._batch = int(self._input["shape"][0])
        self.n_features = int(self._input["shape"][-1])

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Run a batch (rows of raw features) and return the model's output rows."""
        try:
            # A device scores rows of float32 in the shape already allocated, sample
            # after sample; the interpreter checks type and shape itself, so that case
            # costs no more than the interpreter's own calls (`make bench`, inference).
            self._interpreter.set_tensor(self._in, x)
        except (ValueError, TypeError):
            self._set_checked(x)
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._out)
        if self._out_is_float32:
            return out  # type: ignore[no-any-return]
        converted: npt.NDArray[np.float32] = np.array(out, dtype=np.float32)
        return converted

    def tensor(self, name: str) -> npt.NDArray[np.float32]:
        """The named tensor's value from the last `predict` (a model made with `inspect`)."""
        for detail in self._interpreter.get_tensor_details():
            if detail["name"] == name:
                return np.array(self._interpreter.get_tensor(detail["index"]), dtype=np.float32)
        raise KeyError(f"the model has no tensor named {name!r}")

    def _set_checked(self, x: npt.ArrayLike) -> None:
        """Any other input: converted to rows of float32, refused with a clear error if it
        cannot be, the tensors resized if the batch has another size."""
        batch = np.ascontiguousarray(x, dtype=np.float32)
        if batch.ndim == 1:
            batch = batch[None, :]
        if batch.ndim != 2 or batch.shape[1] != self.n_features:
            raise ValueError(
                f"input has shape {batch.shape}; "
                f"this model takes rows of {self.n_features} features"
            )
        if batch.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._in, list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self._interpreter.set_tensor(self._in, batch)
