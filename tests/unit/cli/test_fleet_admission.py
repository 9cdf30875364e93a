"""`edgeloop fleet allow | disallow | allowed` against moto's DynamoDB: what the hook will
admit, and one-line errors for anything it cannot do."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from edgeloop.cli.main import main
from functions.common.admission import Admission, AdmissionTable, admission_table_spec


@pytest.fixture
def table(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, AdmissionTable]:
    for name in ("EDGELOOP_STACK", "EDGELOOP_ADMISSION_TABLE"):
        monkeypatch.delenv(name, raising=False)
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1")
    name = f"admissions-{uuid.uuid4().hex[:6]}"
    dynamodb.create_table(**admission_table_spec(name))
    monkeypatch.setenv("EDGELOOP_ADMISSION_TABLE", name)
    return moto_endpoint, AdmissionTable(dynamodb, name)


def run(endpoint: str, *argv: str) -> int:
    return main(["fleet", *argv, "--endpoint-url", endpoint])


def test_allow_serials_and_a_pattern_then_list_them(
    table: tuple[str, AdmissionTable], capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, admissions = table
    assert run(endpoint, "allow", "pump-1", "pump-2", "--model", "digits") == 0
    assert (
        run(endpoint, "allow", "--pattern", r"pump-9\d+", "--model", "vibration", "--canary") == 0
    )
    out = capsys.readouterr().out
    assert "allowed serial pump-1: model digits, fleet" in out
    assert r"allowed pattern pump-9\d+: model vibration, named canary" in out
    assert admissions.lookup("pump-2") == Admission("digits", False, "serial pump-2")
    assert admissions.lookup("pump-93") == Admission("vibration", True, r"pattern pump-9\d+")
    assert run(endpoint, "allowed") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["kind", "value", "model", "group", "added"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["serial", "pump-1", "digits"],
        ["serial", "pump-2", "digits"],
        ["pattern", r"pump-9\d+", "vibration"],
    ]
    assert run(endpoint, "allowed", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(e["kind"], e["value"], e["canary"]) for e in doc["entries"]] == [
        ("serial", "pump-1", False),
        ("serial", "pump-2", False),
        ("pattern", r"pump-9\d+", True),
    ]


def test_disallow_removes_one_entry_and_says_so(
    table: tuple[str, AdmissionTable], capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, admissions = table
    admissions.allow("pump-1", "digits")
    assert run(endpoint, "disallow", "pump-1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["removed"][0]["value"] == "pump-1"
    assert admissions.lookup("pump-1") is None
    assert run(endpoint, "disallow", "pump-1") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: 'pump-1' is neither an allowed serial nor an allowed pattern")


def test_an_empty_list_says_how_to_fill_it(
    table: tuple[str, AdmissionTable], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(table[0], "allowed") == 0
    assert "edgeloop fleet allow" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("allow", "pump-1", "pump 2", "--model", "digits"), "cannot name a thing"),
        (("allow", "pump-1", "--model", "Digits"), "model name 'Digits' is not valid"),
        (("allow", "--pattern", "pump-(", "--model", "digits"), "not a Python regular"),
        (("allow", "pump-1", "--pattern", "p.*", "--model", "digits"), "not both"),
        (("allow", "--model", "digits"), "which devices?"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    table: tuple[str, AdmissionTable],
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    endpoint, admissions = table
    assert run(endpoint, *argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err
    assert admissions.entries() == []


def test_without_a_table_name_the_error_names_every_way_to_give_one(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("EDGELOOP_STACK", "EDGELOOP_ADMISSION_TABLE"):
        monkeypatch.delenv(name, raising=False)
    assert run(moto_endpoint, "allowed", "--json") == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["code"] == "usage"
    assert "--table" in doc["error"]
    assert "AdmissionTable" in doc["error"]


def test_a_missing_table_is_one_line_naming_it(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EDGELOOP_STACK", raising=False)
    assert run(moto_endpoint, "allow", "pump-1", "--model", "digits", "--table", "nope") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "admission table nope does not exist" in err


def test_the_fleet_view_without_model_or_action_says_what_to_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["fleet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--model NAME" in err
    assert "allow" in err
