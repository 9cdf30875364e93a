"""A DynamoDB stream read as Lambda's event source mapping reads it, on moto's server.

Lambda polls each shard of a stream, keeps the records its filter criteria pass,
gathers them for the batching window and invokes the function with
`{"Records": [...]}`: each record as `GetRecords` returns it, plus the stream's
ARN as `eventSourceARN`. `StreamReader` reads moto's stream the same way (from
the position it was opened at, shard by shard), and `passes` applies a filter
pattern of the subset the stack uses: nested keys, lists of exact values and
`{"prefix": ...}`. A pattern with any other operator is refused rather than
matched differently from Lambda.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class UnsupportedFilter(ValueError):
    """A filter pattern using an operator the local router does not implement."""


def _matches_value(alternatives: list[Any], value: Any) -> bool:
    for alternative in alternatives:
        if isinstance(alternative, dict):
            if set(alternative) != {"prefix"} or not isinstance(alternative["prefix"], str):
                raise UnsupportedFilter(
                    f"filter operator {alternative!r} is not supported locally; "
                    "use exact values or {'prefix': ...}"
                )
            if isinstance(value, str) and value.startswith(alternative["prefix"]):
                return True
        elif alternative == value:
            return True
    return False


def passes(pattern: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether `record` matches Lambda's filter `pattern` (every key present and matching)."""
    for key, expected in pattern.items():
        if key not in record:
            return False
        if isinstance(expected, dict):
            if not isinstance(record[key], dict) or not passes(expected, record[key]):
                return False
        elif isinstance(expected, list):
            if not _matches_value(expected, record[key]):
                return False
        else:
            raise UnsupportedFilter(f"filter value for {key!r} must be a list or an object")
    return True


def stream_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's DynamoDB event source mapping delivers."""
    return {"Records": records}


class StreamReader:
    """Every record of a stream written after the reader was opened (`LATEST`), in order.

    Each read asks for a fresh iterator after the last sequence number it saw, rather
    than following `NextShardIterator` (AWS allows both): moto restores a copy of a
    table when a transaction is cancelled, with a copy of its stream shard, and an
    iterator followed across that would go on reading the old shard and miss every
    record after it.
    """

    def __init__(self, streams: Any, stream_arn: str, limit: int = 1000) -> None:
        self._streams = streams
        self.stream_arn = stream_arn
        self._limit = limit
        # The last sequence number seen per shard; None: nothing seen, read from the start.
        self._after: dict[str, str | None] = {}
        for shard in self._shards():
            self._after[shard] = None
            self._drain(shard)  # opened at the end: what is there already is skipped

    def _shards(self) -> list[str]:
        described = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
        return [shard["ShardId"] for shard in described["Shards"]]

    def _next(self, shard: str) -> list[dict[str, Any]]:
        after = self._after.get(shard)
        position: dict[str, str] = (
            {"ShardIteratorType": "TRIM_HORIZON"}
            if after is None
            else {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": after}
        )
        iterator = self._streams.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=shard, **position
        )["ShardIterator"]
        records: list[dict[str, Any]] = self._streams.get_records(
            ShardIterator=iterator, Limit=self._limit
        )["Records"]
        if records:
            self._after[shard] = records[-1]["dynamodb"]["SequenceNumber"]
        return records

    def _drain(self, shard: str) -> None:
        while self._next(shard):
            pass

    def read(self) -> list[dict[str, Any]]:
        """The records written since the last read (up to the limit per shard)."""
        for shard in self._shards():
            # A shard that appeared after this reader was opened is read from its start.
            self._after.setdefault(shard, None)
        records: list[dict[str, Any]] = []
        for shard in list(self._after):
            records.extend(self._as_lambda_gives_it(record) for record in self._next(shard))
        return records

    def _as_lambda_gives_it(self, record: dict[str, Any]) -> dict[str, Any]:
        """boto3 parses the creation time into a datetime; Lambda's event carries the epoch
        seconds the service sent, and the stream's ARN."""
        change = dict(record["dynamodb"])
        created = change.get("ApproximateCreationDateTime")
        if isinstance(created, datetime):
            change["ApproximateCreationDateTime"] = created.timestamp()
        return {**record, "dynamodb": change, "eventSourceARN": self.stream_arn}
