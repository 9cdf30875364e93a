"""Signal pipelines: raw sensor windows in, per-window features out.

A model config may declare a `[signal]` section: the channels a window holds,
the sample rate, the window length and hop, and the features computed on each
window from a fixed vocabulary. The cloud computes them here, with NumPy, to
train and to gate; the exported graph computes the same features with TFLite
ops (edgeloop.factory.signal_graph), so a device feeds raw windows and a
change to the pipeline ships over the air with the model.

A window is one row of `window x channels` values, sample-major: the values
of every channel at sample 0, then at sample 1, and so on, as an interleaving
sensor driver delivers them.

Every feature is computed from the window as float32, which is what the
device holds, so training sees exactly the input the graph sees.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

FloatArray = npt.NDArray[np.float64]

FeatureName = Literal[
    "mean",
    "std",
    "rms",
    "peak_to_peak",
    "crest_factor",
    "zero_crossing_rate",
    "band_energy",
]
# A crest factor's rms is floored at this before dividing: an all-zero window
# (whose peak is 0 too) gets crest factor 0 instead of NaN, in NumPy and in TFLite.
CREST_FLOOR = 1e-30
# The DFT basis is a float32 constant of 2 x bins x window values in the graph;
# this bounds it (2 x 2049 x 4096 x 4 bytes is 64 MiB) so a typo cannot make a
# model no device can hold.
MAX_WINDOW = 4096
MAX_CHANNELS = 64


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FeatureSpec(_Strict):
    """One entry of signal.features: a feature of the vocabulary and its parameters."""

    name: FeatureName
    # The channels it is computed on, by name; empty means every channel.
    channels: tuple[str, ...] = ()
    # zero_crossing_rate only: the level whose crossings are counted, in the
    # signal's units (an accelerometer axis that carries gravity crosses 9.81,
    # not 0). A sample equal to the level counts as above it.
    level: float | None = None
    # band_energy only: [low, high) frequency bands in Hz (a band ending at half
    # the sample rate includes it). A band's energy is
    # the share of the window's mean square that falls in it, as a one-sided
    # periodogram (rectangular window, no detrending) summed over the band's
    # DFT bins times the bin width: the bands of [0, rate / 2] sum to mean(x^2).
    bands: tuple[tuple[float, float], ...] = ()


class SignalSection(_Strict):
    """The `[signal]` section of a model config."""

    channels: tuple[str, ...]
    sample_rate: Annotated[float, Field(gt=0.0, le=1e7)]
    window: Annotated[int, Field(ge=2, le=MAX_WINDOW)]
    hop: Annotated[int, Field(ge=1)]
    features: Annotated[tuple[FeatureSpec, ...], Field(min_length=1, max_length=256)]

    @property
    def width(self) -> int:
        """Values in one window: the model's input width."""
        return self.window * len(self.channels)

    def feature_names(self) -> tuple[str, ...]:
        return tuple(column.label for column in columns(self))


def check_signal(signal: SignalSection) -> None:
    """Refuse what the field types cannot: every message names its full key."""
    chans = signal.channels
    if not 1 <= len(chans) <= MAX_CHANNELS:
        raise ValueError(f"signal.channels: {len(chans)} channels; 1 to {MAX_CHANNELS} are allowed")
    if len(set(chans)) != len(chans) or any(not c for c in chans):
        raise ValueError("signal.channels: channel names must be unique and non-empty")
    if signal.hop > signal.window:
        raise ValueError(
            f"signal.hop: {signal.hop} is longer than signal.window {signal.window}; the "
            "samples between windows would never be scored"
        )
    nyquist = signal.sample_rate / 2.0
    step = signal.sample_rate / signal.window
    for i, spec in enumerate(signal.features):
        key = f"signal.features.{i}"
        unknown = [c for c in spec.channels if c not in chans]
        if unknown:
            raise ValueError(
                f"{key}.channels: {unknown[0]!r} is not a channel; signal.channels are "
                f"{', '.join(chans)}"
            )
        if len(set(spec.channels)) != len(spec.channels):
            raise ValueError(f"{key}.channels: a channel is named twice")
        if spec.level is not None and spec.name != "zero_crossing_rate":
            raise ValueError(f"{key}.level: applies to zero_crossing_rate only, not {spec.name}")
        if spec.level is not None and not math.isfinite(spec.level):
            raise ValueError(f"{key}.level: {spec.level} is not a finite number")
        if spec.bands and spec.name != "band_energy":
            raise ValueError(f"{key}.bands: applies to band_energy only, not {spec.name}")
        if spec.name == "band_energy" and not spec.bands:
            raise ValueError(f"{key}.bands: band_energy needs at least one [low, high] band in Hz")
        for j, (low, high) in enumerate(spec.bands):
            where = f"{key}.bands.{j}"
            if not 0.0 <= low < high <= nyquist:
                raise ValueError(
                    f"{where}: [{low:g}, {high:g}] Hz must have 0 <= low < high <= "
                    f"{nyquist:g} (half of signal.sample_rate)"
                )
            if not band_bins(signal, low, high).size:
                raise ValueError(
                    f"{where}: [{low:g}, {high:g}) Hz holds no DFT bin; at "
                    f"{signal.sample_rate:g} Hz over {signal.window} samples the bins are "
                    f"{step:g} Hz apart"
                )


