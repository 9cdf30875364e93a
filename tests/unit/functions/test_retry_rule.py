"""Which queue records come back after a batch whose retrains partly failed."""

from __future__ import annotations

from functions.retrain.logic import records_to_retry

MODELS_OF_RECORD = {
    "m-1": {"digits"},
    "m-2": {"vibration"},
    "m-3": {"digits", "vibration"},
    "m-4": set(),  # S3's test event: no uploads
}


def test_no_failed_retrain_retries_only_the_records_that_failed_themselves() -> None:
    assert records_to_retry(MODELS_OF_RECORD, set(), {"poison"}) == {"poison"}


def test_a_failed_model_retries_every_record_that_fed_it() -> None:
    assert records_to_retry(MODELS_OF_RECORD, {"digits"}, set()) == {"m-1", "m-3"}


def test_a_record_feeding_one_failed_and_one_trained_model_is_retried() -> None:
    assert records_to_retry(MODELS_OF_RECORD, {"vibration"}, set()) == {"m-2", "m-3"}


def test_records_that_failed_themselves_stay_failed_alongside_the_retried_ones() -> None:
    assert records_to_retry(MODELS_OF_RECORD, {"digits", "vibration"}, {"poison"}) == {
        "m-1",
        "m-2",
        "m-3",
        "poison",
    }


def test_a_record_with_no_uploads_is_never_retried_for_a_model() -> None:
    assert "m-4" not in records_to_retry(MODELS_OF_RECORD, {"digits", "vibration"}, set())
