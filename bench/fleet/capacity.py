"""DynamoDB request units from item sizes, by DynamoDB's rules (moto reports none)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from bench.fleet.settings import MODEL
from edgeloop.factory.config import RolloutSection


def _attr_bytes(value: dict[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(str(v).encode())
    if kind == "N":
        digits = len(str(v).lstrip("-").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind in ("NULL", "BOOL"):
        return 1
    if kind == "B":
        return len(v)
    return len(json.dumps(v))  # lists and maps: an upper bound, not used here


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size by DynamoDB's rules: attribute names plus values."""
    return sum(len(name.encode()) + _attr_bytes(value) for name, value in item.items())


def item_sizes(
    ddb: Any, fleet_table: str, registry_table: str, things: list[str]
) -> dict[str, int]:
    sample = things[:: max(1, len(things) // 200)]
    fleet_sizes = []
    for thing in sample:
        item = ddb.get_item(TableName=fleet_table, Key={"thing": {"S": thing}}).get("Item")
        if item:
            fleet_sizes.append(item_bytes(item))
    sizes = {"fleet": max(fleet_sizes)}
    pk = {"S": f"model#{MODEL}"}
    for kind, sk in (("registry:rollout", "rollout"), ("registry:champion", "champion")):
        item = ddb.get_item(TableName=registry_table, Key={"pk": pk, "sk": {"S": sk}})["Item"]
        sizes[kind] = item_bytes(item)
    tallies = ddb.query(
        TableName=registry_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :t)",
        ExpressionAttributeValues={":pk": pk, ":t": {"S": "tally#"}},
    )["Items"]
    sizes["registry:tally"] = max((item_bytes(i) for i in tallies), default=1)
    # A keys-only index entry: its keys plus DynamoDB's 100 bytes of index overhead.
    sizes["fleet:index"] = len(f"{MODEL}#00") + len("model_band") + len("thing") + 12 + 100
    return sizes


def label_parts(label: str) -> tuple[str, str, str]:
    service, rest = label.split(" ", 1)
    operation, _, kind = rest.partition(" ")
    return service, operation, kind.strip("()")


def capacity(per_request: dict[str, float], sizes: dict[str, int]) -> dict[str, float]:
    """Request units for requests counted as 'dynamodb Operation (kind)', by DynamoDB's rules:
    reads 4 KB per unit (strongly consistent: 1, eventually consistent: 0.5, a missing
    item the same as a small one; a projection does not make the item smaller), writes
    1 KB per unit, a transaction twice that for every item (a cancelled one is counted as
    if it wrote: an upper bound); an UpdateItem costs the larger of the item before and
    after (the size found at the end is taken: items only grow here). A Query of the band
    index reads at most healthy_to_advance keys-only entries."""

    def w(size: int) -> int:
        return math.ceil(size / 1024)

    def r(size: int) -> int:
        return math.ceil(size / 4096)

    index_entries = RolloutSection().healthy_to_advance
    wru = rru = 0.0
    for label, count in per_request.items():
        service, operation, kind = label_parts(label)
        if service != "dynamodb":
            continue
        base, _, consistency = kind.partition(", ")
        factor = 0.5 if consistency == "eventual" else 1.0
        size = sizes.get(base, sizes["fleet"])
        if operation == "GetItem":
            rru += count * factor * max(1, r(size))
        elif operation == "Query":
            rru += count * factor * max(1, r(sizes["fleet:index"] * index_entries))
        elif operation == "BatchGetItem":
            rru += count * 100 * factor * r(sizes["fleet"])
        elif operation in ("UpdateItem", "PutItem", "DeleteItem"):
            wru += count * w(size)
        elif operation == "TransactWriteItems":
            wru += count * 2 * (w(sizes["fleet"]) + w(sizes["registry:tally"]))
    return {"wru": round(wru, 5), "rru": round(rru, 5)}


def total(per: dict[str, float], prefix: str, operations: Iterable[str] = ()) -> float:
    ops = tuple(operations)
    return sum(
        v for k, v in per.items() if k.startswith(prefix) and (not ops or label_parts(k)[1] in ops)
    )
