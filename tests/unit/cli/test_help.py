"""`edgeloop --help` and every subcommand's --help describe every option and argument."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from edgeloop.cli.main import build_parser, main


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


PARSERS = list(_parsers(build_parser()))


def test_the_walk_reaches_every_command() -> None:
    names = {" ".join(path) for path, _ in PARSERS}
    assert {"train", "predict", "release make", "release show", "local up", "local status"} <= names
    assert {"feed", "fleet", "demo", "delta", "patch", "rollout", "trust init"} <= names
    # The hand-written manifest signing is gone: TUF (`edgeloop trust`) is the one path.
    assert not {"keygen", "sign", "verify"} & names


@pytest.mark.parametrize(
    ("path", "parser"), PARSERS, ids=[" ".join(p) or "edgeloop" for p, _ in PARSERS]
)
def test_every_option_and_argument_has_help(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    missing = [
        "/".join(a.option_strings) or a.dest
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()
    ]
    assert missing == [], f"edgeloop {' '.join(path)}: no help for {missing}"


@pytest.mark.parametrize(
    ("path", "parser"), PARSERS, ids=[" ".join(p) or "edgeloop" for p, _ in PARSERS]
)
def test_every_command_has_a_summary(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert (choice.help or "").strip(), f"edgeloop {' '.join(path)} {choice.dest}"


def test_help_prints_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    for path, _ in PARSERS:
        with pytest.raises(SystemExit) as stop:
            main([*path, "--help"])
        assert stop.value.code == 0
        assert "usage: edgeloop" in capsys.readouterr().out
