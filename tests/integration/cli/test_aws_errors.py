"""`edgeloop fleet` (and every command that reads AWS) fails in one line that says what to set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from edgeloop.cli.main import main
from functions.common.fleet import fleet_table_spec

REPO = Path(__file__).resolve().parents[3]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "edgeloop.cli.main", *args],
        env={
            **base,
            "PYTHONPATH": str(REPO),
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("env", "extra", "says", "code"),
    [
        ({}, [], "set AWS_DEFAULT_REGION", "aws_no_region"),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, [], "set AWS_PROFILE", "aws_no_credentials"),
        (
            {
                "AWS_DEFAULT_REGION": "eu-west-1",
                "AWS_ACCESS_KEY_ID": "a",
                "AWS_SECRET_ACCESS_KEY": "b",
            },
            ["--endpoint-url", "http://127.0.0.1:{port}"],
            "cannot reach the AWS endpoint",
            "aws_unreachable",
        ),
    ],
)
def test_fleet_names_the_missing_aws_setting_in_one_line(
    env: dict[str, str], extra: list[str], says: str, code: str
) -> None:
    extra = [a.format(port=_closed_port()) for a in extra]
    args = ["fleet", "--model", "vibration", "--table", "edgeloop-fleet", *extra]
    done = _run(args, env)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    as_json = json.loads(_run([*args, "--json"], env).stdout)
    assert as_json["code"] == code


def test_fleet_names_a_table_that_does_not_exist(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["fleet", "--model", "m", "--table", "no-such-table", "--endpoint-url", moto_endpoint]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "fleet table no-such-table does not exist" in err
    assert len(err.strip().splitlines()) == 1


def test_fleet_with_no_device_reported_prints_an_empty_table(
    moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ddb = boto3.client("dynamodb", endpoint_url=moto_endpoint)
    ddb.create_table(**fleet_table_spec("empty-fleet"))
    args = ["fleet", "--model", "m", "--table", "empty-fleet", "--endpoint-url", moto_endpoint]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("thing")
    assert "no device has reported for model m yet" in out
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"model": "m", "devices": []}
