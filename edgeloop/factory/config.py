"""Model configs: one TOML file per model, checked strictly when loaded.

A data scientist writes which algorithm, which metric and which threshold; a
typo or a bad value is refused with the key named, before any data is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeloop.contract.stages import DEFAULT_PERCENTAGES, check_percentages
from edgeloop.contract.topics import check_model_name
from edgeloop.factory.signal import SignalSection, check_signal
from edgeloop.tomlfile import read_toml

Kind = Literal["kmeans_anomaly", "mlp_classifier", "logistic_classifier"]
CLASSIFIERS: tuple[Kind, ...] = ("mlp_classifier", "logistic_classifier")
Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
# Data-bucket prefixes that hold what devices uploaded (quarantine/ keeps the bad ones).
DEVICE_PREFIXES = ("data", "quarantine")


class ConfigError(ValueError):
    """A model config that cannot be used, with every bad key named."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelSection(_Strict):
    name: str
    kind: Kind
    n_features: Annotated[int, Field(ge=1, le=65536)]
    label_column: str = "label"
    feature_names: tuple[str, ...] = ()
    # Declaring the classes keeps every version's output layout the same even
    # when an early batch lacks a class; without it they come from the data.
    classes: tuple[int, ...] = ()
    # The largest magnitude a feature value may have. A batch with a larger one is
    # quarantined when it is decoded: 1e308 is finite, and standardising it
    # overflows. Set it to what the sensors can really read; the default only
    # keeps every value far from float64's and float32's limits.
    max_abs_value: Annotated[float, Field(gt=0.0)] = 1e9

    @model_validator(mode="after")
    def _names_fit(self) -> ModelSection:
        check_model_name(self.name)
        if self.feature_names and len(self.feature_names) != self.n_features:
            raise ValueError(
                f"feature_names has {len(self.feature_names)} names but n_features is "
                f"{self.n_features}"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes has duplicates")
        return self


class KMeansParams(_Strict):
    n_clusters: Annotated[int, Field(ge=2, le=256)] = 8
    batch_size: Annotated[int, Field(ge=16)] = 1024
    max_iter: Annotated[int, Field(ge=1)] = 100
    n_init: Annotated[int, Field(ge=1)] = 3
    # Alarm threshold on the distance to the nearest centroid, calibrated on the
    # training scores: "quantile" takes their score_quantile; "mad" takes
    # median + mad_k x 1.4826 x MAD, which anomalies in the training data barely
    # move (a quantile lands among them when they are more than 1 - quantile).
    threshold_method: Literal["quantile", "mad"] = "quantile"
    score_quantile: Probability = 0.99
    mad_k: Annotated[float, Field(gt=0.0)] = 5.0
    # silhouette_score is O(n^2); it is computed on at most this many rows.
    silhouette_sample: Annotated[int, Field(ge=50, le=20000)] = 2000


class MLPParams(_Strict):
    hidden_layer_sizes: tuple[Annotated[int, Field(ge=1, le=4096)], ...] = (32,)
    alpha: Annotated[float, Field(ge=0.0)] = 1e-4
    learning_rate_init: Annotated[float, Field(gt=0.0)] = 1e-3
    max_iter: Annotated[int, Field(ge=1)] = 300
    # Training rounds on warm start; fewer moves the weights less (smaller patches).
    warm_max_iter: Annotated[int, Field(ge=1)] = 100


class LogisticParams(_Strict):
    C: Annotated[float, Field(gt=0.0)] = 1.0
    max_iter: Annotated[int, Field(ge=1)] = 1000


class TrainSection(_Strict):
    seed: Annotated[int, Field(ge=0)] = 0
    # Share of rows held out for the gate. The split is by a hash of each row,
    # so a row stays on its side as data accumulates and the champion never
    # trained on the rows it is judged on.
    holdout: Annotated[float, Field(ge=0.05, le=0.5)] = 0.2
    warm_start: bool = True
    # Refit the scaler (and start cold) once the training rows reach this many
    # times the rows the champion's scaler was fit on; 0 never refits.
    refit_scaler_growth: Annotated[float, Field(ge=0.0)] = 4.0
    # When warm-starting, also fit from scratch on the same rows and keep that
    # fit if it scores higher on the held-out rows (edgeloop.factory.run._fit).
    cold_challenger: bool = True
    # No device may hold more than this share of a run's rows; a device over it
    # keeps a seeded random subset. The cap is max(share, 1 / devices), so a
    # fleet of one device (or the CLI) trains on everything and a fleet of
    # fewer than 1 / share devices is evened out. A quarter keeps one device
    # from outvoting the rest (three quarters of every run come from others)
    # while a busy honest device still contributes more than a quiet one.
    max_device_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25
    # Classifiers only, from three devices up (edgeloop.factory.screening): a
    # device whose labels agree with a model that never saw its rows far less
    # than the fleet's do is left out of the run, training and held-out rows
    # alike. Far less: below the fleet's median by more than screen_k robust
    # standard deviations (1.4826 x MAD) and by at least screen_min_gap. The
    # gap keeps a fleet that agrees almost perfectly (MAD near 0) from
    # screening a device for a few wrong rows.
    screen_devices: bool = True
    screen_k: Annotated[float, Field(ge=0.0)] = 3.0
    screen_min_gap: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    params: dict[str, Any] = Field(default_factory=dict)


class GateSection(_Strict):
    metric: Literal["silhouette", "accuracy", "f1_macro"]
    threshold: float
    min_improvement: Annotated[float, Field(ge=0.0)] = 0.0
    min_rows: Annotated[int, Field(ge=1)] = 10
    # A metric on a handful of held-out rows says little: silhouette on four
    # points can be anything. Fewer held-out rows than this refuse promotion.
    min_holdout_rows: Annotated[int, Field(ge=1)] = 20
    # For accuracy: judge the one-sided lower confidence bound (Wilson) at this
    # level, not the point estimate, so a lucky score on a few held-out rows
    # does not ship. 0 judges the point estimate.
    confidence: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    # "Beats the champion" means significantly: for classifiers a one-sided
    # paired sign test (McNemar) at this level on the held-out rows exactly one
    # of the two gets right; for silhouette a margin. A tie never ships.
    significance: Annotated[float, Field(gt=0.0, le=0.5)] = 0.05
    silhouette_margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.02
    # A prefix in the data bucket only the platform team writes (for example
    # "reference/digits/"). Every run is evaluated on it; a candidate below the
    # champion's reference figure by more than reference_tolerance (or, with
    # no champion, below the threshold there) is refused.
    reference: str | None = None
    reference_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01

    @model_validator(mode="after")
    def _reference_is_not_device_data(self) -> GateSection:
        ref = self.reference
        if ref is None:
            return self
        if not ref or ref.startswith("/") or ".." in ref.split("/") or not ref.endswith("/"):
            # A trailing slash, or "reference/digits" would also read reference/digits2/.
            raise ValueError(
                f"gate.reference {ref!r} must be a relative prefix ending in '/', like "
                "reference/digits/"
            )
        if any(
            prefix.startswith(ref) or ref.startswith(prefix)
            for prefix in (f"{p}/" for p in DEVICE_PREFIXES)
        ):
            raise ValueError(
                f"gate.reference {ref!r} is under {ref.split('/')[0]}/, which holds device "
                "uploads; the reference "
                "set must live where only the platform team writes, e.g. reference/{model}/"
            )
        return self


class ExportSection(_Strict):
    quantize: Literal["none", "int8"] = "none"
    # Update sparsification (edgeloop.factory.sparsify): a warm-started model
    # keeps the champion's value for every weight whose change is not needed to
    # agree with the dense retrain on all but this share of the training and
    # held-out rows. Unset: ship every change.
    sparsify_tolerance: Annotated[float, Field(ge=0.0, le=0.05)] | None = None


class RolloutSection(_Strict):
    """How a version reaches the fleet: named canaries, then growing shares of the devices."""

    # Percentages of the fleet each stage covers, after the named canaries.
    stages: tuple[int, ...] = DEFAULT_PERCENTAGES
    # A stage advances once this many of its devices installed the version, or
    # all of them when it has fewer devices that ever reported.
    healthy_to_advance: Annotated[int, Field(ge=1, le=100_000)] = 5
    # How long a stage may take before the rollout stalls and says why.
    window_minutes: Annotated[float, Field(gt=0.0, le=7 * 24 * 60)] = 60.0
    # Abort when more than this share of a stage's outcomes are failures ...
    abort_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2
    # ... once the stage has this many outcomes (or all its devices reported). Ten
    # keeps a 1% failure rate from aborting a stage on one unlucky early report.
    abort_min_reports: Annotated[int, Field(ge=1)] = 10

    @model_validator(mode="after")
    def _stages(self) -> RolloutSection:
        check_percentages(self.stages)
        return self


class CollectSection(_Strict):
    """What the model's devices are asked to upload while a version is under its goal.

    Once a model runs, a device uploads its alarms (a classifier's low-confidence
    samples among them) and a small share of the rest (`upload.sample_rate`). That
    is right for a good model and starves one that is still learning: a classifier
    shipped on a tenth of the data would wait long for the rows that improve it. A
    version whose gate metric is under `goal` asks its devices, in its signed spec,
    for `sample_rate` instead; the next version over the goal stops asking."""

    goal: float
    sample_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5


class ModelConfig(_Strict):
    model: ModelSection
    train: TrainSection = TrainSection()
    gate: GateSection
    export: ExportSection = ExportSection()
    rollout: RolloutSection = RolloutSection()
    # Raw windows in: features computed from each window, in training and in the graph.
    signal: SignalSection | None = None
    collect: CollectSection | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        kind, metric = self.model.kind, self.gate.metric
        if kind == "kmeans_anomaly" and metric != "silhouette":
            raise ValueError(
                f"gate.metric {metric!r} does not apply to kmeans_anomaly; use silhouette"
            )
        if kind in CLASSIFIERS and metric == "silhouette":
            raise ValueError(
                f"gate.metric silhouette does not apply to {kind}; use accuracy or f1_macro"
            )
        low, high = (-1.0, 1.0) if metric == "silhouette" else (0.0, 1.0)
        if not low <= self.gate.threshold <= high:
            raise ValueError(f"gate.threshold {self.gate.threshold} is outside [{low}, {high}]")
        if self.collect is not None and not low <= self.collect.goal <= high:
            raise ValueError(
                f"collect.goal {self.collect.goal} is outside [{low}, {high}] ({metric})"
            )
        if self.gate.confidence and metric != "accuracy":
            raise ValueError(f"gate.confidence applies to accuracy only, not {metric}")
        if kind == "kmeans_anomaly" and self.model.classes:
            raise ValueError("model.classes applies to classifiers only")
        if self.signal is not None:
            self._check_signal(self.signal)
        return self

    def _check_signal(self, signal: SignalSection) -> None:
        check_signal(signal)
        names = signal.feature_names()
        if self.model.feature_names:
            raise ValueError(
                "model.feature_names: a model with a [signal] section is fed raw windows and "
                "its features are named by the pipeline; leave model.feature_names out"
            )
        if self.model.n_features != len(names):
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ValueError(
                f"model.n_features: the signal pipeline computes {len(names)} features "
                f"({shown}), not {self.model.n_features}"
            )

    @property
    def input_width(self) -> int:
        """Values in one input row: features, or a raw window's samples x channels."""
        return self.signal.width if self.signal is not None else self.model.n_features

    @property
    def is_classifier(self) -> bool:
        return self.model.kind in CLASSIFIERS

    def estimator_params(self) -> KMeansParams | MLPParams | LogisticParams:
        schemas: dict[str, type[KMeansParams] | type[MLPParams] | type[LogisticParams]] = {
            "kmeans_anomaly": KMeansParams,
            "mlp_classifier": MLPParams,
            "logistic_classifier": LogisticParams,
        }
        schema = schemas[self.model.kind]
        try:
            return schema.model_validate(self.train.params)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, prefix="train.params")) from exc

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _describe(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against the docs)"
        lines.append(f"{key}: {message}" if key else message)
    return "invalid model config: " + "; ".join(lines)


def parse_config(doc: dict[str, Any], source: str = "config") -> ModelConfig:
    # TOML arrays arrive as lists; the strict model wants tuples for frozen fields.
    doc = _lists_to_tuples(doc)
    try:
        config = ModelConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from exc
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        config.estimator_params()  # refuse bad estimator parameters now, not mid-training
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return config


def _lists_to_tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    return value


def load_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    return parse_config(read_toml(path, ConfigError, "model config"), str(path))
