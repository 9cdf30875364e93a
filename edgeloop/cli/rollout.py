"""`edgeloop rollout status | pause | resume | abort`: the operator's hand on a rollout.

The command writes its decision to the registry, conditionally, as the
functions do. What an abort must publish (the previous version, offered again
to every device the rollout reached) is left for the schedule, which carries
out unfinished publishes every minute; `status` shows whether it went out.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgeloop.cli.aws import aws_errors
from edgeloop.cli.errors import EXIT_FAILED, CliError, emit
from edgeloop.cli.fleet import table_lines
from edgeloop.cli.stack import (
    REGISTRY_TABLE,
    add_local_option,
    add_stack_option,
    aws_client,
    resolve,
)


def _registry_table(args: argparse.Namespace) -> str:
    return resolve(
        args,
        option="table",
        output=REGISTRY_TABLE,
        env="EDGELOOP_REGISTRY_TABLE",
        what="registry table",
    )


def _rollouts(args: argparse.Namespace, table: str) -> Any:

    from functions.common.fleet import FleetTable
    from functions.common.registry import Registry
    from functions.common.rollouts import Rollouts

    dynamodb = aws_client(args, "dynamodb")

    def no_settings(model: str) -> Any:
        raise CliError(f"the command line does not start rollouts (model {model})")

    return Rollouts(
        registry=Registry(dynamodb, table),
        fleet=FleetTable(dynamodb, table),  # unread: these actions never enter a stage
        publisher=None,
        trust=None,
        canaries=lambda model: [],
        settings=no_settings,
    )


def describe(doc: dict[str, Any]) -> list[str]:
    """A rollout as people read it: where it is, why, and what happened when."""
    stages = doc.get("stages", [])
    stage = int(doc.get("stage", 0))
    where = "named canaries" if stage == 0 else f"{stages[stage - 1]}% of the fleet"
    lines = [
        f"{doc['model']} v{doc['version']}: {doc['state']} at stage {stage} ({where}) of "
        f"canaries → {' → '.join(f'{p}%' for p in stages)}; stage needs {doc.get('needed')} "
        f"installs; previous version v{doc.get('previous') or '-'}"
    ]
    if doc.get("reason"):
        lines.append(f"why: {doc['reason']}")
    if doc.get("publish"):
        lines.append("publish pending (pointer, nudges): the schedule finishes it within a minute")
    rows = [
        [str(e["at"]), str(e["stage"]), str(e["event"]), str(e.get("detail", ""))]
        for e in doc.get("history", [])
    ]
    lines.extend(table_lines(("at", "stage", "event", "detail"), rows))
    return lines


def _run(args: argparse.Namespace) -> int:
    from functions.common.rollouts import RolloutRefused

    table = _registry_table(args)
    with aws_errors(f"registry table {table}"):
        rollouts = _rollouts(args, table)
        try:
            if args.action == "status":
                rollout = rollouts.get(args.model)
                if rollout is None:
                    raise CliError(
                        f"{args.model} has no rollout yet: one starts when a version ships",
                        "no_rollout",
                        EXIT_FAILED,
                    )
            else:
                rollout = getattr(rollouts, args.action)(args.model)
        except RolloutRefused as exc:
            raise CliError(str(exc), "refused", EXIT_FAILED) from exc
    doc = rollout.to_json()
    if args.json:
        emit(doc)
        return 0
    for line in describe(doc):
        print(line)
    return 0


def register(sub: Any, json_help: str) -> None:
    p = sub.add_parser(
        "rollout",
        help="see, pause, resume or abort a model's staged rollout",
        description="A rollout offers a version to the named canaries, then to growing "
        "shares of the fleet (the model config's [rollout] stages). pause holds it at its "
        "stage; resume gives the stage a fresh window (also after it stalled); abort offers "
        "every device it reached the previous version again. AWS settings come from the "
        "usual environment.",
    )
    p.add_argument(
        "action",
        choices=("status", "pause", "resume", "abort"),
        help="status shows the rollout and its history; pause, resume and abort change it",
    )
    p.add_argument("--model", required=True, help="the model name (as in its config)")
    p.add_argument(
        "--table",
        default=None,
        help="registry table name (default: the stack's RegistryTable output, else "
        "$EDGELOOP_REGISTRY_TABLE)",
    )
    add_stack_option(p)
    add_local_option(p)
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="AWS endpoint to use instead of AWS's own (e.g. the local cloud's moto server)",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(run=_run)
