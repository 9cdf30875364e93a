"""Every --json answer is one JSON object, errors included; --version says which edgeloop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeloop import __version__
from edgeloop.cli.main import main


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["predict", "--json"], "usage"),
        (["predict", "nowhere.tflite", "data.csv", "--json"], "usage"),
        (["verify", "nowhere.json", "--key", "k.pem", "--json"], "usage"),
        (["fleet", "--model", "m", "--table", "", "--json"], "usage"),
        (["keygen", "--out", "{tmp}", "--json"], None),
    ],
)
def test_json_answers_are_one_object_even_for_errors(
    args: list[str], code: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    main(args)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    doc = json.loads(out[0])
    assert isinstance(doc, dict)
    if code is not None:
        assert doc["code"] == code
        assert doc["error"]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"edgeloop {__version__} ")
