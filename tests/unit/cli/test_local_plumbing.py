"""`edgeloop fleet`, `fleet allow | allowed` and `rollout status` against a running local
cloud take its tables, endpoint and credentials from its local.json (`--local DIR`, or
.edgeloop/local when nothing else is named): no --table, --endpoint-url or keys."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import boto3
import pytest

from edgeloop.cli.main import main
from functions.common.admission import AdmissionTable, admission_table_spec
from functions.common.fleet import fleet_table_spec
from functions.common.registry import registry_table_spec

NAMED = (
    "EDGELOOP_STACK",
    "EDGELOOP_ADMISSION_TABLE",
    "EDGELOOP_FLEET_TABLE",
    "EDGELOOP_REGISTRY_TABLE",
    "EDGELOOP_PRESENCE_TABLE",
)


@pytest.fixture
def local_dir(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local.json as `edgeloop local up` writes it, for tables in moto; the process
    environment holds no AWS settings a command could fall back on."""
    for name in (*NAMED, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")  # not the local cloud's
    suffix = uuid.uuid4().hex[:6]
    credentials = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    dynamodb = boto3.client(
        "dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1", **credentials
    )
    names = {
        "admission_table": f"admission-{suffix}",
        "fleet_table": f"fleet-{suffix}",
        "registry_table": f"registry-{suffix}",
    }
    dynamodb.create_table(**admission_table_spec(names["admission_table"]))
    dynamodb.create_table(**fleet_table_spec(names["fleet_table"]))
    dynamodb.create_table(**registry_table_spec(names["registry_table"]))
    directory = tmp_path / "state"
    directory.mkdir()
    state = {
        "pid": os.getpid(),
        "aws_endpoint": moto_endpoint,
        "region": "eu-west-1",
        "credentials": credentials,
        "presence_table": "",
        "models": ["digits", "vibration"],
        **names,
    }
    (directory / "local.json").write_text(json.dumps(state))
    return directory


def admissions(local_dir: Path) -> AdmissionTable:
    state = json.loads((local_dir / "local.json").read_text())
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=state["aws_endpoint"],
        region_name=state["region"],
        **state["credentials"],
    )
    return AdmissionTable(dynamodb, state["admission_table"])


def test_fleet_allow_and_allowed_with_local(
    local_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = ["--local", str(local_dir)]
    assert main(["fleet", "allow", "pump-1", "--model", "vibration", *local]) == 0
    assert admissions(local_dir).lookup("pump-1") is not None
    assert main(["fleet", "--local", str(local_dir), "allowed", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [e["value"] for e in doc["entries"]] == ["pump-1"]


def test_fleet_and_rollout_status_with_local(
    local_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fleet", "--model", "vibration", "--local", str(local_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"model": "vibration", "devices": []}
    # No rollout yet: the registry table was found and read, and says so in one line.
    assert main(["rollout", "status", "--model", "vibration", "--local", str(local_dir)]) == 1
    assert "vibration has no rollout yet" in capsys.readouterr().err


def test_a_model_the_local_cloud_does_not_have_is_one_line_naming_those_it_has(
    local_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fleet", "--model", "nope", "--local", str(local_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "has no model 'nope'; its models: digits, vibration" in err


def test_the_default_local_cloud_is_used_when_nothing_else_is_named(
    local_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    workdir = local_dir.parent / "project"
    (workdir / ".edgeloop").mkdir(parents=True)
    local_dir.rename(workdir / ".edgeloop" / "local")
    monkeypatch.chdir(workdir)
    assert main(["fleet", "allow", "pump-2", "--model", "vibration"]) == 0
    assert admissions(workdir / ".edgeloop" / "local").lookup("pump-2") is not None


def test_a_stopped_local_cloud_is_one_line_with_the_fix(
    local_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = json.loads((local_dir / "local.json").read_text())
    state["pid"] = 2**22 + 1  # above Linux's pid_max: no such process
    (local_dir / "local.json").write_text(json.dumps(state))
    assert main(["fleet", "allowed", "--local", str(local_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "has stopped" in err
    assert "edgeloop local up" in err
    missing = local_dir.parent / "nowhere"
    assert main(["rollout", "status", "--model", "m", "--local", str(missing)]) == 1
    assert "no local cloud is running there" in capsys.readouterr().err


def test_lan_mode_without_the_local_iot_core_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = Path(__file__).resolve().parents[3] / "models"
    argv = ["local", "up", "--models", str(models), "--model", "vibration"]
    code = main([*argv, "--host", "0.0.0.0", "--broker", "mqtt://127.0.0.1:1883"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--host 0.0.0.0" in err
    assert "TLS with client certificates" in err


def test_a_kept_cloud_without_its_saved_aws_state_is_one_line_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = Path(__file__).resolve().parents[3] / "models"
    out = tmp_path / "state"
    (out / "cloud").mkdir(parents=True)
    (out / "cloud" / "stack.json").write_text("{}")
    assert (
        main(["local", "up", "--models", str(models), "--model", "vibration", "--out", str(out)])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"remove {out / 'cloud'}" in err
