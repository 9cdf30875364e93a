"""`edgeloop fleet allow | disallow | allowed`: the serials that may provision themselves.

A device holding the factory's claim certificate becomes a thing of the fleet only
if its serial is on this allow-list (`functions.common.admission`), which the
stack's pre-provisioning hook reads on every registration. Removing an entry
stops new registrations; devices already provisioned stay things.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from edgeloop.cli.aws import aws_errors
from edgeloop.cli.errors import EXIT_FAILED, CliError, emit
from edgeloop.cli.stack import ADMISSION_TABLE, add_local_option, aws_client, resolve

if TYPE_CHECKING:
    from functions.common.admission import AdmissionEntry, AdmissionTable

COLUMNS = ("kind", "value", "model", "group", "added")


def _table(args: argparse.Namespace) -> tuple[str, AdmissionTable]:

    from functions.common.admission import AdmissionTable

    name = resolve(
        args,
        option="table",
        output=ADMISSION_TABLE,
        env="EDGELOOP_ADMISSION_TABLE",
        what="admission table",
    )
    with aws_errors(f"admission table {name}"):
        dynamodb = aws_client(args, "dynamodb")
    return name, AdmissionTable(dynamodb, name)


def _group(entry: AdmissionEntry) -> str:
    return "named canary" if entry.canary else "fleet"


def _rows(entries: list[AdmissionEntry]) -> list[list[str]]:
    return [[e.kind, e.value, e.model, _group(e), e.added or "-"] for e in entries]


def _checked(args: argparse.Namespace) -> list[str]:
    """Every serial (or the pattern) checked before anything is written: a typo in the
    tenth serial leaves the list as it was."""
    from edgeloop.contract.topics import check_model_name
    from functions.common.admission import AdmissionError, check_pattern, check_serial

    if args.pattern is not None and args.serials:
        raise CliError("pass serials or --pattern REGEX, not both (run the command twice)")
    if args.pattern is None and not args.serials:
        raise CliError("which devices? pass one or more SERIALs, or --pattern REGEX")
    try:
        check_model_name(args.model)
        if args.pattern is not None:
            check_pattern(args.pattern)
            return [args.pattern]
        return [check_serial(serial) for serial in args.serials]
    except (AdmissionError, ValueError) as exc:
        raise CliError(str(exc), "bad_entry") from exc


def _allow(args: argparse.Namespace) -> int:
    values = _checked(args)
    name, table = _table(args)
    with aws_errors(f"admission table {name}"):
        if args.pattern is not None:
            entries = [table.allow_pattern(args.pattern, args.model, args.canary)]
        else:
            entries = [table.allow(serial, args.model, args.canary) for serial in values]
    if args.json:
        emit({"allowed": [e.to_json() for e in entries]})
        return 0
    for entry in entries:
        print(f"allowed {entry.kind} {entry.value}: model {entry.model}, {_group(entry)}")
    return 0


def _disallow(args: argparse.Namespace) -> int:
    from functions.common.admission import NotOnTheList

    name, table = _table(args)
    with aws_errors(f"admission table {name}"):
        try:
            removed = table.disallow(args.entry)
        except NotOnTheList as exc:
            raise CliError(str(exc), "not_allowed", EXIT_FAILED) from exc
    if args.json:
        emit({"removed": [e.to_json() for e in removed]})
        return 0
    for entry in removed:
        print(
            f"removed {entry.kind} {entry.value} (model {entry.model}): no new registrations; "
            "devices already provisioned stay"
        )
    return 0


def _allowed(args: argparse.Namespace) -> int:
    from edgeloop.cli.fleet import table_lines

    name, table = _table(args)
    with aws_errors(f"admission table {name}"):
        entries = table.entries()
    if args.json:
        emit({"table": name, "entries": [e.to_json() for e in entries]})
        return 0
    for line in table_lines(COLUMNS, _rows(entries)):
        print(line)
    if not entries:
        print("(no serial may provision itself yet: add some with `edgeloop fleet allow`)")
    return 0


def _common(p: argparse.ArgumentParser, json_help: str) -> None:
    """Where the allow-list is. SUPPRESS: given before the action (on `fleet`), they stay."""
    p.add_argument(
        "--table",
        default=argparse.SUPPRESS,
        help="admission table name (default: the stack's AdmissionTable output, else "
        "$EDGELOOP_ADMISSION_TABLE)",
    )
    p.add_argument(
        "--stack",
        default=argparse.SUPPRESS,
        help="read the table's name from this deployed stack's outputs (default: $EDGELOOP_STACK)",
    )
    add_local_option(p, suppress=True)
    p.add_argument(
        "--endpoint-url",
        default=argparse.SUPPRESS,
        help="AWS endpoint to use instead of AWS's own (e.g. a moto server)",
    )
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=json_help)


def register_actions(fleet: argparse.ArgumentParser, json_help: str) -> None:
    actions = fleet.add_subparsers(dest="fleet_action", metavar="ACTION", required=False)
    p = actions.add_parser(
        "allow",
        help="let serials (or every serial a pattern matches) provision themselves by claim",
        description="Put serials on the admission allow-list, with the model they run. "
        "The stack's pre-provisioning hook admits a device holding the claim certificate "
        "only if its serial is on the list: an exact serial first, then the patterns in "
        "the order they were added. --canary makes them named canaries (the first stage "
        "of every rollout); otherwise they join the fleet's thing group.",
    )
    p.add_argument("serials", nargs="*", metavar="SERIAL", help="device serials (thing names)")
    p.add_argument(
        "--pattern",
        default=None,
        metavar="REGEX",
        help=r"a Python regular expression that must match the whole serial, e.g. 'pump-\d{4}'",
    )
    p.add_argument("--model", required=True, help="the model these devices run")
    p.add_argument(
        "--canary", action="store_true", help="admit them as named canaries (the canary group)"
    )
    _common(p, json_help)
    p.set_defaults(run=_allow)
    p = actions.add_parser(
        "disallow",
        help="take a serial or a pattern off the allow-list",
        description="Remove one entry: a serial, or a pattern exactly as it was added. New "
        "registrations it admitted are refused; devices already provisioned stay things.",
    )
    p.add_argument("entry", metavar="SERIAL_OR_PATTERN", help="the serial or pattern to remove")
    _common(p, json_help)
    p.set_defaults(run=_disallow)
    p = actions.add_parser(
        "allowed",
        help="list the serials and patterns that may provision themselves",
        description="The admission allow-list: exact serials, then patterns in the order "
        "they apply, with each one's model and thing group.",
    )
    _common(p, json_help)
    p.set_defaults(run=_allowed)
