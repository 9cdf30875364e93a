"""The fleet table: the latest status of every device, by thing, and who has reported where.

Items are keyed by thing. A second index keys them by model and 1% band
(`model_band`), so the fleet view of one model and the question "has any device
of this stage ever reported" read only what they ask about, and no status
report ever reads the fleet.

A terminal outcome (installed, failed) of the version a rollout offers the
device is counted in the same transaction that records it, and only if the
device's item does not already say it counted that version: a device that
reports twice counts once, and a crash between the two writes cannot happen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import ClientError

from edgeloop.contract import StatusReport, band_of
from edgeloop.contract.stages import BANDS

BY_BAND_INDEX = "by_band"
# DynamoDB's TTL attribute of the fleet table, in epoch seconds: an item carrying it
# (a device's upload grant counter, functions.common.grants) is removed once that
# second has passed. Status records carry none and stay.
TTL_ATTRIBUTE = "expires"


CANARY_BAND = "canary"


def model_band(model: str, band: int | str) -> str:
    """The index key: a model's 1% band, or its named canaries' own partition (they are
    stage 0 wherever their band lies, so they must not make a band look populated)."""
    return f"{model}#{band:02d}" if isinstance(band, int) else f"{model}#{band}"


@dataclass(frozen=True)
class DeviceRecord:
    thing: str
    last_seen: str  # when the cloud received the report (UTC, ISO 8601)
    report: StatusReport
    stage: int | None = None  # the rollout stage the cloud puts it in, when one runs
    canary: bool = False  # a named canary, by the thing registry
    identity_checked_at: str = ""  # when the registry said model and canary; "" for never

    def to_json(self) -> dict[str, Any]:
        return {
            "thing": self.thing,
            "last_seen": self.last_seen,
            "stage": self.stage,
            "canary": self.canary,
            **asdict(self.report),
        }


@dataclass(frozen=True)
class RecordedIdentity:
    """What the thing registry said of a device when it last reported."""

    model: str
    canary: bool
    checked_at: str


@dataclass(frozen=True)
class Tally:
    """One update expressed as a DynamoDB transaction item: the counter to add to."""

    table: str
    key: dict[str, Any]
    counter: str  # the attribute the outcome adds one to


class FleetTable:
    def __init__(self, dynamodb_client: Any, table: str) -> None:
        self._db = dynamodb_client
        self._table = table
        self.reads = 0  # request counts, for the fleet-scale benchmark
        self.writes = 0

    def _update(self, record: DeviceRecord) -> dict[str, Any]:
        report = record.report
        names = {
            "#m": "model",
            "#b": "model_band",
            "#l": "last_seen",
            "#r": "report",
            "#s": "stage",
            "#c": "canary",
            "#i": "identity_at",
        }
        values: dict[str, Any] = {
            ":m": {"S": report.model},
            ":b": {
                "S": model_band(
                    report.model, CANARY_BAND if record.canary else band_of(record.thing)
                )
            },
            ":l": {"S": record.last_seen},
            ":r": {"S": report.to_bytes().decode()},
            ":s": {"NULL": True} if record.stage is None else {"N": str(record.stage)},
            ":c": {"BOOL": record.canary},
            ":i": {"S": record.identity_checked_at},
        }
        return {
            "TableName": self._table,
            "Key": {"thing": {"S": record.thing}},
            "UpdateExpression": "SET #m = :m, #b = :b, #l = :l, #r = :r, #s = :s, #c = :c, #i = :i",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def record(self, record: DeviceRecord) -> None:
        """A report that counts toward nothing: a heartbeat, or an outcome of another version.

        An update, not a put, so the item keeps the note of what it counted.
        """
        self.writes += 1
        self._db.update_item(**self._update(record))

    def record_outcome(self, record: DeviceRecord, version: int, tally: Tally) -> bool:
        """Record a terminal report and count it, once per device and version.

        Returns False (and records the report alone) when this device already
        counted toward `version`.
        """
        update = self._update(record)
        update["UpdateExpression"] += ", #k = :v"
        update["ExpressionAttributeNames"]["#k"] = "counted"
        update["ExpressionAttributeValues"][":v"] = {"N": str(version)}
        update["ConditionExpression"] = "attribute_not_exists(#k) OR #k <> :v"
        add = {
            "TableName": tally.table,
            "Key": tally.key,
            "UpdateExpression": "ADD #n :one",
            "ExpressionAttributeNames": {"#n": tally.counter},
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
        self.writes += 2
        try:
            self._db.transact_write_items(TransactItems=[{"Update": update}, {"Update": add}])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or []
            if not reasons or reasons[0].get("Code") != "ConditionalCheckFailed":
                raise
            self.record(record)  # counted before: keep the report, not the count
            return False
        return True

    def _band_query(self, model: str, band: int | str) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "IndexName": BY_BAND_INDEX,
            "KeyConditionExpression": "#b = :b",
            "ExpressionAttributeNames": {"#b": "model_band"},
            "ExpressionAttributeValues": {":b": {"S": model_band(model, band)}},
        }

    def count_in_bands(self, model: str, bands: Iterable[int], cap: int) -> int:
        """Devices of `model` in `bands` that ever reported, counted up to `cap`.

        Reads at most `cap` index entries, whatever the fleet's size.
        """
        found = 0
        for band in bands:
            kwargs = {**self._band_query(model, band), "Select": "COUNT"}
            while found < cap:
                kwargs["Limit"] = cap - found
                self.reads += 1
                response = self._db.query(**kwargs)
                found += int(response["Count"])
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
            if found >= cap:
                return cap
        return found

    def recorded_identity(self, thing: str) -> RecordedIdentity | None:
        """The identity the item recorded, read eventually consistent: half a read unit,
        and a stale answer is one the registry gave within the cache's lifetime anyway."""
        self.reads += 1
        item = self._db.get_item(
            TableName=self._table,
            Key={"thing": {"S": thing}},
            ProjectionExpression="#m, #c, #i",
            ExpressionAttributeNames={"#m": "model", "#c": "canary", "#i": "identity_at"},
        ).get("Item")
        if item is None or not item.get("identity_at", {}).get("S"):
            return None
        return RecordedIdentity(
            item["model"]["S"], bool(item.get("canary", {}).get("BOOL")), item["identity_at"]["S"]
        )

    def forget_identity(self, thing: str) -> None:
        """After a change of enrolment: the next report asks the thing registry again."""
        self.writes += 1
        try:
            self._db.update_item(
                TableName=self._table,
                Key={"thing": {"S": thing}},
                UpdateExpression="REMOVE identity_at",
                ConditionExpression="attribute_exists(thing)",  # never reported: nothing kept
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def get(self, thing: str) -> DeviceRecord | None:
        self.reads += 1
        item = self._db.get_item(
            TableName=self._table, Key={"thing": {"S": thing}}, ConsistentRead=True
        ).get("Item")
        # An item with no report yet is no device record: moto, unlike DynamoDB, can show
        # the key alone for an instant while an update creates the item.
        return None if item is None or "report" not in item else _record(item)

    def for_model(self, model: str) -> list[DeviceRecord]:
        """Every device of the model: read only when someone asks (the fleet view)."""
        things: list[str] = []
        bands: list[int | str] = [CANARY_BAND, *range(BANDS)]
        for band in bands:
            kwargs = self._band_query(model, band)
            while True:
                self.reads += 1
                response = self._db.query(**kwargs)
                things.extend(item["thing"]["S"] for item in response["Items"])
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        records: list[DeviceRecord] = []
        for start in range(0, len(things), 100):  # BatchGetItem's limit
            keys = [{"thing": {"S": t}} for t in things[start : start + 100]]
            while keys:
                self.reads += 1
                response = self._db.batch_get_item(RequestItems={self._table: {"Keys": keys}})
                records.extend(
                    _record(item) for item in response["Responses"][self._table] if "report" in item
                )
                keys = response.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
        return sorted(records, key=lambda r: r.thing)


def _record(item: dict[str, Any]) -> DeviceRecord:
    report = StatusReport.from_json(json.loads(item["report"]["S"]))
    stage = item.get("stage", {}).get("N")
    return DeviceRecord(
        item["thing"]["S"],
        item["last_seen"]["S"],
        report,
        None if stage is None else int(stage),
        item.get("model_band", {}).get("S", "").endswith(f"#{CANARY_BAND}"),
    )


def fleet_table_spec(name: str) -> dict[str, Any]:
    """The table's key schema, shared by the CDK stack, the local runtime and the tests."""
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": "thing", "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": "thing", "AttributeType": "S"},
            {"AttributeName": "model_band", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": BY_BAND_INDEX,
                "KeySchema": [
                    {"AttributeName": "model_band", "KeyType": "HASH"},
                    {"AttributeName": "thing", "KeyType": "RANGE"},
                ],
                # Keys only: an index entry is written when a device first reports
                # (or changes model), not at every report, as it would be if the
                # report were projected. The fleet view reads reports from the table.
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
