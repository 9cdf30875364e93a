"""A TensorFlow Lite flatbuffer written straight from the schema, without TensorFlow.

TensorFlow is 1.3 GB and has no place in a Lambda. The graphs edgeloop ships
are a handful of ops (FULLY_CONNECTED, SOFTMAX, MUL, ADD, SQUARED_DIFFERENCE,
SUM, REDUCE_MIN, SQRT, DEQUANTIZE; signal features add SUB, DIV, MAXIMUM,
ABS, REDUCE_MAX, LESS, CAST, RESHAPE, TRANSPOSE, SLICE, CONCATENATION and
GATHER), so they are written directly with the `flatbuffers` runtime and the
schema's generated code (the `tflite` package).

Op versions are the lowest that describe each op's inputs, so the models load
in tflite-runtime 2.14 as well as in current LiteRT. The same graph always
gives the same bytes: nothing time- or host-dependent is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
import numpy.typing as npt
import tflite as fb
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType

SCHEMA_VERSION = 3
# Builtin codes above 127 do not fit the deprecated int8 field, which then holds this.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
_DTYPES = {
    np.dtype(np.float32): TensorType.FLOAT32,
    np.dtype(np.bool_): TensorType.BOOL,
    np.dtype(np.int32): TensorType.INT32,
    np.dtype(np.int8): TensorType.INT8,
}

OptionsWriter = Callable[[flatbuffers.Builder], int]


@dataclass(frozen=True)
class Quantization:
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    axis: int = 0


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: int
    buffer: int
    signature: tuple[int, ...] | None
    quantization: Quantization | None


@dataclass(frozen=True)
class _Op:
    opcode: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options_type: int
    options: OptionsWriter | None


class Graph:
    """One subgraph under construction. Tensors are referred to by index."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tensors: list[_Tensor] = []
        self._buffers: list[bytes] = [b""]  # buffer 0 is the schema's empty sentinel
        self._ops: list[_Op] = []
        self._opcodes: list[tuple[int, int]] = []

    # --- tensors ---------------------------------------------------------------------

    def _tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: int,
        data: bytes | None = None,
        batch_axis: int | None = None,
        quantization: Quantization | None = None,
    ) -> int:
        buffer = 0
        if data is not None:
            self._buffers.append(data)
            buffer = len(self._buffers) - 1
        signature = None
        if batch_axis is not None:
            signature = tuple(-1 if i == batch_axis else d for i, d in enumerate(shape))
        self._tensors.append(_Tensor(name, tuple(shape), dtype, buffer, signature, quantization))
        return len(self._tensors) - 1

    def input(self, name: str, n_features: int) -> int:
        return self._tensor(name, (1, n_features), TensorType.FLOAT32, batch_axis=0)

    def activation(self, name: str, shape: Sequence[int], batch_axis: int | None = 0) -> int:
        """A float32 tensor computed at run time; `batch_axis` resizes with the input."""
        return self._tensor(name, shape, TensorType.FLOAT32, batch_axis=batch_axis)

    def boolean(self, name: str, shape: Sequence[int], batch_axis: int | None = 0) -> int:
        """A bool tensor computed at run time (a comparison's output)."""
        return self._tensor(name, shape, TensorType.BOOL, batch_axis=batch_axis)

    def constant(self, name: str, array: npt.ArrayLike) -> int:
        arr = np.ascontiguousarray(array)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        elif arr.dtype == np.int64:
            arr = arr.astype(np.int32)
        dtype = _DTYPES.get(arr.dtype)
        if dtype is None or dtype == TensorType.INT8:
            raise TypeError(f"constant {name}: dtype {arr.dtype} is not float32 or int32")
        return self._tensor(
            name, arr.shape, dtype, data=arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        )

    def quantized_constant(
        self, name: str, values: npt.NDArray[np.int8], quant: Quantization
    ) -> int:
        arr = np.ascontiguousarray(values, dtype=np.int8)
        return self._tensor(
            name, arr.shape, TensorType.INT8, data=arr.tobytes(), quantization=quant
        )

    def quantizations(self) -> dict[str, Quantization]:
        return {t.name: t.quantization for t in self._tensors if t.quantization is not None}

    # --- ops -------------------------------------------------------------------------

    def _opcode(self, code: int, version: int) -> int:
        key = (code, version)
        if key not in self._opcodes:
            self._opcodes.append(key)
        return self._opcodes.index(key)

    def op(
        self,
        code: int,
        inputs: Sequence[int],
        outputs: Sequence[int],
        *,
        version: int = 1,
        options_type: int = BuiltinOptions.NONE,
        options: OptionsWriter | None = None,
    ) -> None:
        self._ops.append(
            _Op(self._opcode(code, version), tuple(inputs), tuple(outputs), options_type, options)
        )

    def fully_connected(
        self, x: int, weights: int, bias: int, out: int, relu: bool = False
    ) -> None:
        act = ActivationFunctionType.RELU if relu else ActivationFunctionType.NONE

        def options(b: flatbuffers.Builder) -> int:
            fb.FullyConnectedOptionsStart(b)
            fb.FullyConnectedOptionsAddFusedActivationFunction(b, act)
            return int(fb.FullyConnectedOptionsEnd(b))

        self.op(
            BuiltinOperator.FULLY_CONNECTED,
            (x, weights, bias),
            (out,),
            options_type=BuiltinOptions.FullyConnectedOptions,
            options=options,
        )

    def softmax(self, x: int, out: int) -> None:
        def options(b: flatbuffers.Builder) -> int:
            fb.SoftmaxOptionsStart(b)
            fb.SoftmaxOptionsAddBeta(b, 1.0)
            return int(fb.SoftmaxOptionsEnd(b))

        self.op(
            BuiltinOperator.SOFTMAX,
            (x,),
            (out,),
            options_type=BuiltinOptions.SoftmaxOptions,
            options=options,
        )

    def _elementwise(self, code: int, options_table: str, a: int, c: int, out: int) -> None:
        """A broadcasting binary op whose options table has only defaults."""
        table_start = getattr(fb, f"{options_table}Start")
        table_end = getattr(fb, f"{options_table}End")

        def options(b: flatbuffers.Builder) -> int:
            table_start(b)
            return int(table_end(b))

        self.op(
            code,
            (a, c),
            (out,),
            options_type=getattr(BuiltinOptions, options_table),
            options=options,
        )

    def mul(self, a: int, c: int, out: int) -> None:
        self._elementwise(BuiltinOperator.MUL, "MulOptions", a, c, out)

    def add(self, a: int, c: int, out: int) -> None:
        self._elementwise(BuiltinOperator.ADD, "AddOptions", a, c, out)

    def squared_difference(self, a: int, c: int, out: int) -> None:
        self._elementwise(BuiltinOperator.SQUARED_DIFFERENCE, "SquaredDifferenceOptions", a, c, out)

    def sub(self, a: int, c: int, out: int) -> None:
        self._elementwise(BuiltinOperator.SUB, "SubOptions", a, c, out)

    def div(self, a: int, c: int, out: int) -> None:
        self._elementwise(BuiltinOperator.DIV, "DivOptions", a, c, out)

    def maximum(self, a: int, c: int, out: int) -> None:
        self._elementwise(BuiltinOperator.MAXIMUM, "MaximumMinimumOptions", a, c, out)

    def less(self, a: int, c: int, out: int) -> None:
        self._elementwise(BuiltinOperator.LESS, "LessOptions", a, c, out)

    def abs(self, x: int, out: int) -> None:
        self.op(BuiltinOperator.ABS, (x,), (out,))

    def cast(self, x: int, out: int) -> None:
        def options(b: flatbuffers.Builder) -> int:
            fb.CastOptionsStart(b)
            fb.CastOptionsAddInDataType(b, self._tensors[x].dtype)
            fb.CastOptionsAddOutDataType(b, self._tensors[out].dtype)
            return int(fb.CastOptionsEnd(b))

        self.op(
            BuiltinOperator.CAST,
            (x,),
            (out,),
            options_type=BuiltinOptions.CastOptions,
            options=options,
        )

    def reshape(self, x: int, shape: Sequence[int], out: int) -> None:
        """`shape` may hold one -1 (the batch), worked out by the interpreter."""
        target = self.constant(f"{self._tensors[out].name}/shape", np.array(shape, np.int32))

        def options(b: flatbuffers.Builder) -> int:
            fb.ReshapeOptionsStart(b)
            return int(fb.ReshapeOptionsEnd(b))

        self.op(
            BuiltinOperator.RESHAPE,
            (x, target),
            (out,),
            options_type=BuiltinOptions.ReshapeOptions,
            options=options,
        )

    def transpose(self, x: int, perm: Sequence[int], out: int) -> None:
        order = self.constant(f"{self._tensors[out].name}/perm", np.array(perm, np.int32))

        def options(b: flatbuffers.Builder) -> int:
            fb.TransposeOptionsStart(b)
            return int(fb.TransposeOptionsEnd(b))

        self.op(
            BuiltinOperator.TRANSPOSE,
            (x, order),
            (out,),
            options_type=BuiltinOptions.TransposeOptions,
            options=options,
        )

    def slice(self, x: int, begin: Sequence[int], size: Sequence[int], out: int) -> None:
        """`size` -1 takes the rest of that axis (the batch)."""
        name = self._tensors[out].name
        starts = self.constant(f"{name}/begin", np.array(begin, np.int32))
        sizes = self.constant(f"{name}/size", np.array(size, np.int32))

        def options(b: flatbuffers.Builder) -> int:
            fb.SliceOptionsStart(b)
            return int(fb.SliceOptionsEnd(b))

        self.op(
            BuiltinOperator.SLICE,
            (x, starts, sizes),
            (out,),
            options_type=BuiltinOptions.SliceOptions,
            options=options,
        )

    def concatenation(self, xs: Sequence[int], axis: int, out: int) -> None:
        def options(b: flatbuffers.Builder) -> int:
            fb.ConcatenationOptionsStart(b)
            fb.ConcatenationOptionsAddAxis(b, axis)
            return int(fb.ConcatenationOptionsEnd(b))

        self.op(
            BuiltinOperator.CONCATENATION,
            tuple(xs),
            (out,),
            options_type=BuiltinOptions.ConcatenationOptions,
            options=options,
        )

    def gather(self, x: int, indices: Sequence[int], axis: int, out: int) -> None:
        picked = self.constant(f"{self._tensors[out].name}/indices", np.array(indices, np.int32))

        def options(b: flatbuffers.Builder) -> int:
            fb.GatherOptionsStart(b)
            fb.GatherOptionsAddAxis(b, axis)
            return int(fb.GatherOptionsEnd(b))

        self.op(
            BuiltinOperator.GATHER,
            (x, picked),
            (out,),
            options_type=BuiltinOptions.GatherOptions,
            options=options,
        )

    def _reduce(self, code: int, x: int, axis: int, out: int) -> None:
        axis_tensor = self.constant(f"{self._tensors[out].name}/axis", np.array([axis], np.int32))

        def options(b: flatbuffers.Builder) -> int:
            fb.ReducerOptionsStart(b)
            fb.ReducerOptionsAddKeepDims(b, False)
            return int(fb.ReducerOptionsEnd(b))

        self.op(
            code,
            (x, axis_tensor),
            (out,),
            options_type=BuiltinOptions.ReducerOptions,
            options=options,
        )

    def reduce_sum(self, x: int, axis: int, out: int) -> None:
        self._reduce(BuiltinOperator.SUM, x, axis, out)

    def reduce_min(self, x: int, axis: int, out: int) -> None:
        self._reduce(BuiltinOperator.REDUCE_MIN, x, axis, out)

    def reduce_max(self, x: int, axis: int, out: int) -> None:
        self._reduce(BuiltinOperator.REDUCE_MAX, x, axis, out)

    def sqrt(self, x: int, out: int) -> None:
        self.op(BuiltinOperator.SQRT, (x,), (out,))

    def dequantize(self, x: int, out: int) -> None:
        quant = self._tensors[x].quantization
        per_channel = quant is not None and len(quant.scales) > 1
        # DEQUANTIZE v2 is int8 per-tensor, v5 int8 per-channel (TFLite op_version.cc).
        self.op(BuiltinOperator.DEQUANTIZE, (x,), (out,), version=5 if per_channel else 2)

    # --- serialization ---------------------------------------------------------------

    def serialize(self, inputs: Sequence[int], outputs: Sequence[int], description: str) -> bytes:
        b = flatbuffers.Builder(1024 + sum(len(d) for d in self._buffers) * 2)
        buffers = [self._write_buffer(b, data) for data in self._buffers]
        tensors = [self._write_tensor(b, t) for t in self._tensors]
        operators = [self._write_op(b, op) for op in self._ops]
        subgraph_name = b.CreateString(self.name)
        tensors_vec = _offsets(b, tensors)
        inputs_vec = _int32s(b, inputs)
        outputs_vec = _int32s(b, outputs)
        ops_vec = _offsets(b, operators)
        fb.SubGraphStart(b)
        fb.SubGraphAddTensors(b, tensors_vec)
        fb.SubGraphAddInputs(b, inputs_vec)
        fb.SubGraphAddOutputs(b, outputs_vec)
        fb.SubGraphAddOperators(b, ops_vec)
        fb.SubGraphAddName(b, subgraph_name)
        subgraph = fb.SubGraphEnd(b)

        opcodes = []
        for code, version in self._opcodes:
            fb.OperatorCodeStart(b)
            fb.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES))
            fb.OperatorCodeAddBuiltinCode(b, code)
            fb.OperatorCodeAddVersion(b, version)
            opcodes.append(fb.OperatorCodeEnd(b))

        opcodes_vec = _offsets(b, opcodes)
        subgraphs_vec = _offsets(b, [subgraph])
        buffers_vec = _offsets(b, buffers)
        desc = b.CreateString(description)
        fb.ModelStart(b)
        fb.ModelAddVersion(b, SCHEMA_VERSION)
        fb.ModelAddOperatorCodes(b, opcodes_vec)
        fb.ModelAddSubgraphs(b, subgraphs_vec)
        fb.ModelAddDescription(b, desc)
        fb.ModelAddBuffers(b, buffers_vec)
        b.Finish(fb.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    @staticmethod
    def _write_buffer(b: flatbuffers.Builder, data: bytes) -> int:
        vec = None
        if data:
            # 16-byte alignment lets kernels read weights in place with SIMD loads.
            b.StartVector(1, len(data), 16)
            b.head = b.head - len(data)
            b.Bytes[b.head : b.head + len(data)] = data
            vec = b.EndVector()
        fb.BufferStart(b)
        if vec is not None:
            fb.BufferAddData(b, vec)
        return int(fb.BufferEnd(b))

    @staticmethod
    def _write_tensor(b: flatbuffers.Builder, t: _Tensor) -> int:
        name = b.CreateString(t.name)
        shape = _int32s(b, t.shape)
        signature = _int32s(b, t.signature) if t.signature is not None else None
        quant = None
        if t.quantization is not None:
            scales = _float32s(b, t.quantization.scales)
            zero_points = _int64s(b, t.quantization.zero_points)
            fb.QuantizationParametersStart(b)
            fb.QuantizationParametersAddScale(b, scales)
            fb.QuantizationParametersAddZeroPoint(b, zero_points)
            fb.QuantizationParametersAddQuantizedDimension(b, t.quantization.axis)
            quant = fb.QuantizationParametersEnd(b)
        fb.TensorStart(b)
        fb.TensorAddShape(b, shape)
        fb.TensorAddType(b, t.dtype)
        fb.TensorAddBuffer(b, t.buffer)
        fb.TensorAddName(b, name)
        if quant is not None:
            fb.TensorAddQuantization(b, quant)
        if signature is not None:
            fb.TensorAddShapeSignature(b, signature)
        return int(fb.TensorEnd(b))

    @staticmethod
    def _write_op(b: flatbuffers.Builder, op: _Op) -> int:
        inputs = _int32s(b, op.inputs)
        outputs = _int32s(b, op.outputs)
        options = op.options(b) if op.options is not None else None
        fb.OperatorStart(b)
        fb.OperatorAddOpcodeIndex(b, op.opcode)
        fb.OperatorAddInputs(b, inputs)
        fb.OperatorAddOutputs(b, outputs)
        if options is not None:
            fb.OperatorAddBuiltinOptionsType(b, op.options_type)
            fb.OperatorAddBuiltinOptions(b, options)
        return int(fb.OperatorEnd(b))


def _vector(
    b: flatbuffers.Builder, items: Sequence[Any], width: int, prepend: Callable[[Any], None]
) -> int:
    b.StartVector(width, len(items), width)
    for item in reversed(items):
        prepend(item)
    return int(b.EndVector())


def _offsets(b: flatbuffers.Builder, items: Sequence[int]) -> int:
    return _vector(b, items, 4, b.PrependUOffsetTRelative)


def _int32s(b: flatbuffers.Builder, items: Sequence[int]) -> int:
    return _vector(b, [int(i) for i in items], 4, b.PrependInt32)


def _int64s(b: flatbuffers.Builder, items: Sequence[int]) -> int:
    return _vector(b, [int(i) for i in items], 8, b.PrependInt64)


def _float32s(b: flatbuffers.Builder, items: Sequence[float]) -> int:
    return _vector(b, [float(i) for i in items], 4, b.PrependFloat32)
