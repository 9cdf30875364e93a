"""`edgeloop fleet`: which device runs which version, healthy or not, connected or not; and
(`edgeloop.cli.admission`) which serials may provision themselves."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from edgeloop.cli.admission import register_actions
from edgeloop.cli.aws import aws_errors
from edgeloop.cli.errors import CliError, emit
from edgeloop.cli.stack import (
    FLEET_TABLE,
    PRESENCE_TABLE,
    add_local_option,
    add_stack_option,
    aws_client,
    resolve,
)

if TYPE_CHECKING:
    from functions.common.fleet import DeviceRecord
    from functions.common.presence import Presence

COLUMNS = (
    "thing",
    "stage",
    "version",
    "health",
    "step",
    "target_version",
    "queue_depth",
    "presence",
    "since",
    "last_report",
)
# What the local status table shows of each device.
SHORT_COLUMNS = ("thing", "stage", "version", "health", "step", "presence", "since")


def device_docs(
    records: Iterable[DeviceRecord], presence: dict[str, Presence]
) -> list[dict[str, Any]]:
    """Each device's last report beside its presence from the broker's lifecycle events.

    `presence` is connected or offline, `since` the time of the event that says so
    (an offline device's last seen; the broker closes a silent connection after 1.5x
    its keep-alive), `-` when no event was recorded. `last_report` (also `last_seen`,
    as before) is when its last status report arrived: a change of health or
    version, or the daily keep-alive report."""
    docs = []
    for record in records:
        doc = record.to_json()
        seen = presence.get(record.thing)
        doc["last_report"] = doc["last_seen"]
        doc["presence"] = None if seen is None else "connected" if seen.connected else "offline"
        doc["since"] = None if seen is None else seen.since
        doc["offline_reason"] = None if seen is None else seen.reason
        docs.append(doc)
    return docs


def table_lines(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell; fine with no rows at all."""
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [list(columns), *rows]
    ]


def cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _fleet(args: argparse.Namespace) -> int:

    from functions.common.fleet import FleetTable

    if args.model is None:
        raise CliError(
            "pass --model NAME to see a model's devices, or an action: allow, disallow, allowed"
        )
    table = resolve(
        args, option="table", output=FLEET_TABLE, env="EDGELOOP_FLEET_TABLE", what="fleet table"
    )
    from functions.common.presence import PresenceTable

    presence_table = _presence_table(args)
    with aws_errors(f"fleet table {table}"):
        dynamodb = aws_client(args, "dynamodb")
        records = FleetTable(dynamodb, table).for_model(args.model)
    presence = {}
    if presence_table is not None:
        with aws_errors(f"presence table {presence_table}"):
            presence = PresenceTable(dynamodb, presence_table).of(r.thing for r in records)
    docs = device_docs(records, presence)
    if args.json:
        emit({"model": args.model, "devices": docs})
        return 0
    for line in table_lines(COLUMNS, [[cell(d[c]) for c in COLUMNS] for d in docs]):
        print(line)
    if not docs:
        print(f"(no device has reported for model {args.model} yet)")
    return 0


def _presence_table(args: argparse.Namespace) -> str | None:
    """The presence table, or None when none is named: a stack deployed before it had
    one still shows its fleet, without presence."""
    try:
        return resolve(
            args,
            option="presence-table",
            output=PRESENCE_TABLE,
            env="EDGELOOP_PRESENCE_TABLE",
            what="presence table",
        )
    except (CliError, KeyError):
        return None


def register(sub: Any, json_help: str) -> None:
    p = sub.add_parser(
        "fleet",
        help="which device runs which version, healthy or not, last seen; which serials "
        "may provision themselves",
        description="Read the fleet table (DynamoDB), or with an action (allow, disallow, "
        "allowed) the admission allow-list. AWS settings come from the usual environment: "
        "AWS_PROFILE or keys, and AWS_REGION.",
    )
    p.add_argument(
        "--model", default=None, help="the model name (as in its config); needed without an action"
    )
    p.add_argument(
        "--table",
        default=None,
        help="fleet table name (default: the stack's FleetTable output, else "
        "$EDGELOOP_FLEET_TABLE)",
    )
    p.add_argument(
        "--presence-table",
        default=None,
        help="presence table name (default: the stack's PresenceTable output, else "
        "$EDGELOOP_PRESENCE_TABLE; without one, presence is not shown)",
    )
    add_stack_option(p)
    add_local_option(p)
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="AWS endpoint to use instead of AWS's own (e.g. the local cloud's moto server)",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(run=_fleet)
    register_actions(p, json_help)
