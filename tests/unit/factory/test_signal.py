"""The signal pipeline's config and its NumPy features, against independent references."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import scipy.signal
import scipy.stats

from edgeloop.factory.config import ConfigError, parse_config
from edgeloop.factory.signal import SignalSection, extract, frames

RATE = 1000.0
WINDOW = 200  # 5 Hz bins; 200 samples hold whole periods of 10, 50 and 120 Hz


def _signal(features: list[dict[str, Any]], channels: tuple[str, ...] = ("x",)) -> SignalSection:
    return SignalSection.model_validate(
        {
            "channels": channels,
            "sample_rate": RATE,
            "window": WINDOW,
            "hop": WINDOW // 2,
            "features": tuple({k: _tuples(v) for k, v in f.items()} for f in features),
        }
    )


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _one(name: str, window: np.ndarray, **params: Any) -> float:
    signal = _signal([{"name": name, **params}])
    return float(extract(signal, window.reshape(1, -1))[0, 0])


def _tone(freq: float, amplitude: float = 1.0, phase: float = 0.3, offset: float = 0.0) -> Any:
    t = np.arange(WINDOW) / RATE
    return offset + amplitude * np.sin(2 * np.pi * freq * t + phase)


def _noise(seed: int = 0) -> Any:
    return np.random.default_rng(seed).normal(0.7, 2.0, WINDOW)


# --- config -----------------------------------------------------------------------


def _doc() -> dict[str, Any]:
    return {
        "model": {"name": "pump", "kind": "kmeans_anomaly", "n_features": 5},
        "signal": {
            "channels": ["x", "y"],
            "sample_rate": 1000,
            "window": 128,
            "hop": 64,
            "features": [
                {"name": "rms"},
                {"name": "band_energy", "channels": ["y"], "bands": [[0, 50], [50, 500]]},
                {"name": "zero_crossing_rate", "channels": ["x"], "level": 9.81},
            ],
        },
        "gate": {"metric": "silhouette", "threshold": 0.3},
    }


def test_a_signal_config_names_its_features_and_takes_raw_windows() -> None:
    config = parse_config(_doc())
    assert config.signal is not None
    assert config.signal.feature_names() == (
        "rms_x",
        "rms_y",
        "band_energy_0_50hz_y",
        "band_energy_50_500hz_y",
        "zero_crossing_rate_at_9.81_x",
    )
    assert config.input_width == 128 * 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["signal"]["features"].append({"name": "kurtosis"}), "signal.features.3.name"),
        (lambda d: d["signal"]["features"][0].update(gain=2), "signal.features.0.gain: unknown"),
        (lambda d: d["signal"]["features"][0].update(level=1.0), "signal.features.0.level:"),
        (lambda d: d["signal"]["features"][0].update(bands=[[0, 9]]), "signal.features.0.bands:"),
        (lambda d: d["signal"]["features"][1].update(channels=["z"]), "features.1.channels: 'z'"),
        (lambda d: d["signal"]["features"][1].update(bands=[[60, 50]]), "features.1.bands.0:"),
        (lambda d: d["signal"]["features"][1].update(bands=[[0, 900]]), "features.1.bands.0:"),
        (lambda d: d["signal"]["features"][1].update(bands=[[1, 2]]), "holds no DFT bin"),
        (lambda d: d["signal"]["features"][1].pop("bands"), "signal.features.1.bands:"),
        (lambda d: d["signal"]["features"][2].update(level="high"), "signal.features.2.level"),
        (lambda d: d["signal"].update(window=1), "signal.window:"),
        (lambda d: d["signal"].update(hop=0), "signal.hop:"),
        (lambda d: d["signal"].update(hop=129), "signal.hop: 129 is longer"),
        (lambda d: d["signal"].update(sample_rate=-1), "signal.sample_rate:"),
        (lambda d: d["signal"].update(channels=["x", "x"]), "signal.channels:"),
        (lambda d: d["signal"].update(features=[]), "signal.features:"),
        (lambda d: d["signal"].pop("window"), "signal.window: Field required"),
        (lambda d: d["signal"].update(windw=3), "signal.windw: unknown key"),
        (lambda d: d["model"].update(n_features=4), "model.n_features: the signal pipeline"),
        (lambda d: d["model"].update(feature_names=["a"] * 5), "model.feature_names:"),
    ],
)
def test_bad_signal_configs_are_refused_with_the_key_named(change: Any, message: str) -> None:
    doc = copy.deepcopy(_doc())
    change(doc)
    with pytest.raises(ConfigError, match=r"^pump\.toml: ") as e:
        parse_config(doc, "pump.toml")
    assert message in str(e.value)


# --- features against independent references ----------------------------------------


def test_mean_against_scipy_and_a_hand_value() -> None:
    assert _one("mean", np.arange(1.0, WINDOW + 1)) == pytest.approx((WINDOW + 1) / 2, rel=1e-12)
    x = _noise()
    assert _one("mean", x) == pytest.approx(scipy.stats.describe(x).mean, rel=1e-6)


def test_std_is_the_population_deviation() -> None:
    x = _noise(1)
    described = scipy.stats.describe(x)
    population = np.sqrt(described.variance * (WINDOW - 1) / WINDOW)
    assert _one("std", x) == pytest.approx(population, rel=1e-6)
    # A sine over whole periods: amplitude / sqrt(2), whatever its offset.
    assert _one("std", _tone(50, 3.0, offset=7.0)) == pytest.approx(3.0 / np.sqrt(2), rel=1e-6)


def test_rms_of_a_sine_and_against_the_periodogram() -> None:
    assert _one("rms", _tone(50, 2.0)) == pytest.approx(2.0 / np.sqrt(2), rel=1e-6)
    x = _noise(2)
    _, pxx = scipy.signal.periodogram(x, RATE, window="boxcar", detrend=False)
    # Parseval: the one-sided periodogram integrates to the mean square.
    assert _one("rms", x) == pytest.approx(np.sqrt(pxx.sum() * RATE / WINDOW), rel=1e-6)


def test_peak_to_peak_and_crest_factor_of_hand_checked_windows() -> None:
    square = np.where(np.arange(WINDOW) % 20 < 10, 3.0, -3.0)
    assert _one("peak_to_peak", square) == 6.0
    assert _one("crest_factor", square) == pytest.approx(1.0, rel=1e-7)
    # A 50 Hz sine at 1 kHz with phase 0 hits +-1 exactly at samples 5 and 15.
    sine = _tone(50, 1.0, phase=0.0)
    assert _one("peak_to_peak", sine) == pytest.approx(2.0, rel=1e-6)
    assert _one("crest_factor", sine) == pytest.approx(np.sqrt(2), rel=1e-6)
    # One spike of height a in n zeros: peak a, rms a / sqrt(n), crest sqrt(n).
    spike = np.zeros(WINDOW)
    spike[17] = -4.0
    assert _one("peak_to_peak", spike) == 4.0
    assert _one("crest_factor", spike) == pytest.approx(np.sqrt(WINDOW), rel=1e-6)
    assert _one("crest_factor", np.zeros(WINDOW)) == 0.0


def test_zero_crossing_rate_counts_sign_changes() -> None:
    # A 10 Hz sine over 0.2 s crosses zero twice a period: 4 times (phase keeps
    # every sample off zero), over 199 sample pairs.
    assert _one("zero_crossing_rate", _tone(10)) == pytest.approx(4 / (WINDOW - 1), rel=1e-12)
    alternating = np.where(np.arange(WINDOW) % 2 == 0, 1.0, -1.0)
    assert _one("zero_crossing_rate", alternating) == 1.0
    # A sample equal to the level counts as above it: no crossing in 0, 0, 1.
    steps = np.concatenate([np.zeros(WINDOW // 2), np.ones(WINDOW // 2)])
    assert _one("zero_crossing_rate", steps) == 0.0
    # The same sine riding on gravity crosses 9.81, not 0.
    assert _one("zero_crossing_rate", _tone(10, offset=9.81)) == 0.0
    lifted = _one("zero_crossing_rate", _tone(10, offset=9.81), level=9.81)
    assert lifted == pytest.approx(4 / (WINDOW - 1), rel=1e-12)


def test_band_energy_against_scipy_periodogram() -> None:
    bands = [[0, 40], [40, 100], [100, 500]]
    signal = _signal([{"name": "band_energy", "bands": bands}])
    x = _tone(50, 2.0, offset=0.5) + _tone(120, 0.5) + 0.1 * _noise(3)
    got = extract(signal, x.reshape(1, -1))[0]
    x32 = x.astype(np.float32).astype(np.float64)
    freq, pxx = scipy.signal.periodogram(x32, RATE, window="boxcar", detrend=False)
    df = RATE / WINDOW
    want = [pxx[(freq >= lo) & ((freq < hi) | (hi == RATE / 2))].sum() * df for lo, hi in bands]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # Bands covering [0, rate / 2] sum to the mean square.
    assert got.sum() == pytest.approx(np.mean(x32**2), rel=1e-9)


def test_band_energy_of_a_pure_tone_is_half_its_squared_amplitude() -> None:
    bands = [[0, 45], [45, 55], [55, 500]]
    got = extract(_signal([{"name": "band_energy", "bands": bands}]), _tone(50, 2.0)[None, :])
    np.testing.assert_allclose(got[0], [0.0, 2.0, 0.0], atol=1e-9)


def test_channels_interleave_and_features_follow_the_config_order() -> None:
    signal = _signal([{"name": "mean", "channels": ["y"]}, {"name": "rms"}], channels=("x", "y"))
    x, y = _tone(50, 1.0), np.full(WINDOW, 3.0)
    row = np.stack([x, y], axis=1).reshape(1, -1)  # sample-major: x0, y0, x1, y1, ...
    np.testing.assert_allclose(extract(signal, row)[0], [3.0, 1 / np.sqrt(2), 3.0], rtol=1e-6)
    assert signal.feature_names() == ("mean_y", "rms_x", "rms_y")


def test_a_recording_is_cut_into_windows_every_hop() -> None:
    signal = _signal([{"name": "mean"}], channels=("x", "y"))
    recording = np.arange(2 * 500, dtype=float).reshape(500, 2)
    rows = frames(signal, recording)
    assert rows.shape == (4, 2 * WINDOW)  # starts 0, 100, 200, 300
    assert rows[1, :2].tolist() == recording[100].tolist()


def test_a_window_of_the_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="rows of 200 values"):
        extract(_signal([{"name": "mean"}]), np.zeros((1, 199)))
