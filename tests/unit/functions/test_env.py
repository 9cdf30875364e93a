"""Each function's environment is checked at cold start, with the bad variable named."""

from __future__ import annotations

import pytest

from functions.common.env import EnvError, PresignEnv, RetrainEnv, RolloutEnv, load_env

RETRAIN = {
    "DATA_BUCKET": "data-bucket",
    "ARTIFACT_BUCKET": "artifact-bucket",
    "REGISTRY_BUCKET": "registry-bucket",
    "REGISTRY_TABLE": "registry",
    "IDEMPOTENCY_TABLE": "idempotency",
    "SIGNING_KEY_ID": "alias/edgeloop-online",
    "MODEL_CONFIG_DIR": "/var/task/models",
    "FLEET_TABLE": "fleet",
    "CANARY_GROUP": "edgeloop-canaries",
}


def test_a_complete_environment_loads_with_defaults() -> None:
    env = load_env(RetrainEnv, RETRAIN)
    assert env.data_bucket == "data-bucket"
    assert env.delta_bases == 3


def test_values_are_parsed_from_strings() -> None:
    env = load_env(RetrainEnv, {**RETRAIN, "DELTA_BASES": "5"})
    assert env.delta_bases == 5


def test_the_functions_that_move_rollouts_need_the_online_key() -> None:
    """Status and the schedule sign rollout pointers and timestamps into the repository."""
    rollout = {k: v for k, v in RETRAIN.items() if k not in ("DATA_BUCKET", "IDEMPOTENCY_TABLE")}
    del rollout["SIGNING_KEY_ID"]
    with pytest.raises(EnvError, match="SIGNING_KEY_ID: Field required"):
        load_env(RolloutEnv, rollout)


@pytest.mark.parametrize("missing", sorted(RETRAIN))
def test_a_missing_variable_is_named(missing: str) -> None:
    environ = {k: v for k, v in RETRAIN.items() if k != missing}
    with pytest.raises(EnvError, match=f"RetrainEnv is misconfigured: {missing}: Field required"):
        load_env(RetrainEnv, environ)


@pytest.mark.parametrize(
    ("schema", "environ", "named"),
    [
        (RetrainEnv, {**RETRAIN, "DELTA_BASES": "-1"}, "DELTA_BASES"),
        (RetrainEnv, {**RETRAIN, "DELTA_BASES": "three"}, "DELTA_BASES"),
        (RetrainEnv, {**RETRAIN, "DATA_BUCKET": ""}, "DATA_BUCKET"),
        (
            PresignEnv,
            {"DATA_BUCKET": "b" * 5, "MODEL_CONFIG_DIR": "/m", "URL_TTL_SECONDS": "86400"},
            "URL_TTL_SECONDS",
        ),
        (
            PresignEnv,
            {"DATA_BUCKET": "b" * 5, "MODEL_CONFIG_DIR": "/m", "MAX_UPLOAD_BYTES": "0"},
            "MAX_UPLOAD_BYTES",
        ),
        (
            RolloutEnv,
            {
                "MODEL_CONFIG_DIR": "/m",
                "REGISTRY_TABLE": "reg",
                "FLEET_TABLE": "fleet",
                "ARTIFACT_BUCKET": "art",
                "CANARY_GROUP": "",
            },
            "CANARY_GROUP",
        ),
    ],
)
def test_a_bad_value_is_named(
    schema: type[RetrainEnv | PresignEnv | RolloutEnv], environ: dict[str, str], named: str
) -> None:
    with pytest.raises(EnvError, match=named):
        load_env(schema, environ)
