"""`edgeloop fleet`: which device runs which version, healthy or not, last seen."""

from __future__ import annotations

import argparse
from typing import Any

from edgeloop.cli.aws import aws_errors
from edgeloop.cli.errors import emit
from edgeloop.cli.stack import FLEET_TABLE, add_stack_option, resolve

COLUMNS = (
    "thing",
    "stage",
    "version",
    "health",
    "step",
    "target_version",
    "queue_depth",
    "last_seen",
)


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
    import boto3

    from functions.common.fleet import FleetTable

    table = resolve(
        args, option="table", output=FLEET_TABLE, env="EDGELOOP_FLEET_TABLE", what="fleet table"
    )
    with aws_errors(f"fleet table {table}"):
        dynamodb = boto3.client("dynamodb", endpoint_url=args.endpoint_url)
        records = FleetTable(dynamodb, table).for_model(args.model)
    docs = [r.to_json() for r in records]
    if args.json:
        emit({"model": args.model, "devices": docs})
        return 0
    for line in table_lines(COLUMNS, [[cell(d[c]) for c in COLUMNS] for d in docs]):
        print(line)
    if not docs:
        print(f"(no device has reported for model {args.model} yet)")
    return 0


def register(sub: Any, json_help: str) -> None:
    p = sub.add_parser(
        "fleet",
        help="which device runs which version, healthy or not, last seen",
        description="Read the fleet table (DynamoDB). AWS settings come from the usual "
        "environment: AWS_PROFILE or keys, and AWS_REGION.",
    )
    p.add_argument("--model", required=True, help="the model name (as in its config)")
    p.add_argument(
        "--table",
        default=None,
        help="fleet table name (default: the stack's FleetTable output, else "
        "$EDGELOOP_FLEET_TABLE)",
    )
    add_stack_option(p)
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="AWS endpoint to use instead of AWS's own (e.g. the local cloud's moto server)",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(run=_fleet)
