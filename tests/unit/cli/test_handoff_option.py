"""`edgeloop local up --handoff-above` and `edgeloop demo --handoff` set the retrain limit."""

from __future__ import annotations

import pytest

from edgeloop.cli.errors import CliError
from edgeloop.cli.local import handoff_env
from edgeloop.cli.main import build_parser


def test_no_option_leaves_the_stacks_limits() -> None:
    assert handoff_env(None) == {}


def test_the_option_sets_the_retrain_functions_memory_limit() -> None:
    assert handoff_env(4096) == {"HANDOFF_MEMORY_BYTES": "4096"}


def test_a_limit_below_one_byte_is_a_usage_error() -> None:
    with pytest.raises(CliError, match="positive number of bytes"):
        handoff_env(0)


def test_the_demo_forces_the_handoff_only_when_asked() -> None:
    parser = build_parser()
    assert parser.parse_args(["demo"]).handoff is False
    assert parser.parse_args(["demo", "--handoff"]).handoff is True
    up = parser.parse_args(["local", "up", "--models", "m", "--handoff-above", "1"])
    assert up.handoff_above == 1
