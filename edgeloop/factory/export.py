"""Trained models as TFLite graphs.

Graphs (B is the batch, resizable at run time):
- classifiers: x → MUL, ADD (standardise) → FULLY_CONNECTED (+ReLU) per hidden
  layer → FULLY_CONNECTED → SOFTMAX → class probabilities [B, classes];
- k-means: x → MUL, ADD → SQUARED_DIFFERENCE with centroids [k, 1, n] → SUM
  over features → REDUCE_MIN over centroids → SQRT → anomaly score [B].

A model with a signal pipeline takes raw windows [B, window x channels]
instead of x, and its first ops compute x from them
(edgeloop.factory.signal_graph). Those ops' constants stay float32 whatever
the quantization: the features must match NumPy's to 1e-4.

int8 is weights-only: weight matrices and centroids are stored as int8 with a
symmetric per-channel scale (one per output row or centroid, zero point 0) and
a DEQUANTIZE op in front of their consumer. The interpreter dequantizes a
constant once when it prepares the graph, so inference runs in float32 with a
quarter of the weight bytes on the wire. Full-integer quantization would also
need activation ranges calibrated per model and gives nothing back for graphs
this small.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from edgeloop.factory.signal_graph import signal_features
from edgeloop.factory.tflite_writer import Graph, Quantization
from edgeloop.factory.training import TrainedModel

Quantize = Literal["none", "int8"]
# A logit this low gives probability exactly 0 in float32 softmax.
_ABSENT_CLASS_LOGIT = -1e4


# A fresh scale leaves this much room above the channel's largest weight, so a
# warm-started retrain whose largest weights grow (they are the ones training
# moves most) still fits it: a channel that outgrows its scale is re-quantized
# whole and every byte of it ships. 85 levels instead of 127; `make bench`
# measured 27% -> 16% median bytes per digits update, at equal accuracy.
INT8_HEADROOM = 1.5


def quantize_int8(
    weights: npt.NDArray[np.float64], axis: int = 0, reuse: tuple[float, ...] = ()
) -> tuple[npt.NDArray[np.int8], Quantization]:
    """Symmetric per-channel int8: one scale per slice along `axis`, zero point 0.

    `reuse` holds the scales of the model this one was warm-started from. A
    channel whose new weights still fit its old scale keeps it, so a weight
    that moved by less than half a step keeps its int8 value and the update's
    patch skips it; a channel that outgrew its scale gets a new one.
    """
    moved = np.moveaxis(np.asarray(weights, dtype=np.float64), axis, 0)
    peak = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scales = np.where(peak > 0, peak * INT8_HEADROOM / 127.0, 1.0).astype(np.float32)
    if len(reuse) == len(scales):
        old = np.asarray(reuse, dtype=np.float32)
        # Keep the old scale unless the channel no longer fits it, or it would
        # leave more than half of the int8 range unused.
        fits = (peak <= 127.0 * old.astype(np.float64)) & (peak >= 63.5 * old.astype(np.float64))
        scales = np.where(fits, old, scales)
    shape = (-1,) + (1,) * (moved.ndim - 1)
    q = np.clip(np.round(moved / scales.reshape(shape)), -127, 127).astype(np.int8)
    return (
        np.ascontiguousarray(np.moveaxis(q, 0, axis)),
        Quantization(
            scales=tuple(float(s) for s in scales), zero_points=(0,) * len(scales), axis=axis
        ),
    )


def _weights(
    graph: Graph,
    name: str,
    values: npt.NDArray[np.float64],
    quantize: Quantize,
    model: TrainedModel,
) -> int:
    if quantize == "none":
        return graph.constant(name, values.astype(np.float32))
    reuse = tuple(getattr(model, "int8_base", {}).get(name, ()))
    q, quant = quantize_int8(values, axis=0, reuse=reuse)
    stored = graph.quantized_constant(f"{name}/int8", q, quant)
    out = graph.activation(name, q.shape, batch_axis=None)
    graph.dequantize(stored, out)
    return out


def _standardise(graph: Graph, model: TrainedModel, x: int) -> int:
    n = model.n_features
    inv = 1.0 / model.scale
    scaled = graph.activation("standardise/mul", (1, n))
    graph.mul(x, graph.constant("standardise/inv_scale", inv), scaled)
    out = graph.activation("standardise/out", (1, n))
    graph.add(scaled, graph.constant("standardise/offset", -model.mean * inv), out)
    return out


def _output_layer(model: TrainedModel) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Final logits as (classes x inputs) weights and bias, in the declared class order."""
    est = model.estimator
    if model.kind == "mlp_classifier":
        w, b = est.coefs_[-1].T, est.intercepts_[-1]
    else:
        w, b = est.coef_, est.intercept_
    if w.shape[0] == 1:
        # Binary models emit one logit z for the second class; softmax([0, z])
        # is exactly [1 - sigmoid(z), sigmoid(z)], which is predict_proba.
        w = np.vstack([np.zeros_like(w), w])
        b = np.concatenate([[0.0], b])
    weights = np.zeros((len(model.classes), w.shape[1]))
    bias = np.full(len(model.classes), _ABSENT_CLASS_LOGIT)
    for row, cls in enumerate(est.classes_):
        target = model.classes.index(int(cls))
        weights[target], bias[target] = w[row], b[row]
    return weights, bias


