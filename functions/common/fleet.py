"""The fleet table: the latest status of every device, by thing, queryable by model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from edgeloop.contract import StatusReport

BY_MODEL_INDEX = "by_model"


@dataclass(frozen=True)
class DeviceRecord:
    thing: str
    last_seen: str  # when the cloud received the report (UTC, ISO 8601)
    report: StatusReport

    def to_json(self) -> dict[str, Any]:
        return {"thing": self.thing, "last_seen": self.last_seen, **asdict(self.report)}


class FleetTable:
    def __init__(self, dynamodb_client: Any, table: str) -> None:
        self._db = dynamodb_client
        self._table = table

    def record(self, record: DeviceRecord) -> None:
        self._db.put_item(
            TableName=self._table,
            Item={
                "thing": {"S": record.thing},
                "model": {"S": record.report.model},
                "last_seen": {"S": record.last_seen},
                "report": {"S": record.report.to_bytes().decode()},
            },
        )

    def for_model(self, model: str) -> list[DeviceRecord]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": BY_MODEL_INDEX,
            "KeyConditionExpression": "#m = :m",
            "ExpressionAttributeNames": {"#m": "model"},
            "ExpressionAttributeValues": {":m": {"S": model}},
        }
        records = []
        while True:
            response = self._db.query(**kwargs)
            for item in response["Items"]:
                report = StatusReport.from_json(json.loads(item["report"]["S"]))
                records.append(DeviceRecord(item["thing"]["S"], item["last_seen"]["S"], report))
            if "LastEvaluatedKey" not in response:
                return sorted(records, key=lambda r: r.thing)
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def fleet_table_spec(name: str) -> dict[str, Any]:
    """The table's key schema, shared by the CDK stack, the local runtime and the tests."""
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": "thing", "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": "thing", "AttributeType": "S"},
            {"AttributeName": "model", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": BY_MODEL_INDEX,
                "KeySchema": [
                    {"AttributeName": "model", "KeyType": "HASH"},
                    {"AttributeName": "thing", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
