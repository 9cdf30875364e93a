"""`edgeloop release`: a training run becomes a signed release that every trust command accepts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edge.cli import main as agent_main
from edgeloop.cli.main import main
from edgeloop.contract import TrustedKeys, sha256_hex
from edgeloop.delta import PatchSpec, apply_checked, decompress_full
from edgeloop.runtime import CompiledModel
from tests.factories import digits_toml


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two promoted runs (the second warm-started from the first) released into one root."""
    w = tmp_path_factory.mktemp("release")
    (w / "digits.toml").write_text(digits_toml(threshold=0.8, min_improvement=0.0))
    X, y = load_digits(return_X_y=True)
    np.savez(w / "first.npz", X=X[:500], y=y[:500])
    np.savez(w / "more.npz", X=X[500:1000], y=y[500:1000])
    assert main(["keygen", "--out", str(w / "keys")]) == 0
    config, key = str(w / "digits.toml"), str(w / "keys" / "signing-key.pem")
    assert main(["train", config, str(w / "first.npz"), "--out", str(w / "r1")]) == 0
    args = ["train", config, str(w / "first.npz"), str(w / "more.npz")]
    assert main([*args, "--out", str(w / "r2"), "--champion", str(w / "r1")]) == 0
    assert main(["release", "make", str(w / "r1"), "--key", key, "-o", str(w / "cdn")]) == 0
    assert main(["release", "make", str(w / "r2"), "--key", key, "-o", str(w / "cdn")]) == 0
    return w


def test_a_release_is_laid_out_like_the_cdn(release: Path) -> None:
    v2 = release / "cdn" / "models" / "digits" / "2"
    manifest = json.loads((v2 / "manifest.json").read_text())
    assert manifest["artifact"]["path"] == "models/digits/2/model.tflite"
    assert manifest["artifact"]["compressed"]["path"] == "models/digits/2/model.tflite.zst"
    for ref in [manifest["artifact"], manifest["artifact"]["compressed"], *manifest["deltas"]]:
        body = (release / "cdn" / ref["path"]).read_bytes()
        assert sha256_hex(body) == ref["sha256"]
        assert len(body) == ref["size"]
    latest = json.loads((release / "cdn" / "models" / "digits" / "latest.json").read_text())
    assert latest == {"version": 2, "manifest": "models/digits/2/manifest.json"}


def test_the_second_release_carries_a_patch_from_the_first_that_rebuilds_it(
    release: Path,
) -> None:
    cdn = release / "cdn"
    manifest = json.loads((cdn / "models/digits/2/manifest.json").read_text())
    [delta] = manifest["deltas"]
    assert delta["from_version"] == 1
    old = (cdn / "models/digits/1/model.tflite").read_bytes()
    new = apply_checked(
        old,
        (cdn / delta["path"]).read_bytes(),
        PatchSpec(
            delta["codec"],
            delta["from_sha256"],
            manifest["artifact"]["sha256"],
            manifest["artifact"]["size"],
        ),
    )
    assert new == (cdn / "models/digits/2/model.tflite").read_bytes()
    unpacked = decompress_full((cdn / "models/digits/2/model.tflite.zst").read_bytes())
    assert CompiledModel(unpacked).predict(np.zeros((1, 64))).shape == (1, 10)


def test_every_trust_command_accepts_the_release(
    release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = str(release / "cdn" / "models" / "digits" / "2" / "manifest.json")
    public = str(release / "keys" / "manifest-public.pem")
    assert (release / "cdn" / "manifest-public.pem").read_text() == Path(public).read_text()
    assert main(["verify", manifest, "--key", public]) == 0
    args = [manifest, "--key", public, "--installed-version", "1", "--features", "64"]
    assert agent_main(["verify", *args]) == 0
    assert '"accepted": true' in capsys.readouterr().out
    # A re-signed copy verifies too: sign takes the release's manifest as it is.
    assert (
        main(
            [
                "sign",
                manifest,
                "--key",
                str(release / "keys" / "signing-key.pem"),
                "-o",
                str(release / "resigned.json"),
            ]
        )
        == 0
    )
    assert (
        TrustedKeys.from_pem(Path(public).read_bytes())
        .verify((release / "resigned.json").read_bytes())
        .version
        == 2
    )


def test_show_prints_each_version_and_checks_its_signature(
    release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["release", "show", str(release / "cdn")]) == 0
    out = capsys.readouterr().out
    assert "digits v1" in out
    assert "digits v2" in out
    assert "patch from v1:" in out
    assert out.count("verified") == 2
    assert main(["release", "show", str(release / "cdn"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in doc["versions"]] == [1, 2]
    assert all(v["verified"] is True for v in doc["versions"])


def test_show_fails_when_a_manifest_was_edited(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v2 = tmp_path / "2"
    v2.mkdir()
    doc = json.loads((release / "cdn/models/digits/2/manifest.json").read_text())
    doc["decision_threshold"] = 0.5
    (v2 / "manifest.json").write_text(json.dumps(doc))
    key = str(release / "keys" / "manifest-public.pem")
    assert main(["release", "show", str(v2), "--key", key]) == 1
    assert "not verified" in capsys.readouterr().out


def test_a_refused_run_or_a_taken_version_is_not_released(
    release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "strict.toml").write_text(digits_toml(threshold=0.999, min_improvement=0.0))
    args = ["train", str(tmp_path / "strict.toml"), str(release / "first.npz")]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 3
    key = str(release / "keys" / "signing-key.pem")
    capsys.readouterr()
    assert (
        main(
            ["release", "make", str(tmp_path / "refused"), "--key", key, "-o", str(tmp_path / "o")]
        )
        == 1
    )
    assert "was not promoted" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    again = ["release", "make", str(release / "r2"), "--key", key, "-o", str(release / "cdn")]
    assert main([*again, "--version", "2"]) == 2
    assert "already released" in capsys.readouterr().err