def _classifier(graph: Graph, model: TrainedModel, x: int, quantize: Quantize) -> int:
    h = _standardise(graph, model, x)
    layers: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
    if model.kind == "mlp_classifier":
        if model.estimator.activation != "relu":
            raise ValueError(
                f"MLP activation {model.estimator.activation!r} is not exported; use relu"
            )
        layers = [
            (w.T, b)
            for w, b in zip(
                model.estimator.coefs_[:-1], model.estimator.intercepts_[:-1], strict=True
            )
        ]
    layers.append(_output_layer(model))
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        name = "logits" if last else f"hidden{i}"
        out = graph.activation(name, (1, w.shape[0]))
        graph.fully_connected(
            h,
            _weights(graph, f"{name}/weights", w, quantize, model),
            graph.constant(f"{name}/bias", b),
            out,
            relu=not last,
        )
        h = out
    probabilities = graph.activation("probabilities", (1, len(model.classes)))
    graph.softmax(h, probabilities)
    return probabilities


def _kmeans(graph: Graph, model: TrainedModel, x: int, quantize: Quantize) -> int:
    centroids = model.estimator.cluster_centers_
    k, n = centroids.shape
    xs = _standardise(graph, model, x)
    c = _weights(graph, "centroids", centroids.reshape(k, 1, n), quantize, model)
    diff = graph.activation("distance/squared_diff", (k, 1, n), batch_axis=1)
    graph.squared_difference(xs, c, diff)
    sq = graph.activation("distance/squared", (k, 1), batch_axis=1)
    graph.reduce_sum(diff, 2, sq)
    nearest = graph.activation("distance/nearest_squared", (1,))
    graph.reduce_min(sq, 0, nearest)
    score = graph.activation("anomaly_score", (1,))
    graph.sqrt(nearest, score)
    return score


def _graph(model: TrainedModel, quantize: Quantize) -> tuple[Graph, int, int]:
    graph = Graph(f"edgeloop_{model.kind}")
    if model.signal is not None:
        x = graph.input("window", model.input_width)
        features = signal_features(graph, model.signal, x)
    else:
        x = features = graph.input("features", model.n_features)
    if model.kind == "kmeans_anomaly":
        out = _kmeans(graph, model, features, quantize)
    else:
        out = _classifier(graph, model, features, quantize)
    return graph, x, out


def to_tflite(model: TrainedModel, quantize: Quantize = "none") -> bytes:
    """The model as TFLite flatbuffer bytes; the same model always gives the same bytes."""
    graph, x, out = _graph(model, quantize)
    return graph.serialize([x], [out], description=f"edgeloop {model.kind} quantize={quantize}")


def int8_scales(model: TrainedModel) -> dict[str, tuple[float, ...]]:
    """The per-channel scales `to_tflite(model, "int8")` writes, by weight name.

    A warm-started successor takes these as its `int8_base`.
    """
    graph, _, _ = _graph(model, "int8")
    return {name.removesuffix("/int8"): q.scales for name, q in graph.quantizations().items()}
