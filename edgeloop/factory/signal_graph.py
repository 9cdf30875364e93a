"""A signal pipeline's features as TFLite ops, in front of the scaler and the estimator.

The graph's input is one raw window per row, [B, window x channels],
sample-major as in edgeloop.factory.signal. Sums over a window are
FULLY_CONNECTED ops with constant weights, which every TFLite runtime runs
fast and which keep the batch axis first:

- mean: window @ A, where A holds 1/window at each (sample, channel) entry of
  its channel, corrected by the mean of the window minus that first estimate
  (tiled back to every sample by another FULLY_CONNECTED); variance: the
  window minus its tiled mean, squared, @ A; std: SQRT of the variance; rms:
  SQRT of mean^2 + variance;
- peak-to-peak: RESHAPE to [B, window, channels], REDUCE_MAX - REDUCE_MIN over
  samples; crest factor: REDUCE_MAX of ABS over samples, DIV by the rms
  (floored by MAXIMUM, as NumPy floors it);
- zero-crossing rate: LESS than the level, CAST to 0/1, the squared difference
  of the window shifted by one sample (two SLICEs) is 1 exactly where the side
  changes, @ 1/(window - 1). All of it is exact in float32;
- band energies: TRANSPOSE to one row per channel, FULLY_CONNECTED with the
  real and imaginary DFT bases of the bins the bands use, squared and added,
  then FULLY_CONNECTED with the band matrix (each bin's weight c_k / N^2 in
  the rows of the bands that hold it). The DC bin's power is mean^2.

The blocks are concatenated and a GATHER puts the columns in the config's
order. Every op is a builtin at version 1 for float32, so the graph loads in
tflite-runtime 2.14 as well as in current LiteRT.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgeloop.factory.signal import (
    CREST_FLOOR,
    SignalSection,
    band_bins,
    bands_of,
    bin_weights,
    columns,
)
from edgeloop.factory.tflite_writer import Graph

FloatArray = npt.NDArray[np.float64]
# The name of the [B, features] tensor in every graph with a signal pipeline.
FEATURES_TENSOR = "signal/features"


def _averager(window: int, channels: int, samples: int | None = None) -> FloatArray:
    """FULLY_CONNECTED weights [channels, samples x channels]: each channel's mean."""
    samples = window if samples is None else samples
    weights = np.zeros((channels, samples * channels))
    for c in range(channels):
        weights[c, c::channels] = 1.0 / samples
    return weights


