"""The model registry: versions, runs, the champion, pending uploads and rollouts.

One DynamoDB table, keyed by model (`pk = model#{name}`) and item kind (`sk`).
Item bodies are canonical JSON in `doc`; the few attributes that conditions
test (`version`, `state`) are top-level. Version numbers are claimed with a
conditional put, so two racing retrains can never publish the same version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from edgeloop.contract import time_ordered_id
from functions.common.fleet import Tally

VERSION_WIDTH = 10
# The sort key prefix of a stage's outcome counters (`tally#version#…#stage#NN`).
STAGE_COUNTER_KIND = "tally#"
MAX_CLAIM_ATTEMPTS = 20


class VersionClaimConflict(RuntimeError):
    """Another writer kept claiming the next version number; retry later."""


class StaleWrite(RuntimeError):
    """A conditional update lost a race: the state changed since it was read."""


def _pk(model: str) -> dict[str, str]:
    return {"S": f"model#{model}"}


def _version_sk(version: int) -> str:
    return f"version#{version:0{VERSION_WIDTH}d}"


def _conditional_failed(exc: ClientError) -> bool:
    return bool(exc.response["Error"]["Code"] == "ConditionalCheckFailedException")


@dataclass(frozen=True)
class Item:
    sk: str
    doc: dict[str, Any]


class Registry:
    def __init__(self, dynamodb_client: Any, table: str) -> None:
        self._db = dynamodb_client
        self._table = table

    # --- low level ------------------------------------------------------------------

    def _put(self, model: str, sk: str, doc: dict[str, Any], **kwargs: Any) -> None:
        item = {"pk": _pk(model), "sk": {"S": sk}, "doc": {"S": json.dumps(doc, sort_keys=True)}}
        item.update(kwargs.pop("attributes", {}))
        self._db.put_item(TableName=self._table, Item=item, **kwargs)

    def _get(self, model: str, sk: str) -> dict[str, Any] | None:
        response = self._db.get_item(
            TableName=self._table, Key={"pk": _pk(model), "sk": {"S": sk}}, ConsistentRead=True
        )
        item = response.get("Item")
        return None if item is None else dict(json.loads(item["doc"]["S"]))

    def _query(
        self, model: str, prefix: str, *, newest_first: bool, limit: int | None
    ) -> list[Item]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": _pk(model), ":prefix": {"S": prefix}},
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
        }
        items: list[Item] = []
        while True:
            if limit is not None:
                kwargs["Limit"] = limit - len(items)
            response = self._db.query(**kwargs)
            items.extend(Item(i["sk"]["S"], json.loads(i["doc"]["S"])) for i in response["Items"])
            start = response.get("LastEvaluatedKey")
            if start is None or (limit is not None and len(items) >= limit):
                return items
            kwargs["ExclusiveStartKey"] = start

    # --- versions -------------------------------------------------------------------

    def latest_version(self, model: str) -> int:
        items = self._query(model, "version#", newest_first=True, limit=1)
        return int(items[0].doc["version"]) if items else 0

    def claim_next_version(self, model: str, doc: dict[str, Any]) -> int:
        """Claim the next free version number for this model, atomically."""
        version = self.latest_version(model) + 1
        for _ in range(MAX_CLAIM_ATTEMPTS):
            try:
                self._put(
                    model,
                    _version_sk(version),
                    {**doc, "version": version, "state": "claimed"},
                    attributes={"version": {"N": str(version)}, "state": {"S": "claimed"}},
                    ConditionExpression="attribute_not_exists(sk)",
                )
                return version
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
                version += 1
        raise VersionClaimConflict(
            f"could not claim a version of {model} after {MAX_CLAIM_ATTEMPTS} tries"
        )

    def publish_version(self, model: str, version: int, doc: dict[str, Any]) -> None:
        self._put(
            model,
            _version_sk(version),
            {**doc, "version": version, "state": "published"},
            attributes={"version": {"N": str(version)}, "state": {"S": "published"}},
        )

    def version(self, model: str, version: int) -> dict[str, Any] | None:
        return self._get(model, _version_sk(version))

    def mark_aborted(self, model: str, version: int, reason: str) -> None:
        """Remember that `version`'s rollout was aborted, after its rollout item is
        replaced by a newer one: a rollback to it must say so. Idempotent."""
        self._put(model, f"aborted#{_version_sk(version)}", {"version": version, "reason": reason})

    def aborted(self, model: str, version: int) -> dict[str, Any] | None:
        """Why `version`'s rollout was aborted, or None if it never was."""
        return self._get(model, f"aborted#{_version_sk(version)}")

    def published_versions(self, model: str, limit: int) -> list[dict[str, Any]]:
        """The newest published versions, newest first (claimed-but-unpublished skipped)."""
        found: list[dict[str, Any]] = []
        for item in self._query(model, "version#", newest_first=True, limit=None):
            if item.doc.get("state") == "published":
                found.append(item.doc)
                if len(found) >= limit:
                    break
        return found

    # --- champion -------------------------------------------------------------------

    def champion(self, model: str) -> dict[str, Any] | None:
        return self._get(model, "champion")

    def set_champion(self, model: str, version: int, doc: dict[str, Any]) -> None:
        """Move the champion pointer forward; never backwards, even under races."""
        try:
            self._put(
                model,
                "champion",
                {**doc, "version": version},
                attributes={"version": {"N": str(version)}},
                ConditionExpression="attribute_not_exists(version) OR version < :v",
                ExpressionAttributeValues={":v": {"N": str(version)}},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                raise StaleWrite(
                    f"{model}: a newer champion than v{version} is already set"
                ) from exc
            raise

    # --- runs -----------------------------------------------------------------------

    def record_run(self, model: str, run_id: str, summary: dict[str, Any]) -> None:
        self._put(model, f"run#{run_id}", {**summary, "run_id": run_id})

    def run(self, model: str, run_id: str) -> dict[str, Any] | None:
        return self._get(model, f"run#{run_id}")

    def claim_run_end(self, model: str, run_id: str, by: str) -> bool:
        """Claim the ending of a handed-off run, once: False when another caller has.

        Two deliveries of the same state change can arrive together; only the
        one that claims publishes. A conditional put, as versions are claimed.
        """
        try:
            self._put(
                model,
                f"runend#{run_id}",
                {"by": by},
                ConditionExpression="attribute_not_exists(sk)",
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            return False
        return True

    def release_run_end(self, model: str, run_id: str) -> None:
        """Give a claim back after a failed ending, so the redelivered event can end the run."""
        self._db.delete_item(
            TableName=self._table, Key={"pk": _pk(model), "sk": {"S": f"runend#{run_id}"}}
        )

    def runs(self, model: str, limit: int = 20) -> list[dict[str, Any]]:
        return [i.doc for i in self._query(model, "run#", newest_first=True, limit=limit)]

    # --- uploads --------------------------------------------------------------------

    def register_upload(
        self, model: str, key: str, etag: str, size: int, arrival_id: str | None = None
    ) -> str:
        """Log an upload in the cloud's arrival order and note that no run has consumed it.

        The arrival id comes from the cloud's clock, never from the key a device
        named: a device that picks a far-future batch id cannot stay "newest"
        and push everyone else's data out of the training budget.
        """
        arrival = arrival_id or time_ordered_id()
        doc = {"key": key, "etag": etag, "size": size, "arrival": arrival}
        self._put(model, f"upload#{arrival}", doc)
        self._put(model, f"pending#{key}", doc)
        return arrival

    def arrivals(self, model: str, limit: int) -> list[dict[str, Any]]:
        """The newest uploads by arrival, newest first, one record per key.

        Reads at most `limit` records: a run looks at a bounded window of what
        arrived, never at everything ever uploaded.
        """
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for item in self._query(model, "upload#", newest_first=True, limit=limit):
            if item.doc["key"] not in seen:  # a retried upload overwrote its own key
                seen.add(item.doc["key"])
                out.append(item.doc)
        return out

    def pending_uploads(self, model: str) -> list[str]:
        return [
            i.doc["key"] for i in self._query(model, "pending#", newest_first=False, limit=None)
        ]

    def mark_trained(self, model: str, keys: list[str]) -> None:
        for key in keys:
            self._db.delete_item(
                TableName=self._table, Key={"pk": _pk(model), "sk": {"S": f"pending#{key}"}}
            )

    # --- rollouts -------------------------------------------------------------------

    def rollout(self, model: str) -> dict[str, Any] | None:
        return self._get(model, "rollout")

    def put_rollout(self, model: str, doc: dict[str, Any], *, expect_revision: int | None) -> None:
        """Write the rollout if it is still at `expect_revision` (None: no rollout yet,
        or one for an older version being replaced). Raises StaleWrite if not."""
        attributes = {
            "state": {"S": doc["state"]},
            "version": {"N": str(doc["version"])},
            "revision": {"N": str(doc["revision"])},
        }
        if expect_revision is None:
            condition = "attribute_not_exists(sk) OR version < :v"
            values = {":v": {"N": str(doc["version"])}}
        else:
            condition = "revision = :r"
            values = {":r": {"N": str(expect_revision)}}
        try:
            self._put(
                model,
                "rollout",
                doc,
                attributes=attributes,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                raise StaleWrite(f"{model}: the rollout changed under us") from exc
            raise

    # --- stage counters ---------------------------------------------------------------

    def _tally_key(self, model: str, version: int, stage: int) -> dict[str, Any]:
        sk = f"{STAGE_COUNTER_KIND}{_version_sk(version)}#stage#{stage:02d}"
        return {"pk": _pk(model), "sk": {"S": sk}}

    def tally(self, model: str, version: int, stage: int, outcome: str) -> Tally:
        """Where one device's outcome for `version` in `stage` is counted."""
        return Tally(self._table, self._tally_key(model, version, stage), outcome)

    def stage_counts(self, model: str, version: int, stage: int) -> dict[str, int]:
        """The outcomes counted so far for one stage of one version's rollout."""
        item = self._db.get_item(
            TableName=self._table, Key=self._tally_key(model, version, stage), ConsistentRead=True
        ).get("Item", {})
        return {k: int(item[k]["N"]) if k in item else 0 for k in ("installed", "failed")}


# --- the stream of counted outcomes ---------------------------------------------------
#
# Every counted outcome changes a stage counter item. The table's stream carries each
# change's keys (nothing else: the evaluation reads what it needs), and the schedule
# function evaluates the models they name within seconds. The status function, which
# devices reach, only counts; it holds no key and publishes nothing.

STREAM_VIEW = "KEYS_ONLY"

# Lambda's event filter (FilterCriteria) on the stream: stage counter items that were
# created or changed; every other item of the registry (uploads, runs, versions, the
# rollout itself) never invokes the function. The stack's event source mapping and the
# local router apply this same pattern.
STAGE_COUNTER_FILTER: dict[str, Any] = {
    "eventName": ["INSERT", "MODIFY"],
    "dynamodb": {"Keys": {"sk": {"S": [{"prefix": STAGE_COUNTER_KIND}]}}},
}


def counted_models(records: list[dict[str, Any]]) -> list[str]:
    """The models whose stage counters the stream records say changed, each once, sorted."""
    models = set()
    for record in records:
        keys = record.get("dynamodb", {}).get("Keys", {})
        pk, sk = keys.get("pk", {}).get("S", ""), keys.get("sk", {}).get("S", "")
        if pk.startswith("model#") and sk.startswith(STAGE_COUNTER_KIND):
            models.add(pk.removeprefix("model#"))
    return sorted(models)


def registry_table_spec(name: str) -> dict[str, Any]:
    """The table's key schema and stream, shared by the CDK stack, the local runtime and
    the tests."""
    return {
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": STREAM_VIEW},
        "TableName": name,
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
