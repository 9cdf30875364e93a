"""`local up` never throws away a user's edits to agent.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.cli.local import _keep_edits


def test_a_fresh_or_unchanged_agent_config_is_written(tmp_path: Path) -> None:
    agent = tmp_path / "agent.toml"
    _keep_edits(agent, "a = 1\n")
    assert agent.read_text() == "a = 1\n"
    _keep_edits(agent, "a = 1\n")
    assert not (tmp_path / "agent.toml.generated").exists()


def test_an_edited_agent_config_is_kept_and_the_new_one_goes_beside_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = tmp_path / "agent.toml"
    agent.write_text("sample_rate = 0.5\n")
    _keep_edits(agent, "sample_rate = 0.05\n")
    assert agent.read_text() == "sample_rate = 0.5\n"
    assert (tmp_path / "agent.toml.generated").read_text() == "sample_rate = 0.05\n"
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1
    assert "kept" in said[0]
