"""The flatbuffer is a well-formed TFLite model, read back with the schema's own code."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tflite as fb
from tflite.BuiltinOperator import BuiltinOperator

from edgeloop.factory.export import INT8_HEADROOM, quantize_int8, to_tflite
from edgeloop.factory.run import train_run
from tests.factories import as_dataset, digits_config, digits_share, kmeans_config, planted_outliers

_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def _models() -> list[bytes]:
    mlp = train_run(digits_config(threshold=0.5, quantize="int8"), digits_share(0.3))
    data, _ = planted_outliers(500, seed=1)
    km = train_run(kmeans_config(quantize="int8"), as_dataset(data))
    assert mlp.model is not None
    assert km.model is not None
    return [to_tflite(m, q) for m in (mlp.model, km.model) for q in ("none", "int8")]


@pytest.fixture(scope="module")
def models() -> list[bytes]:
    return _models()


def test_files_carry_the_tflite_identifier_and_schema_version(models: list[bytes]) -> None:
    for blob in models:
        assert blob[4:8] == b"TFL3"
        model = fb.Model.GetRootAs(blob, 0)
        assert model.Version() == 3
        assert model.SubgraphsLength() == 1


def test_op_versions_stay_within_what_tflite_runtime_2_14_registers(models: list[bytes]) -> None:
    # Highest versions registered by tflite-runtime 2.14's builtin op resolver.
    supported = {
        "FULLY_CONNECTED": 11, "SOFTMAX": 3, "ADD": 4, "MUL": 7, "SQUARED_DIFFERENCE": 2,
        "SUM": 2, "REDUCE_MIN": 3, "SQRT": 1, "DEQUANTIZE": 5,
    }  # fmt: skip
    seen = set()
    for blob in models:
        model = fb.Model.GetRootAs(blob, 0)
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            name = _NAMES[code.BuiltinCode()]
            seen.add(name)
            assert code.Version() <= supported[name], name
            assert code.DeprecatedBuiltinCode() == code.BuiltinCode()
    assert seen == set(supported)


def test_weight_buffers_are_16_byte_aligned(models: list[bytes]) -> None:
    for blob in models:
        model = fb.Model.GetRootAs(blob, 0)
        assert model.Buffers(0).DataLength() == 0  # the schema's empty sentinel
        for i in range(1, model.BuffersLength()):
            buffer = model.Buffers(i)
            assert buffer.DataLength() > 0
            offset = buffer._tab.Vector(buffer._tab.Offset(4))
            assert offset % 16 == 0


def test_input_and_output_have_a_resizable_batch(models: list[bytes]) -> None:
    for blob in models:
        graph = fb.Model.GetRootAs(blob, 0).Subgraphs(0)
        for index in (graph.Inputs(0), graph.Outputs(0)):
            assert graph.Tensors(index).ShapeSignature(0) == -1


def test_int8_weights_are_symmetric_per_channel() -> None:
    weights = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -3.0]])
    q, quant = quantize_int8(weights)
    assert quant.zero_points == (0, 0, 0)
    # The largest weight of a channel lands at 127 / INT8_HEADROOM, not at 127.
    top = round(127 / INT8_HEADROOM)
    assert top == 85
    assert q[0].tolist() == [42, -top, 21]
    assert q[2].tolist() == [top, 42, -top]
    restored = q * np.array(quant.scales)[:, None]
    assert np.max(np.abs(restored - weights)) <= max(quant.scales) / 2 + 1e-7


def test_int8_reuses_old_scales_while_the_channel_still_fits_them() -> None:
    old = np.array([[0.5, -1.0, 0.25], [3.0, 1.5, -3.0], [1.0, 1.0, 1.0]])
    q_old, quant_old = quantize_int8(old)
    # Channel 0 nudged by far less than a step, channel 1 grown past its headroom,
    # channel 2 shrunk to a third (it would waste most of the int8 range).
    new = np.array([[0.501, -1.001, 0.2501], [5.0, 1.5, -3.0], [0.3, 0.3, 0.3]])
    q_new, quant_new = quantize_int8(new, reuse=quant_old.scales)
    assert quant_new.scales[0] == quant_old.scales[0]
    assert q_new[0].tolist() == q_old[0].tolist()
    assert quant_new.scales[1] != quant_old.scales[1]
    assert np.abs(q_new[1]).max() <= 127
    assert quant_new.scales[2] != quant_old.scales[2]
    restored = q_new * np.array(quant_new.scales)[:, None]
    assert np.max(np.abs(restored - new)) <= max(quant_new.scales) / 2 + 1e-7


def test_no_tensorflow_is_imported() -> None:
    assert "tensorflow" not in sys.modules