class _Builder:
    def __init__(self, graph: Graph, signal: SignalSection, x: int) -> None:
        self.g = graph
        self.s = signal
        self.x = x
        self.n = signal.window
        self.c = len(signal.channels)
        self.blocks: dict[tuple[str, float | int | None], int] = {}
        self.shared: dict[str, tuple[int, int]] = {}

    def _fc(self, x: int, weights: FloatArray, name: str, rows: int = 0, share: str = "") -> int:
        """x @ weights.T; `rows` is the output's static first dimension (1 for the batch).

        Weights given a `share` name are stored once however many ops use them.
        """
        out = self.g.activation(name, (rows or 1, weights.shape[0]))
        if share and share in self.shared:
            w, b = self.shared[share]
        else:
            w = self.g.constant(f"{share or name}/weights", weights)
            b = self.g.constant(f"{share or name}/bias", np.zeros(weights.shape[0]))
            if share:
                self.shared[share] = (w, b)
        self.g.fully_connected(x, w, b, out)
        return out

    def _average(self, x: int, name: str) -> int:
        return self._fc(x, _averager(self.n, self.c), name, share="signal/average")

    def _centred(self, mean: int, name: str) -> int:
        """The window minus its channels' `mean`, sample by sample."""
        tiled = self._fc(
            mean, _averager(self.n, self.c).T * self.n, f"{name}/tiled", share="signal/tile"
        )
        out = self.g.activation(name, (1, self.n * self.c))
        self.g.sub(self.x, tiled, out)
        return out

    def _windows3(self) -> int:
        if ("windows3", None) not in self.blocks:
            out = self.g.activation("signal/windows", (1, self.n, self.c))
            self.g.reshape(self.x, (-1, self.n, self.c), out)
            self.blocks[("windows3", None)] = out
        return self.blocks[("windows3", None)]

    def _square(self, x: int, name: str) -> int:
        out = self.g.activation(name, (1, self.n * self.c))
        self.g.mul(x, x, out)
        return out

    def block(self, kind: str, param: float | int | None) -> int:
        """One feature on every channel, [B, channels]; bands: [B, channels x bands]."""
        key = (kind, param)
        if key in self.blocks:
            return self.blocks[key]
        g, n, c = self.g, self.n, self.c
        out: int
        if kind == "mean":
            # Two passes: a float32 sum of a window riding on a large offset
            # is off by several ulps of the offset, which swamps a small
            # standard deviation. The mean of what is left after subtracting
            # the first estimate is small and nearly exact, and corrects it.
            first = self._average(self.x, "signal/mean/first")
            residual = self._average(
                self._centred(first, "signal/mean/residual"), "signal/mean/fix"
            )
            out = g.activation("signal/mean", (1, c))
            g.add(first, residual, out)
        elif kind == "variance":
            centred = self._centred(self.block("mean", None), "signal/variance/centred")
            squared = self._square(centred, "signal/variance/squared")
            out = self._average(squared, "signal/variance")
        elif kind == "mean_square":
            # mean^2 + variance rather than a float32 sum of squares: on a
            # channel riding on an offset (gravity on an accelerometer axis)
            # the rms barely varies between windows, the scaler divides by
            # that small spread, and a sum of squares' rounding grows ~600x
            # into the score (measured 2.5e-4 on the example pump config).
            out = g.activation("signal/mean_square", (1, c))
            g.add(self.block("mean_squared", None), self.block("variance", None), out)
        elif kind == "mean_squared":
            mean = self.block("mean", None)
            out = g.activation("signal/mean_squared", (1, c))
            g.mul(mean, mean, out)
        elif kind == "std":
            out = g.activation("signal/std", (1, c))
            g.sqrt(self.block("variance", None), out)
        elif kind == "rms":
            out = g.activation("signal/rms", (1, c))
            g.sqrt(self.block("mean_square", None), out)
        elif kind == "peak_to_peak":
            high = g.activation("signal/peak_to_peak/max", (1, c))
            g.reduce_max(self._windows3(), 1, high)
            low = g.activation("signal/peak_to_peak/min", (1, c))
            g.reduce_min(self._windows3(), 1, low)
            out = g.activation("signal/peak_to_peak", (1, c))
            g.sub(high, low, out)
        elif kind == "crest_factor":
            magnitude = g.activation("signal/crest_factor/abs", (1, n, c))
            g.abs(self._windows3(), magnitude)
            peak = g.activation("signal/crest_factor/peak", (1, c))
            g.reduce_max(magnitude, 1, peak)
            floored = g.activation("signal/crest_factor/rms_floored", (1, c))
            g.maximum(
                self.block("rms", None),
                g.constant("signal/crest_factor/floor", np.array([CREST_FLOOR], np.float32)),
                floored,
            )
            out = g.activation("signal/crest_factor", (1, c))
            g.div(peak, floored, out)
        elif kind == "zero_crossing_rate":
            out = self._zero_crossing_rate(float(param or 0.0))
        else:
            out = self._band_energies()
        self.blocks[key] = out
        return out

    def _zero_crossing_rate(self, level: float) -> int:
        g, n, c = self.g, self.n, self.c
        name = f"signal/zero_crossing_rate/{level:g}"
        below = g.boolean(f"{name}/below", (1, n * c))
        g.less(self.x, g.constant(f"{name}/level", np.array([level], np.float32)), below)
        side = g.activation(f"{name}/side", (1, n * c))
        g.cast(below, side)
        later = g.activation(f"{name}/later", (1, (n - 1) * c))
        g.slice(side, (0, c), (-1, (n - 1) * c), later)
        earlier = g.activation(f"{name}/earlier", (1, (n - 1) * c))
        g.slice(side, (0, 0), (-1, (n - 1) * c), earlier)
        changed = g.activation(f"{name}/changed", (1, (n - 1) * c))
        g.squared_difference(later, earlier, changed)
        return self._fc(changed, _averager(n, c, samples=n - 1), name)

    def _tone_power(self, tones: npt.NDArray[np.int64], phase: FloatArray) -> int:
        """|X_k|^2 of the bins `tones`, one row per (window, channel): [B x channels, bins]."""
        g, n, c = self.g, self.n, self.c
        by_channel = g.activation("signal/band_energy/by_channel", (1, c, n))
        g.transpose(self._windows3(), (0, 2, 1), by_channel)
        rows = g.activation("signal/band_energy/rows", (c, n))
        g.reshape(by_channel, (-1, n), rows)
        real = self._fc(rows, np.cos(phase), "signal/band_energy/real", rows=c)
        imag = self._fc(rows, -np.sin(phase), "signal/band_energy/imag", rows=c)
        real2 = g.activation("signal/band_energy/real2", (c, len(tones)))
        g.mul(real, real, real2)
        imag2 = g.activation("signal/band_energy/imag2", (c, len(tones)))
        g.mul(imag, imag, imag2)
        power = g.activation("signal/band_energy/tone_power", (c, len(tones)))
        g.add(real2, imag2, power)
        return power

    def _band_energies(self) -> int:
        g, n, c = self.g, self.n, self.c
        bands = bands_of(self.s)
        per_band = [band_bins(self.s, low, high) for low, high in bands]
        bins = np.unique(np.concatenate(per_band))
        # Only the bins some band uses: a 0-50 Hz band at 1 kHz over 256
        # samples needs 13 of the 129 one-sided bins, a tenth of the basis.
        # The DC bin's power is the squared mean (|X_0|^2 / N^2), taken from
        # the two-pass mean: a float32 sum of an offset's samples would carry
        # its rounding into the band that holds DC, as into a sum of squares.
        with_dc = bool(bins[0] == 0)
        tones = bins[1:] if with_dc else bins
        phase = 2.0 * np.pi * np.outer(tones, np.arange(n)) / n
        matrix = np.zeros((len(bands), len(bins)))
        weights = bin_weights(n)
        if with_dc:
            weights = weights.copy()
            weights[0] = 1.0
        for j, held in enumerate(per_band):
            matrix[j, np.searchsorted(bins, held)] = weights[held]
        parts = []
        if with_dc:
            dc = g.activation("signal/band_energy/dc", (c, 1))
            g.reshape(self.block("mean_squared", None), (-1, 1), dc)
            parts.append(dc)
        if len(tones):
            parts.append(self._tone_power(tones, phase))
        if len(parts) == 1:
            power = parts[0]
        else:
            power = g.activation("signal/band_energy/power", (c, len(bins)))
            g.concatenation(parts, 1, power)
        energy = self._fc(power, matrix, "signal/band_energy/bands", rows=c)
        out = g.activation("signal/band_energy", (1, c * len(bands)))
        g.reshape(energy, (-1, c * len(bands)), out)
        return out


