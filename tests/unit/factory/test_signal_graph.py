"""Each signal feature's TFLite form, run in the device's interpreter, against NumPy's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tflite as fb
from tflite.BuiltinOperator import BuiltinOperator

from edgeloop.factory.run import FEATURE_TOLERANCE, features_agree
from edgeloop.factory.signal import SignalSection, error_floors, extract, relative_errors
from edgeloop.factory.signal_graph import features_tflite
from edgeloop.runtime import CompiledModel
from tests.factories import SIGNAL_WINDOW, signal_config, signal_windows

_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
# Highest versions tflite-runtime 2.14's builtin op resolver registers.
_TFLITE_214 = {
    "FULLY_CONNECTED": 11, "ADD": 4, "MUL": 7, "SQUARED_DIFFERENCE": 2, "SUM": 2,
    "REDUCE_MIN": 3, "REDUCE_MAX": 3, "SQRT": 1, "SUB": 5, "DIV": 2, "MAXIMUM": 4, "ABS": 5,
    "LESS": 3, "CAST": 5, "RESHAPE": 1, "TRANSPOSE": 6, "SLICE": 6, "CONCATENATION": 4,
    "GATHER": 6,
}  # fmt: skip


def _pipeline(*features: dict[str, Any]) -> SignalSection:
    return SignalSection.model_validate(
        {
            "channels": ("x", "y", "z"),
            "sample_rate": 1000.0,
            "window": SIGNAL_WINDOW,
            "hop": SIGNAL_WINDOW,
            "features": features,
        }
    )


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    X, _ = signal_windows(400, seed=3, outlier_share=0.05)
    rng = np.random.default_rng(4)
    # Edge cases beside the machine's windows: silence, a DC offset far above
    # the vibration, a lone spike, samples exactly at the crossing level.
    silence = np.zeros((1, X.shape[1]))
    offset = 50.0 + rng.normal(0.0, 0.5, (1, X.shape[1]))
    spike = np.zeros((1, X.shape[1]))
    spike[0, 31] = -7.0
    on_level = np.tile([0.0, 1.0, 9.81, -1.0, 0.0, 9.81], (1, X.shape[1] // 6 + 1))
    return np.vstack([X, silence, offset, spike, on_level[:, : X.shape[1]]])


def _check(signal: SignalSection, X: np.ndarray) -> float:
    got = CompiledModel(features_tflite(signal)).predict(X).astype(np.float64)
    want = extract(signal, X)
    assert got.shape == want.shape
    return float(relative_errors(got, want, error_floors(signal, X)).max())


@pytest.mark.parametrize(
    "feature",
    [
        {"name": "mean"},
        {"name": "std"},
        {"name": "rms"},
        {"name": "peak_to_peak"},
        {"name": "crest_factor"},
        {"name": "zero_crossing_rate"},
        {"name": "zero_crossing_rate", "level": 9.81},
        {"name": "band_energy", "bands": ((0.0, 40.0), (40.0, 150.0), (150.0, 500.0))},
        {"name": "band_energy", "channels": ("y",), "bands": ((20.0, 30.0),)},
    ],
    ids=lambda f: f["name"] + ("_" + str(f.get("level", f.get("channels", ""))) or ""),
)
def test_each_feature_in_tflite_matches_numpy(feature: dict[str, Any], windows: np.ndarray) -> None:
    assert _check(_pipeline(feature), windows) <= FEATURE_TOLERANCE


def test_zero_crossing_rate_is_exact_in_tflite(windows: np.ndarray) -> None:
    signal = _pipeline(
        {"name": "zero_crossing_rate", "level": 9.81}, {"name": "zero_crossing_rate"}
    )
    got = CompiledModel(features_tflite(signal)).predict(windows).astype(np.float64)
    crossings = got * (SIGNAL_WINDOW - 1)
    np.testing.assert_allclose(crossings, np.round(crossings), atol=1e-4)
    np.testing.assert_allclose(crossings, extract(signal, windows) * (SIGNAL_WINDOW - 1), atol=1e-4)


def test_the_whole_vocabulary_in_config_order(windows: np.ndarray) -> None:
    config = signal_config()
    assert config.signal is not None
    verdict = features_agree(config.signal, windows)
    assert verdict["ok"], verdict
    assert verdict["max_relative_error"] <= FEATURE_TOLERANCE
    assert list(verdict["per_feature"]) == list(config.signal.feature_names())


def test_the_batch_resizes(windows: np.ndarray) -> None:
    signal = _pipeline({"name": "rms"}, {"name": "band_energy", "bands": ((0.0, 500.0),)})
    model = CompiledModel(features_tflite(signal))
    one = model.predict(windows[:1])
    many = model.predict(windows[:7])
    np.testing.assert_allclose(many[:1], one, rtol=1e-6)
    assert many.shape == (7, 6)


def test_ops_stay_within_what_tflite_runtime_2_14_registers() -> None:
    config = signal_config()
    assert config.signal is not None
    model = fb.Model.GetRootAs(features_tflite(config.signal), 0)
    seen = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        name = _NAMES[code.BuiltinCode()]
        seen.add(name)
        assert code.Version() <= _TFLITE_214[name], name
    assert seen <= set(_TFLITE_214)


def test_a_channel_on_an_offset_keeps_its_rms_and_dc_band_to_a_few_ulps() -> None:
    # Gravity under a small vibration: rms and the band holding DC barely vary
    # between windows, and the scaler divides by that spread, so they must not
    # carry a float32 sum's rounding (~sqrt(window) ulps) into the score.
    signal = _pipeline({"name": "rms"}, {"name": "band_energy", "bands": ((0.0, 40.0),)})
    rng = np.random.default_rng(8)
    X = 9.81 + rng.normal(0.0, 0.05, (300, SIGNAL_WINDOW * 3))
    got = CompiledModel(features_tflite(signal)).predict(X).astype(np.float64)
    want = extract(signal, X)
    ulp = float(np.finfo(np.float32).eps)
    assert np.max(np.abs(got - want) / want) <= 4 * ulp
