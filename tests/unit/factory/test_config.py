"""Model configs are refused with the bad key named, before any data is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeloop.factory.config import ConfigError, KMeansParams, MLPParams, load_config, parse_config
from edgeloop.factory.release import upload_request


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model": {"name": "vibration", "kind": "kmeans_anomaly", "n_features": 8},
        "train": {"params": {"n_clusters": 4}},
        "gate": {"metric": "silhouette", "threshold": 0.4},
        "export": {"quantize": "int8"},
    }
    for section, values in overrides.items():
        doc[section] = {**doc.get(section, {}), **values}
    return doc


def test_a_complete_toml_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "digits.toml"
    path.write_text(
        '[model]\nname = "digits"\nkind = "mlp_classifier"\nn_features = 64\n'
        "classes = [0, 1, 2]\n[train]\nseed = 7\nparams = { hidden_layer_sizes = [16, 8] }\n"
        '[gate]\nmetric = "f1_macro"\nthreshold = 0.9\nmin_improvement = 0.01\n'
        '[export]\nquantize = "none"\n'
    )
    config = load_config(path)
    params = config.estimator_params()
    assert isinstance(params, MLPParams)
    assert params.hidden_layer_sizes == (16, 8)
    assert config.model.classes == (0, 1, 2)
    assert config.train.seed == 7


def test_kmeans_params_default_what_is_not_given() -> None:
    params = parse_config(_doc()).estimator_params()
    assert isinstance(params, KMeansParams)
    assert (params.n_clusters, params.score_quantile) == (4, 0.99)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"model": {"colour": "red"}}, "model.colour: unknown key"),
        ({"gate": {"treshold": 0.5}}, "gate.treshold: unknown key"),
        ({"model": {"kind": "random_forest"}}, "model.kind"),
        ({"model": {"n_features": 0}}, "model.n_features"),
        ({"model": {"n_features": "8"}}, "model.n_features"),
        ({"model": {"name": "Bad/Name"}}, "model name 'Bad/Name'"),
        ({"gate": {"metric": "accuracy"}}, "does not apply to kmeans_anomaly"),
        ({"gate": {"threshold": 1.5}}, "gate.threshold 1.5 is outside"),
        ({"gate": {"min_improvement": -0.1}}, "gate.min_improvement"),
        ({"export": {"quantize": "int4"}}, "export.quantize"),
        ({"train": {"holdout": 0.9}}, "train.holdout"),
        ({"train": {"params": {"n_clusters": 1}}}, "train.params.n_clusters"),
        (
            {"train": {"params": {"n_clusters": 4, "n_clustres": 3}}},
            "train.params.n_clustres: unknown key",
        ),
        ({"train": {"params": {"score_quantile": 1.0}}}, "train.params.score_quantile"),
        ({"rollout": {"abort_share": 1.5}}, "rollout.abort_share"),
        ({"rollout": {"healthy_to_advance": 0}}, "rollout.healthy_to_advance"),
        ({"rollout": {"stages": [10, 50]}}, "must end at 100"),
        ({"rollout": {"stages": [50, 10, 100]}}, "must increase strictly"),
        ({"rollout": {"ring": "canary"}}, "rollout.ring: unknown key"),
        ({"collect": {"goal": 2.0}}, "collect.goal 2.0 is outside"),
        ({"collect": {"goal": 0.5, "sample_rate": 0.0}}, "collect.sample_rate"),
        ({"collect": {"sample_rate": 0.5}}, "collect.goal"),
    ],
)
def test_bad_config_names_the_key(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(".", r"\.")):
        parse_config(_doc(**overrides))


def test_rollout_settings_default_to_the_plan_and_read_from_the_config() -> None:
    assert parse_config(_doc()).rollout.stages == (1, 10, 50, 100)
    rollout = parse_config(_doc(rollout={"stages": [5, 100], "healthy_to_advance": 2})).rollout
    assert (rollout.stages, rollout.healthy_to_advance) == ((5, 100), 2)


def test_feature_names_must_match_the_width() -> None:
    with pytest.raises(ConfigError, match="feature_names has 2 names but n_features is 8"):
        parse_config(_doc(model={"feature_names": ["a", "b"]}))


def test_unreadable_toml_is_refused_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[model\nname=")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_the_shipped_model_configs_load() -> None:
    shipped = sorted((Path(__file__).resolve().parents[3] / "models").glob("*.toml"))
    assert [p.stem for p in shipped] == ["digits", "vibration"]
    for path in shipped:
        assert load_config(path).model.name == path.stem


def test_a_version_under_its_collect_goal_asks_its_devices_for_more_data() -> None:
    config = parse_config(_doc(collect={"goal": 0.6, "sample_rate": 0.4}))
    assert upload_request(config, {"silhouette": 0.5}) == 0.4
    assert upload_request(config, {"silhouette": 0.6}) is None
    assert upload_request(config, {}) is None
    assert upload_request(parse_config(_doc()), {"silhouette": 0.1}) is None