def signal_features(graph: Graph, signal: SignalSection, x: int) -> int:
    """Append the pipeline's ops to `graph`; `x` is [B, window x channels], the result
    [B, features] in the order of signal.feature_names()."""
    builder = _Builder(graph, signal, x)
    cols = columns(signal)
    order: list[tuple[str, float | int | None]] = []
    for col in cols:
        key = (col.kind, None if col.kind == "band_energy" else col.param)
        if key not in order:
            order.append(key)
    tensors = [builder.block(*key) for key in order]
    offsets: dict[tuple[str, float | int | None], int] = {}
    at = 0
    for key in order:
        offsets[key] = at
        at += builder.c * (len(bands_of(signal)) if key[0] == "band_energy" else 1)
    indices = []
    for col in cols:
        if col.kind == "band_energy":
            base = offsets[("band_energy", None)]
            indices.append(base + col.channel * len(bands_of(signal)) + int(col.param or 0))
        else:
            indices.append(offsets[(col.kind, col.param)] + col.channel)
    if len(tensors) == 1:
        joined = tensors[0]
    else:
        joined = graph.activation("signal/blocks", (1, at))
        graph.concatenation(tensors, 1, joined)
    # Always a GATHER, even in order: the features then have one name in every
    # graph, by which the export check reads them out of the shipped model.
    out = graph.activation(FEATURES_TENSOR, (1, len(cols)))
    graph.gather(joined, indices, 1, out)
    return out


def features_tflite(signal: SignalSection) -> bytes:
    """A graph of the pipeline alone: raw windows in, features out (for tests and tools;
    the export check reads the features out of the shipped graph itself)."""
    graph = Graph("edgeloop_signal_features")
    x = graph.input("window", signal.width)
    out = signal_features(graph, signal, x)
    return graph.serialize([x], [out], description="edgeloop signal features")
