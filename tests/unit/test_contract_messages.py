"""Every device-cloud message is a contract type: parsed beside its serialiser, strictly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgeloop.contract import (
    AlarmEvent,
    AlarmKind,
    Fields,
    Health,
    StatusRejected,
    StatusReport,
    Step,
    UploadGrant,
    UploadMessageInvalid,
    UploadRefusal,
    UploadRequest,
    format_time,
    new_batch_id,
    parse_time,
    parse_upload_answer,
    time_ordered_id,
    utc_now,
)
from edgeloop.contract.events import EventRejected
from edgeloop.contract.uploads import BATCH_ID


class Refused(ValueError):
    pass


def test_the_reader_names_the_full_path_of_a_bad_field() -> None:
    f = Fields({"a": {"b": [{"c": "x"}]}}, "doc", Refused)
    with pytest.raises(Refused, match=r"doc\.a\.b\[0\]\.c must be an integer >= 0"):
        f.child("a").children("b")[0].integer("c")


def test_the_reader_refuses_unknown_keys_when_told_which_are_known() -> None:
    with pytest.raises(Refused, match=r"cfg\.tpyo: unknown key \(known: a, b\)"):
        Fields({"a": 1, "tpyo": 2}, "cfg", Refused, known={"a", "b"})


@pytest.mark.parametrize("value", [True, "1", 1.5, None])
def test_the_reader_coerces_nothing_into_an_integer(value: Any) -> None:
    with pytest.raises(Refused):
        Fields({"n": value}, "doc", Refused).integer("n")


def test_the_reader_takes_enum_values_and_lists_the_choices() -> None:
    f = Fields({"health": "degraded", "bad": "superb"}, "doc", Refused)
    assert f.choice("health", Health) is Health.DEGRADED
    with pytest.raises(
        Refused, match=r"doc\.bad 'superb' is not one of healthy, degraded, failed, no_model"
    ):
        f.choice("bad", Health)


def test_an_upload_request_round_trips_through_its_bytes() -> None:
    request = UploadRequest("r-1", "digits", "application/x-npz", 4096, new_batch_id())
    assert UploadRequest.from_json(request.to_bytes()) == request
    assert request.extension == "npz"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": 0}, "size must be an integer >= 1"),
        ({"content_type": "application/zip"}, "is not one of"),
        ({"batch_id": "20260101-x"}, "batch_id must be 20 digits"),
        ({"request_id": "a/b"}, "request_id must be 1-64 letters"),
    ],
)
def test_a_bad_upload_request_is_refused_with_the_field_named(
    change: dict[str, Any], message: str
) -> None:
    doc = {**UploadRequest("r-1", "digits", "text/csv", 10).to_json(), **change}
    with pytest.raises(UploadMessageInvalid, match=message):
        UploadRequest.from_json(doc)


def test_an_upload_request_over_the_message_cap_is_refused_before_parsing() -> None:
    with pytest.raises(UploadMessageInvalid, match="over"):
        UploadRequest.from_json(b"{" + b" " * 20_000 + b"}")


def test_a_grant_and_a_refusal_parse_back_to_what_was_sent() -> None:
    grant = UploadGrant("r-1", "https://s3/x", {"key": "data/a/b/c.npz"}, "data/a/b/c.npz", 10, "t")
    refusal = UploadRefusal("r-2", "too_large", "split the batch")
    assert parse_upload_answer(grant.to_bytes()) == grant
    assert parse_upload_answer(refusal.to_bytes()) == refusal


def test_batch_ids_are_time_ordered_and_match_their_pattern() -> None:
    first, second = time_ordered_id(1_000_000_000), time_ordered_id(2_000_000_000)
    assert first < second
    assert BATCH_ID.fullmatch(new_batch_id())


def test_a_status_report_round_trips_with_its_enums() -> None:
    report = StatusReport(
        model="vibration",
        version=3,
        health=Health.DEGRADED,
        step=Step.ROLLED_BACK,
        target_version=4,
    )
    parsed = StatusReport.from_bytes(report.to_bytes())
    assert parsed == report
    assert parsed.step.failed
    assert not Step.SUCCEEDED.failed
    assert parsed.outcome == "failed"
    assert json.loads(report.to_bytes())["health"] == "degraded"


def test_a_status_report_with_an_unknown_step_is_rejected() -> None:
    doc = {"model": "vibration", "version": 1, "health": "healthy", "step": "dancing"}
    with pytest.raises(StatusRejected, match=r"status\.step 'dancing' is not one of"):
        StatusReport.from_json(doc)


def test_an_alarm_event_round_trips_and_is_stamped_to_the_millisecond() -> None:
    event = AlarmEvent.now("vibration", 2, AlarmKind.ANOMALY, 3.14159265)
    assert AlarmEvent.from_json(json.loads(event.to_bytes())) == event
    assert len(event.at) == len("2026-01-31T12:00:00.123Z")
    with pytest.raises(EventRejected):
        AlarmEvent.from_json({**event.to_json(), "kind": "fire"})


def test_times_have_one_format_both_ways() -> None:
    now = utc_now().replace(microsecond=0)
    assert parse_time(format_time(now)) == now


def test_an_integer_too_large_for_a_float_is_the_typed_refusal() -> None:
    doc = {"model": "vibration", "version": 1, "health": "healthy", "drift": {"a": 10**400}}
    with pytest.raises(StatusRejected, match=r"status\.drift\.a must be a finite number"):
        StatusReport.from_json(doc)
    with pytest.raises(StatusRejected):
        StatusReport.from_bytes(
            b'{"model": "vibration", "health": "healthy", "drift": {"a": 1' + b"0" * 400 + b"}}"
        )
