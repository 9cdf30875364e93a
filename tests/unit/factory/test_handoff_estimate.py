"""The hand-off estimate, limits and what crosses to a training job (config, manifest)."""

from __future__ import annotations

import json

import pytest

from edgeloop.factory.config import ConfigError
from edgeloop.factory.handoff import (
    IN_MEMORY_COPIES,
    LIBRARIES_BYTES,
    HandOffError,
    Limits,
    config_from_hyperparameters,
    config_hyperparameters,
    estimate_run,
    manifest_body,
    manifest_keys,
)
from edgeloop.factory.stream import trains_streamed
from tests.factories import digits_config, kmeans_config, signal_config

MiB = 2**20


def test_a_classifier_is_estimated_to_hold_its_decoded_rows_several_times() -> None:
    config = digits_config()
    estimate = estimate_run(config, 100 * MiB)
    assert estimate.memory_bytes == LIBRARIES_BYTES + IN_MEMORY_COPIES * 100 * MiB
    # 64 features and a label, 8 bytes each.
    assert estimate.rows == 100 * MiB // (8 * 65)


def test_streamed_kmeans_holds_one_upload_whatever_the_data() -> None:
    config = kmeans_config()
    small = estimate_run(config, 10 * MiB, streamed=True, largest_upload=MiB)
    large = estimate_run(config, 100 * 1024 * MiB, streamed=True, largest_upload=MiB)
    whole = estimate_run(config, 100 * 1024 * MiB)
    assert small.memory_bytes == large.memory_bytes == LIBRARIES_BYTES + IN_MEMORY_COPIES * MiB
    assert whole.memory_bytes == LIBRARIES_BYTES + IN_MEMORY_COPIES * 100 * 1024 * MiB
    assert large.seconds == pytest.approx(10_240 * small.seconds, rel=1e-3)


def test_models_stream_on_stored_bytes_above_the_threshold_unless_fed_raw_windows() -> None:
    assert trains_streamed(kmeans_config(), 257 * MiB, 256 * MiB)
    assert not trains_streamed(kmeans_config(), 256 * MiB, 256 * MiB)
    assert trains_streamed(digits_config(), 257 * MiB, 256 * MiB)
    assert trains_streamed(digits_config("logistic_classifier"), 257 * MiB, 256 * MiB)
    assert not trains_streamed(digits_config(), 256 * MiB, 256 * MiB)
    assert not trains_streamed(signal_config("mlp_classifier"), 10 * 1024 * MiB, 256 * MiB)
    assert not trains_streamed(signal_config(), 10 * 1024 * MiB, 256 * MiB)


def test_a_wider_network_or_more_epochs_is_estimated_longer() -> None:
    narrow = estimate_run(digits_config(hidden_layer_sizes=[8]), 64 * MiB)
    wide = estimate_run(digits_config(hidden_layer_sizes=[256]), 64 * MiB)
    longer = estimate_run(digits_config(hidden_layer_sizes=[8], max_iter=3000), 64 * MiB)
    assert wide.seconds > 10 * narrow.seconds
    assert longer.seconds == pytest.approx(10 * narrow.seconds)


def test_the_bundled_digits_fit_well_inside_the_default_limits() -> None:
    # The 1,797 digits as an upload: 1,797 rows x 65 columns x 8 bytes.
    estimate = estimate_run(digits_config(), 1797 * 65 * 8)
    assert Limits(2 * 1024 * MiB, 600.0).exceeded(estimate) is None


def test_ten_million_rows_of_a_classifier_exceed_both_limits_and_say_so() -> None:
    estimate = estimate_run(digits_config(), 10_000_000 * 65 * 8)
    why = Limits(2 * 1024 * MiB, 600.0).exceeded(estimate)
    assert why is not None
    assert "MiB of memory" in why
    assert "s of training" in why


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Limits(0, 600.0)


def test_the_config_round_trips_through_hyperparameters() -> None:
    config = digits_config(hidden_layer_sizes=[16, 8], quantize="int8")
    hyperparameters = config_hyperparameters(config)
    assert all(isinstance(v, str) and len(v) <= 2500 for v in hyperparameters.values())
    assert config_from_hyperparameters(hyperparameters) == config


def test_a_signal_model_keeps_its_signal_section_through_hyperparameters() -> None:
    config = signal_config("mlp_classifier")
    assert config_from_hyperparameters(config_hyperparameters(config)) == config


def test_a_config_section_past_sagemakers_limit_is_refused_before_starting() -> None:
    config = digits_config(hidden_layer_sizes=[1] * 1000)
    with pytest.raises(HandOffError, match=r"config\.train .* 2500"):
        config_hyperparameters(config)


def test_bad_hyperparameters_are_typed_errors() -> None:
    with pytest.raises(HandOffError, match=r"no config\.model"):
        config_from_hyperparameters({})
    with pytest.raises(HandOffError, match="not JSON"):
        config_from_hyperparameters({"config.model": "{"})
    good = config_hyperparameters(digits_config())
    with pytest.raises(ConfigError):
        config_from_hyperparameters({**good, "config.gate": json.dumps({"metric": "speed"})})


def test_a_manifest_names_exactly_the_chosen_objects() -> None:
    keys = ["data/digits/pump-7/1.npz", "data/digits/pump-8/2.npz"]
    body = manifest_body("uploads", keys)
    assert json.loads(body) == [{"prefix": "s3://uploads/"}, *keys]
    assert manifest_keys(body) == ("s3://uploads/", keys)


def test_an_empty_or_malformed_manifest_is_refused() -> None:
    with pytest.raises(HandOffError, match="at least one"):
        manifest_body("uploads", [])
    with pytest.raises(HandOffError, match="not a SageMaker manifest"):
        manifest_keys(b'{"prefix": "s3://x/"}')
    with pytest.raises(HandOffError, match="strings"):
        manifest_keys(b'[{"prefix": "s3://x/"}, 3]')
