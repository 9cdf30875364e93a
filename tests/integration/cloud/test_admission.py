"""The admission allow-list on moto's DynamoDB: exact serials, patterns, and what admitted whom."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from functions.common.admission import (
    PATTERNS_KEY,
    Admission,
    AdmissionError,
    AdmissionTable,
    NotOnTheList,
    admission_table_spec,
)


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def dynamodb(moto_endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1")


@pytest.fixture
def table(dynamodb: Any) -> AdmissionTable:
    name = f"admissions-{uuid.uuid4().hex[:6]}"
    dynamodb.create_table(**admission_table_spec(name))
    return AdmissionTable(dynamodb, name, clock=_Clock())


def test_an_allowed_serial_is_admitted_with_its_model_and_the_rule_that_admitted_it(
    table: AdmissionTable,
) -> None:
    table.allow("pump-0001", "digits")
    table.allow("pump-0002", "digits", canary=True)
    assert table.lookup("pump-0001") == Admission("digits", False, "serial pump-0001")
    assert table.lookup("pump-0002") == Admission("digits", True, "serial pump-0002")
    assert table.lookup("pump-0003") is None


def test_a_pattern_admits_whole_serials_only(table: AdmissionTable) -> None:
    table.allow_pattern(r"pump-\d{4}", "vibration")
    assert table.lookup("pump-0042") == Admission("vibration", False, r"pattern pump-\d{4}")
    # fullmatch: a serial that merely contains a match is not admitted.
    assert table.lookup("pump-00420") is None
    assert table.lookup("xpump-0042") is None


def test_an_exact_serial_wins_over_a_pattern_and_the_first_pattern_added_over_later_ones(
    table: AdmissionTable,
) -> None:
    table.allow_pattern(r"pump-.*", "vibration")
    table.allow_pattern(r"pump-\d+", "digits", canary=True)
    table.allow("pump-7", "digits")
    assert table.lookup("pump-7") == Admission("digits", False, "serial pump-7")
    assert table.lookup("pump-8") == Admission("vibration", False, "pattern pump-.*")
    # Replacing the first pattern's model keeps its place.
    table.allow_pattern(r"pump-.*", "anomaly")
    assert table.lookup("pump-8") == Admission("anomaly", False, "pattern pump-.*")


def test_a_lookup_reads_at_most_two_items(table: AdmissionTable, dynamodb: Any) -> None:
    for i in range(20):
        table.allow_pattern(rf"batch{i}-\d+", "digits")
    calls: list[str] = []
    dynamodb.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    assert table.lookup("batch19-5") is not None
    assert calls == ["GetItem", "GetItem"]


def test_disallow_removes_a_serial_or_a_pattern_and_says_when_neither_was_there(
    table: AdmissionTable,
) -> None:
    table.allow("pump-1", "digits")
    table.allow_pattern(r"pump-\d", "vibration")
    [removed] = table.disallow("pump-1")
    assert (removed.kind, removed.value, removed.model) == ("serial", "pump-1", "digits")
    assert table.lookup("pump-1") == Admission("vibration", False, r"pattern pump-\d")
    [removed] = table.disallow(r"pump-\d")
    assert removed.kind == "pattern"
    assert table.lookup("pump-1") is None
    with pytest.raises(NotOnTheList, match="edgeloop fleet allowed"):
        table.disallow("pump-1")
    with pytest.raises(NotOnTheList):
        table.disallow(r"never-\d")


def test_entries_lists_serials_then_patterns_in_the_order_they_apply(
    table: AdmissionTable,
) -> None:
    table.allow("pump-b", "digits")
    table.allow_pattern("z.*", "digits")
    table.allow("pump-a", "vibration", canary=True)
    table.allow_pattern("a.*", "digits")
    listed = [(e.kind, e.value, e.model, e.canary) for e in table.entries()]
    assert listed == [
        ("serial", "pump-a", "vibration", True),
        ("serial", "pump-b", "digits", False),
        ("pattern", "z.*", "digits", False),
        ("pattern", "a.*", "digits", False),
    ]
    assert all(e.added.endswith("Z") for e in table.entries())
    assert PATTERNS_KEY not in {e.value for e in table.entries()}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.allow("pump 1", "digits"), "cannot name a thing"),
        (lambda t: t.allow("pump-1", "Digits!"), "model name 'Digits!' is not valid"),
        (lambda t: t.allow_pattern("pump-(", "digits"), "not a Python regular expression"),
        (lambda t: t.allow_pattern("", "digits"), "write 1-512"),
        (lambda t: t.allow_pattern("pump-.*", "no such/model"), "model name"),
    ],
)
def test_bad_input_is_refused_with_what_to_do(
    table: AdmissionTable, call: Any, message: str
) -> None:
    with pytest.raises(AdmissionError, match=message):
        call(table)
    assert table.entries() == []


def test_a_pattern_written_by_hand_that_does_not_compile_admits_nothing(
    table: AdmissionTable, dynamodb: Any
) -> None:
    table.allow_pattern("ok-.*", "digits")
    dynamodb.update_item(
        TableName=table._table,
        Key={"serial": {"S": PATTERNS_KEY}},
        UpdateExpression="SET patterns.#p = :v",
        ExpressionAttributeNames={"#p": "bad-("},
        ExpressionAttributeValues={
            ":v": {"M": {"model": {"S": "digits"}, "added": {"S": "2000-01-01T00:00:00Z"}}}
        },
    )
    assert table.lookup("bad-(") is None
    assert table.lookup("ok-1") == Admission("digits", False, "pattern ok-.*")
