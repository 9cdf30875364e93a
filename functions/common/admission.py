"""The admission allow-list: which serials may provision themselves by claim, as what.

A claim certificate is shared by a whole batch of devices, so holding it proves
only that a device came from the factory. Whether a serial may become a thing of
this fleet, with which model and whether as a named canary, is the platform
team's decision, kept here and read by the pre-provisioning hook
(`functions.provisioning_hook`) on every `RegisterThing` call.

Two kinds of entry:
- an exact serial, one item keyed by the serial;
- a pattern (a Python `re` regex that must match the whole serial), for a batch
  whose serials are known only by their shape. Every pattern lives in one
  reserved item, so a lookup costs at most two GetItems however many patterns
  there are. Its key starts with `#`, which no thing name may hold.

An exact serial wins over any pattern. Among patterns, the first added wins (to the
second, then in text order; a narrower rule for part of a batch is best written as
exact serials).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from edgeloop.contract import format_time, utc_now
from edgeloop.contract.topics import check_model_name, check_thing_name

KEY = "serial"
PATTERNS_KEY = "#patterns"
PATTERNS_ATTRIBUTE = "patterns"
# Every pattern shares one item (DynamoDB's limit is 400 KB): a bound that keeps the
# hook's read small and leaves room for some thousands of patterns.
MAX_PATTERN_LENGTH = 512


class AdmissionError(ValueError):
    """An allow-list change that cannot be made; the message says what to do instead."""


class NotOnTheList(LookupError):
    """`disallow` of a serial or pattern that is not on the allow-list."""


@dataclass(frozen=True)
class Admission:
    """Why a serial is admitted: its model, whether it is a named canary, and the entry
    (`serial X` or `pattern R`) that admitted it."""

    model: str
    canary: bool
    rule: str


@dataclass(frozen=True)
class AdmissionEntry:
    """One entry of the allow-list, as `entries()` lists it."""

    kind: str  # "serial" or "pattern"
    value: str
    model: str
    canary: bool
    added: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "model": self.model,
            "canary": self.canary,
            "added": self.added,
        }


def admission_table_spec(name: str) -> dict[str, Any]:
    """The table as the stack declares it (for tests and the in-process cloud)."""
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": KEY, "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": KEY, "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


def check_serial(serial: str) -> str:
    try:
        return check_thing_name(serial)
    except ValueError as exc:
        raise AdmissionError(f"serial {serial!r} cannot name a thing: {exc}") from exc


def check_pattern(pattern: str) -> re.Pattern[str]:
    if not pattern or len(pattern) > MAX_PATTERN_LENGTH:
        raise AdmissionError(
            f"pattern of {len(pattern)} characters: write 1-{MAX_PATTERN_LENGTH}, "
            r"e.g. 'pump-\d{4}'"
        )
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise AdmissionError(
            f"pattern {pattern!r} is not a Python regular expression ({exc}); "
            r"it must match whole serials, e.g. 'pump-\d{4}'"
        ) from exc


def _model(model: str) -> str:
    try:
        return check_model_name(model)
    except ValueError as exc:
        raise AdmissionError(f"{exc} (the model's config names it)") from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class AdmissionTable:
    def __init__(
        self, dynamodb_client: Any, table_name: str, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._db = dynamodb_client
        self._table = table_name
        self._clock = clock

    # -- the platform team's changes -------------------------------------------------

    def allow(self, serial: str, model: str, canary: bool = False) -> AdmissionEntry:
        """Admit one serial as `model` (replacing an earlier entry for it)."""
        entry = AdmissionEntry("serial", check_serial(serial), _model(model), canary, self._now())
        self._db.put_item(
            TableName=self._table,
            Item={
                KEY: {"S": entry.value},
                "model": {"S": entry.model},
                "canary": {"BOOL": entry.canary},
                "added": {"S": entry.added},
            },
        )
        return entry

    def allow_pattern(self, pattern: str, model: str, canary: bool = False) -> AdmissionEntry:
        """Admit every serial `pattern` matches whole, as `model` (replacing an earlier
        entry for the same pattern, which keeps its place in the order)."""
        check_pattern(pattern)
        entry = AdmissionEntry("pattern", pattern, _model(model), canary, self._now())
        value = {"model": {"S": entry.model}, "canary": {"BOOL": entry.canary}}
        # Replacing a pattern keeps when it was first added: its precedence stays.
        try:
            self._db.update_item(
                TableName=self._table,
                Key={KEY: {"S": PATTERNS_KEY}},
                UpdateExpression="SET #ps.#p = :v",
                ConditionExpression="attribute_exists(#ps)",
                ExpressionAttributeNames={"#ps": PATTERNS_ATTRIBUTE, "#p": pattern},
                ExpressionAttributeValues={
                    ":v": {"M": {**value, "added": {"S": self._added(pattern) or entry.added}}}
                },
            )
            return entry
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
        # The first pattern creates the item; if another writer created it meanwhile,
        # the first branch now applies.
        try:
            self._db.update_item(
                TableName=self._table,
                Key={KEY: {"S": PATTERNS_KEY}},
                UpdateExpression="SET #ps = :m",
                ConditionExpression="attribute_not_exists(#ps)",
                ExpressionAttributeNames={"#ps": PATTERNS_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":m": {"M": {pattern: {"M": {**value, "added": {"S": entry.added}}}}}
                },
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return self.allow_pattern(pattern, model, canary)
        return entry

    def disallow(self, serial_or_pattern: str) -> list[AdmissionEntry]:
        """Remove the serial's entry and the pattern written exactly so (a text may be
        both); what was removed. Devices already provisioned stay things."""
        removed: list[AdmissionEntry] = []
        try:
            check_thing_name(serial_or_pattern)
            is_serial = True
        except ValueError:
            is_serial = False
        if is_serial:
            old = self._db.delete_item(
                TableName=self._table,
                Key={KEY: {"S": serial_or_pattern}},
                ReturnValues="ALL_OLD",
            ).get("Attributes")
            if old:
                removed.append(self._serial_entry(old))
        try:
            old = self._db.update_item(
                TableName=self._table,
                Key={KEY: {"S": PATTERNS_KEY}},
                UpdateExpression="REMOVE #ps.#p",
                ConditionExpression="attribute_exists(#ps.#p)",
                ExpressionAttributeNames={"#ps": PATTERNS_ATTRIBUTE, "#p": serial_or_pattern},
                ReturnValues="UPDATED_OLD",
            )
            doc = old["Attributes"][PATTERNS_ATTRIBUTE]["M"][serial_or_pattern]["M"]
            removed.append(self._pattern_entry(serial_or_pattern, doc))
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
        if not removed:
            raise NotOnTheList(
                f"{serial_or_pattern!r} is neither an allowed serial nor an allowed pattern "
                "(`edgeloop fleet allowed` lists them; a pattern is removed as written)"
            )
        return removed

    # -- the hook's question ---------------------------------------------------------

    def lookup(self, serial: str) -> Admission | None:
        """Whether `serial` may provision, and as what; None when no entry admits it."""
        item = self._db.get_item(TableName=self._table, Key={KEY: {"S": serial}}).get("Item")
        if item:
            entry = self._serial_entry(item)
            return Admission(entry.model, entry.canary, f"serial {entry.value}")
        for entry in self._patterns():
            # An entry written by hand may not compile: it admits nothing.
            try:
                matched = re.fullmatch(entry.value, serial) is not None
            except re.error:
                continue
            if matched:
                return Admission(entry.model, entry.canary, f"pattern {entry.value}")
        return None

    def entries(self) -> list[AdmissionEntry]:
        """Every entry: exact serials by serial, then patterns in the order they apply."""
        serials: list[AdmissionEntry] = []
        for item in self._scan():
            if item[KEY]["S"] != PATTERNS_KEY:
                serials.append(self._serial_entry(item))
        return sorted(serials, key=lambda e: e.value) + self._patterns()

    # -- reading items -----------------------------------------------------------------

    def _patterns(self) -> list[AdmissionEntry]:
        item = self._db.get_item(TableName=self._table, Key={KEY: {"S": PATTERNS_KEY}}).get("Item")
        found = (item or {}).get(PATTERNS_ATTRIBUTE, {}).get("M", {})
        entries = [self._pattern_entry(p, doc["M"]) for p, doc in found.items()]
        return sorted(entries, key=lambda e: (e.added, e.value))

    def _added(self, pattern: str) -> str | None:
        for entry in self._patterns():
            if entry.value == pattern:
                return entry.added
        return None

    def _scan(self) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self._table}
        while True:
            page = self._db.scan(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    @staticmethod
    def _serial_entry(item: dict[str, Any]) -> AdmissionEntry:
        return AdmissionEntry(
            "serial",
            item[KEY]["S"],
            item["model"]["S"],
            bool(item.get("canary", {}).get("BOOL", False)),
            item.get("added", {}).get("S", ""),
        )

    @staticmethod
    def _pattern_entry(pattern: str, doc: dict[str, Any]) -> AdmissionEntry:
        return AdmissionEntry(
            "pattern",
            pattern,
            doc["model"]["S"],
            bool(doc.get("canary", {}).get("BOOL", False)),
            doc.get("added", {}).get("S", ""),
        )

    def _now(self) -> str:
        return format_time(self._clock())
