"""The stack outputs every name the command line's `--stack` and `device config` read."""

from __future__ import annotations

from typing import Any

from edgeloop.cli.stack import CANARY_GROUP, READ_OUTPUTS, STATUS_RULE, UPLOAD_REQUEST_RULE
from edgeloop.contract.topics import RuleNames


def test_every_output_the_command_line_reads_is_in_the_template(
    synthesized_template: dict[str, Any],
) -> None:
    outputs = synthesized_template["Outputs"]
    assert set(READ_OUTPUTS) - set(outputs) == set()


def test_the_rule_and_group_outputs_are_the_names_devices_derive(
    synthesized_template: dict[str, Any],
) -> None:
    """The agent derives the rule names from the stack name; the outputs must agree."""
    outputs = synthesized_template["Outputs"]
    rules = RuleNames("edgeloop")
    assert outputs[STATUS_RULE]["Value"] == rules.status
    assert outputs[UPLOAD_REQUEST_RULE]["Value"] == rules.upload_requests
    assert outputs[CANARY_GROUP]["Value"] == "edgeloop-canary"