def band_bins(signal: SignalSection, low: float, high: float) -> npt.NDArray[np.int64]:
    """The one-sided DFT bins whose frequency lies in [low, high), or [low, high] when
    high is the Nyquist frequency: the top band then holds the top bin."""
    k = np.arange(signal.window // 2 + 1)
    freq = k * (signal.sample_rate / signal.window)
    top = high >= signal.sample_rate / 2.0
    out: npt.NDArray[np.int64] = k[(freq >= low) & ((freq < high) | (top & (freq <= high)))]
    return out


def bin_weights(window: int) -> FloatArray:
    """c_k / N^2 per one-sided bin k: |X_k|^2 times this is bin k's share of mean(x^2).

    Bins other than DC and (for even N) Nyquist stand for their negative-frequency
    twin too, hence the 2.
    """
    k = np.arange(window // 2 + 1)
    weights = np.full(len(k), 2.0)
    weights[0] = 1.0
    if window % 2 == 0:
        weights[-1] = 1.0
    out: FloatArray = weights / float(window) ** 2
    return out


class Column:
    """One output feature: which computation, on which channel, with which parameter."""

    __slots__ = ("channel", "kind", "label", "param")

    def __init__(self, kind: str, channel: int, param: float | int | None, label: str) -> None:
        self.kind = kind
        self.channel = channel
        self.param = param  # level of a zero-crossing rate, band index of a band energy
        self.label = label


def bands_of(signal: SignalSection) -> tuple[tuple[float, float], ...]:
    """Every distinct band of every band_energy entry, in first-seen order."""
    seen: list[tuple[float, float]] = []
    for spec in signal.features:
        for band in spec.bands:
            if band not in seen:
                seen.append(band)
    return tuple(seen)


def columns(signal: SignalSection) -> list[Column]:
    """The features in output order: entries in config order, each over its channels."""
    chans = signal.channels
    bands = bands_of(signal)
    out: list[Column] = []
    for spec in signal.features:
        picked = spec.channels or chans
        for name in picked:
            c = chans.index(name)
            if spec.name == "band_energy":
                for band in spec.bands:
                    label = f"band_energy_{band[0]:g}_{band[1]:g}hz_{name}"
                    out.append(Column(spec.name, c, bands.index(band), label))
            elif spec.name == "zero_crossing_rate":
                level = 0.0 if spec.level is None else spec.level
                suffix = "" if level == 0.0 else f"_at_{level:g}"
                out.append(Column(spec.name, c, level, f"zero_crossing_rate{suffix}_{name}"))
            else:
                out.append(Column(spec.name, c, None, f"{spec.name}_{name}"))
    return out


def windows_of(signal: SignalSection, X: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Rows of `window x channels` values as float32 windows [rows, window, channels]."""
    arr = np.asarray(X)
    if arr.ndim != 2 or arr.shape[1] != signal.width:
        raise ValueError(
            f"windows have shape {arr.shape}; this pipeline takes rows of {signal.width} "
            f"values ({signal.window} samples x {len(signal.channels)} channels)"
        )
    out: npt.NDArray[np.float32] = arr.astype(np.float32).reshape(
        len(arr), signal.window, len(signal.channels)
    )
    return out


def band_energies(signal: SignalSection, x: FloatArray) -> FloatArray:
    """[rows, channels, bands]: each band's share of the window's mean square."""
    spectrum = np.fft.rfft(x, axis=1)  # [rows, bins, channels]
    power = (spectrum.real**2 + spectrum.imag**2) * bin_weights(signal.window)[None, :, None]
    bands = bands_of(signal)
    out = np.zeros((len(x), x.shape[2], len(bands)))
    for j, (low, high) in enumerate(bands):
        out[:, :, j] = power[:, band_bins(signal, low, high), :].sum(axis=1)
    return out


def extract(signal: SignalSection, X: npt.ArrayLike) -> FloatArray:
    """The pipeline's features of each window, [rows, features], in float64."""
    w32 = windows_of(signal, X)
    x = w32.astype(np.float64)
    n = signal.window
    cache: dict[tuple[str, float | int | None], FloatArray] = {}

    def per_channel(kind: str, param: float | int | None) -> FloatArray:
        key = (kind, param)
        if key in cache:
            return cache[key]
        value: FloatArray
        if kind == "mean":
            value = x.mean(axis=1)
        elif kind == "std":
            value = x.std(axis=1)
        elif kind == "rms":
            value = np.sqrt((x * x).mean(axis=1))
        elif kind == "peak_to_peak":
            value = x.max(axis=1) - x.min(axis=1)
        elif kind == "crest_factor":
            rms = per_channel("rms", None)
            value = np.abs(x).max(axis=1) / np.maximum(rms, CREST_FLOOR)
        elif kind == "zero_crossing_rate":
            # Compared in float32, as the graph compares: a sample equal to the
            # level is above it.
            below = w32 < np.float32(param)
            value = (below[:, 1:] != below[:, :-1]).sum(axis=1) / float(n - 1)
        else:
            value = band_energies(signal, x)
        cache[key] = value
        return value

    cols = columns(signal)
    out = np.empty((len(x), len(cols)))
    for i, col in enumerate(cols):
        if col.kind == "band_energy":
            out[:, i] = per_channel("band_energy", None)[:, col.channel, int(col.param or 0)]
        else:
            out[:, i] = per_channel(col.kind, col.param)[:, col.channel]
    return out


# A feature's error is judged relative to its own value, but never to less than
# this share of the window's own scale for that feature: the mean of a zero-mean
# vibration or the energy of an empty band is ~0, and relative to ~0 any
# float32 rounding is infinite.
FLOOR_SHARE = 1e-3


def error_floors(signal: SignalSection, X: npt.ArrayLike) -> FloatArray:
    """[rows, features]: the smallest magnitude each feature's error is judged against.

    Amplitude features (mean, std, rms, peak-to-peak) against FLOOR_SHARE of
    the channel's largest |sample|; band energies against FLOOR_SHARE of the
    channel's mean square (the sum of all its band energies); crest factor and
    zero-crossing rate, which are ratios, against FLOOR_SHARE.
    """
    x = windows_of(signal, X).astype(np.float64)
    peak = np.abs(x).max(axis=1)
    mean_square = (x * x).mean(axis=1)
    cols = columns(signal)
    out = np.empty((len(x), len(cols)))
    for i, col in enumerate(cols):
        if col.kind in ("mean", "std", "rms", "peak_to_peak"):
            out[:, i] = peak[:, col.channel]
        elif col.kind == "band_energy":
            out[:, i] = mean_square[:, col.channel]
        else:
            out[:, i] = 1.0
    floors: FloatArray = np.maximum(FLOOR_SHARE * out, CREST_FLOOR)
    return floors


def relative_errors(got: FloatArray, want: FloatArray, floors: FloatArray) -> FloatArray:
    """|got - want| / max(|want|, floor), elementwise."""
    out: FloatArray = np.abs(got - want) / np.maximum(np.abs(want), floors)
    return out


def frames(signal: SignalSection, samples: npt.ArrayLike) -> FloatArray:
    """Cut a recording [samples, channels] into windows every `hop` samples, as rows.

    The cloud's windowing, for turning recordings into training rows; a device
    cuts its live stream into the same rows (edge.windowing).
    """
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(signal.channels):
        raise ValueError(
            f"a recording has shape {arr.shape}; expected [samples, {len(signal.channels)}]"
        )
    starts = range(0, len(arr) - signal.window + 1, signal.hop)
    if not len(starts):
        return np.empty((0, signal.width))
    out: FloatArray = np.stack([arr[s : s + signal.window].reshape(-1) for s in starts])
    return out
