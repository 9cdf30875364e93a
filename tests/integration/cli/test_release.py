"""`edgeloop release`: training runs become a TUF repository on disk that a device, and
`edgeloop-agent check`, verify from the release's root."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edge.cli import main as agent_main
from edge.download import HttpFetcher
from edge.targets import InstalledModel
from edge.trust import SignedRepository, TrustLimits
from edgeloop.cli.main import main
from edgeloop.contract import sha256_hex
from edgeloop.delta import PatchSpec, apply_checked
from edgeloop.local.cdn import LocalCdn
from edgeloop.runtime import CompiledModel
from tests.factories import digits_toml
from tests.support_http import cdn_of_files


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two promoted runs (the second warm-started from the first) released into one root."""
    w = tmp_path_factory.mktemp("release")
    (w / "digits.toml").write_text(digits_toml(threshold=0.8, min_improvement=0.0))
    X, y = load_digits(return_X_y=True)
    np.savez(w / "first.npz", X=X[:500], y=y[:500])
    np.savez(w / "more.npz", X=X[500:1000], y=y[500:1000])
    config = str(w / "digits.toml")
    assert main(["train", config, str(w / "first.npz"), "--out", str(w / "r1")]) == 0
    args = ["train", config, str(w / "first.npz"), str(w / "more.npz")]
    assert main([*args, "--out", str(w / "r2"), "--champion", str(w / "r1")]) == 0
    assert main(["release", "make", str(w / "r1"), "-o", str(w / "cdn")]) == 0
    assert main(["release", "make", str(w / "r2"), "-o", str(w / "cdn")]) == 0
    return w


@pytest.fixture
def served(release: Path) -> Iterator[LocalCdn]:
    """The release directory as a CDN serves it (`python -m http.server -d cdn`)."""
    root = release / "cdn"
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    cdn = cdn_of_files(files)
    try:
        yield cdn
    finally:
        cdn.stop()


def test_a_release_is_a_tuf_repository_laid_out_like_the_cdn(release: Path) -> None:
    cdn = release / "cdn"
    metadata = cdn / "models" / "tuf" / "metadata"
    assert (cdn / "root.json").read_bytes() == (metadata / "1.root.json").read_bytes()
    assert (metadata / "timestamp.json").is_file()
    assert sorted(p.name for p in (cdn / "keys").iterdir()) == [
        "online.pem",
        "root-0.pem",
        "root-1.pem",
        "root-2.pem",
    ]
    # Targets are hash-prefixed: a CDN cache never mixes versions.
    for target in (cdn / "models" / "tuf" / "targets" / "digits").rglob("*.*"):
        digest = target.name.split(".", 1)[0]
        assert sha256_hex(target.read_bytes()) == digest
    # The copies later releases patch from, as the cloud keeps them in its registry bucket.
    assert (cdn / "registry" / "digits" / "versions" / "2" / "model.tflite").is_file()


def test_the_second_release_carries_a_patch_from_the_first_that_rebuilds_it(
    release: Path, served: LocalCdn, tmp_path: Path
) -> None:
    cdn = release / "cdn"
    v1 = (cdn / "registry/digits/versions/1/model.tflite").read_bytes()
    device = SignedRepository(
        HttpFetcher(served.base_url + "models/", timeout=5.0, retries=0),
        (cdn / "root.json").read_bytes(),
        tmp_path,
        limits=TrustLimits(min_refresh_seconds=0.0),
    )
    offer = device.refresh("digits", "any-device", InstalledModel(1, sha256_hex(v1)))
    assert offer.version == 2
    assert offer.patch is not None
    assert offer.model is not None
    target, info = offer.patch
    rebuilt = apply_checked(
        v1,
        device.download(target),
        PatchSpec(info.codec, info.base_sha256, offer.model.hashes["sha256"], offer.model.length),
    )
    assert rebuilt == (cdn / "registry/digits/versions/2/model.tflite").read_bytes()
    assert CompiledModel(rebuilt).predict(np.zeros((1, 64))).shape == (1, 10)


def test_the_agent_checks_what_a_release_offers_it(
    release: Path, served: LocalCdn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        '[device]\nthing = "pump-1"\nmodel = "digits"\nn_features = 64\n'
        '[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
        f'[artifacts]\nbase_url = "{served.base_url}"\n'
        f'[trust]\nroot = "{release / "cdn" / "root.json"}"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n'
    )
    capsys.readouterr()
    assert agent_main(["check", "--config", str(config)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["offered"], doc["rollout"]["offered"], doc["rollout"]["previous"]) == (2, 2, 1)
    assert doc["metadata_bytes"] > 0
    assert not (tmp_path / "state").exists()  # a check keeps no state


def test_show_prints_each_version_verified_as_a_device_does(
    release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["release", "show", str(release / "cdn")]) == 0
    out = capsys.readouterr().out
    assert "verified from" in out
    assert "v1 (created" in out
    assert "v2 (created" in out
    assert "patch from v1:" in out
    assert main(["release", "show", str(release / "cdn"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [digits] = doc["models"]
    assert [v["version"] for v in digits["versions"]] == [1, 2]
    assert digits["rollout"]["offered"] == 2


def test_show_fails_when_signed_metadata_was_edited(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "cdn"
    shutil.copytree(release / "cdn", copy)
    [role] = sorted((copy / "models/tuf/metadata").glob("*.digits.json"))[-1:]
    doc = json.loads(role.read_text())
    doc["signed"]["targets"]["digits/rollout.json"]["custom"]["percent"] = 1
    role.write_text(json.dumps(doc))
    assert main(["release", "show", str(copy)]) == 1
    assert "does not verify" in capsys.readouterr().err


def test_a_refused_run_or_a_taken_version_is_not_released(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "strict.toml").write_text(digits_toml(threshold=0.999, min_improvement=0.0))
    args = ["train", str(tmp_path / "strict.toml"), str(release / "first.npz")]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 3
    capsys.readouterr()
    assert main(["release", "make", str(tmp_path / "refused"), "-o", str(tmp_path / "o")]) == 1
    assert "was not promoted" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    again = ["release", "make", str(release / "r2"), "-o", str(release / "cdn")]
    assert main([*again, "--version", "2"]) == 2
    assert "already released" in capsys.readouterr().err
    # The same run again, under the next number: the same bytes are not a new version.
    assert main(again) == 2
    assert "already released as digits v2" in capsys.readouterr().err


def test_predict_takes_a_release_and_scores_its_newest_version(
    release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["predict", str(release / "cdn"), str(release / "first.npz"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "versions/2/manifest.json" in doc["described_by"]
