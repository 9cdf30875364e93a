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
    local_cloud,
    resolve,
)

if TYPE_CHECKING:
    from functions.common.fleet import DeviceRecord
    from functions.common.presence import Presence
    from functions.common.registry import Registry

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


def fleet_overview(
    dynamodb: Any,
    registry_table: str,
    fleet_table: str,
    presence_table: str | None,
    models: Iterable[str],
) -> dict[str, dict[str, Any]]:
    """Each model's champion, newest runs and published versions, rollout with its progress
    by stage, and devices with their presence: what `local status` and the dashboard show.

    No presence table (a stack or state file from before presence existed): devices show
    without presence."""
    from functions.common.fleet import FleetTable
    from functions.common.presence import PresenceTable
    from functions.common.registry import Registry

    registry = Registry(dynamodb, registry_table)
    fleet = FleetTable(dynamodb, fleet_table)
    presence = PresenceTable(dynamodb, presence_table) if presence_table else None
    overview = {}
    for model in models:
        champion = registry.champion(model)
        records = fleet.for_model(model)
        rollout = registry.rollout(model)
        overview[model] = {
            "champion": int(champion["version"]) if champion else None,
            "runs": registry.runs(model, limit=20),
            "versions": registry.published_versions(model, limit=20),
            "rollout": rollout,
            "progress": [] if rollout is None else rollout_progress(registry, model, rollout),
            "devices": device_docs(
                records, presence.of(r.thing for r in records) if presence else {}
            ),
        }
    return overview


def rollout_progress(
    registry: Registry, model: str, rollout: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every stage of a rollout: passed, the one it is at (in the rollout's state) or not
    reached, with the installs and failures counted there. Stages not reached are not read:
    nothing can have counted toward them."""
    from edgeloop.contract.stages import StagePlan

    plan = StagePlan(tuple(int(p) for p in rollout.get("stages", ())))
    current = max(int(rollout.get("stage", 0)), 0)
    version = int(rollout["version"])
    stages = []
    for stage in range(plan.last + 1):
        reached = stage <= current
        counts = (
            registry.stage_counts(model, version, stage)
            if reached
            else {"installed": 0, "failed": 0}
        )
        stages.append(
            {
                "stage": stage,
                "name": plan.describe(stage),
                "status": "passed"
                if stage < current
                else str(rollout["state"])
                if stage == current
                else "waiting",
                # What the stage it is at needs to advance; a passed stage had what it needed.
                "needed": int(rollout.get("needed", 0)) if stage == current else None,
                **counts,
            }
        )
    return stages


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
    _known_locally(args)
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


def _known_locally(args: argparse.Namespace) -> None:
    """A local cloud knows its models (its model configs): a name it does not know is
    a mistake, said with the names it knows. A deployed stack keeps no list of them."""
    state = local_cloud(args)
    known = sorted(state.get("models") or ()) if state is not None else []
    if known and args.model not in known:
        raise CliError(
            f"the local cloud has no model {args.model!r}; its models: {', '.join(known)}",
            "unknown_model",
        )


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


def add_presence_table_option(parser: argparse.ArgumentParser) -> None:
    """`--presence-table`, which `_presence_table` reads."""
    parser.add_argument(
        "--presence-table",
        default=None,
        help="presence table name (default: the stack's PresenceTable output, else "
        "$EDGELOOP_PRESENCE_TABLE; without one, presence is not shown)",
    )


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
    add_presence_table_option(p)
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
