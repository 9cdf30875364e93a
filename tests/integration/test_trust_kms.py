"""The online trust key in KMS (moto's server over HTTP), and the `edgeloop trust` ceremony."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from edge.download import HttpFetcher
from edge.trust import SignedRepository, TrustLimits
from edgeloop.cli.main import main
from edgeloop.contract.trust_targets import RolloutPointer
from edgeloop.trust import (
    DirectoryStore,
    KmsSigner,
    RootCeremony,
    TrustRepository,
    VersionRelease,
    generate_root_key,
)
from tests.support_http import artifact_server


@pytest.fixture
def kms(moto_endpoint: str) -> Any:
    return boto3.client("kms", endpoint_url=moto_endpoint, region_name="eu-west-1")


@pytest.fixture
def kms_key(kms: Any) -> str:
    key_id: str = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"][
        "KeyId"
    ]
    return key_id


def test_device_refreshes_metadata_signed_online_by_kms(
    kms: Any, kms_key: str, tmp_path: Path
) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    online = KmsSigner.of_key(kms, kms_key)
    roots = [generate_root_key(tmp_path / f"root-{i}.pem", None) for i in range(3)]
    RootCeremony(store).init(roots, 2, online.public_key)
    repo = TrustRepository(store, online)
    repo.publish(VersionRelease("digits", 1, b"model-bytes" * 20))
    repo.set_pointer(RolloutPointer("digits", offered=1, previous=None, percent=100))
    with artifact_server() as cdn:
        for key in store.list("tuf/"):
            cdn.files["models/" + key] = store.get(key) or b""
        device = SignedRepository(
            HttpFetcher(cdn.base_url + "models/", timeout=2.0, retries=0),
            store.get("tuf/metadata/1.root.json") or b"",
            tmp_path / "device",
            limits=TrustLimits(min_refresh_seconds=0),
        )
        offer = device.refresh("digits", "thing-1", None)
        assert offer.model is not None
        assert device.download(offer.model) == b"model-bytes" * 20


def test_kms_key_of_the_wrong_spec_cannot_be_the_online_key(kms: Any) -> None:
    rsa: str = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ValueError, match="ECC_NIST_P256"):
        KmsSigner.of_key(kms, rsa)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main([*argv, "--json"]) == 0, capsys.readouterr()
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def test_key_ceremony_on_the_command_line(
    kms_key: str,
    moto_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    repo = ["--dir", str(tmp_path / "bucket")]
    keys = tmp_path / "keys"
    monkeypatch.setenv("EDGELOOP_ROOT_KEY_PASSPHRASE", "correct horse")
    init = _cli(capsys, "trust", "init", *repo, "--keys", str(keys), "--kms-key-id", kms_key)
    assert len(init["root_keys"]) == 3
    assert b"ENCRYPTED" in (keys / "root-1.pem").read_bytes()
    old = init["root_keys"][0]
    new_key = str(tmp_path / "root-4.pem")
    _cli(capsys, "trust", "rotate-root-key", *repo, "--old-key-id", old, "--new-key", new_key)
    assert not _cli(capsys, "trust", "sign-root", *repo, "--key", str(keys / "root-2.pem"))[
        "complete"
    ]
    status = _cli(capsys, "trust", "status", *repo)
    assert status["root_version"] == 1
    assert status["pending"]["old_signatures"] == "1/2"
    _cli(capsys, "trust", "sign-root", *repo, "--key", str(keys / "root-3.pem"))
    assert _cli(capsys, "trust", "status", *repo)["root_version"] == 2
    # A key file that is not a root key of either version is refused in one line.
    stranger = tmp_path / "stranger.pem"
    generate_root_key(stranger, b"pw")
    monkeypatch.setenv("EDGELOOP_ROOT_KEY_PASSPHRASE", "pw")
    _cli(capsys, "trust", "rotate-online-key", *repo, "--kms-key-id", kms_key)
    assert main(["trust", "sign-root", *repo, "--key", str(stranger), "--json"]) == 1
    assert "not a root key" in json.loads(capsys.readouterr().out)["error"]
