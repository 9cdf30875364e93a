"""Upload grants are rate-limited per device with one atomic counter (moto's DynamoDB)."""

from __future__ import annotations

import uuid

import boto3
import pytest

from functions.common.fleet import fleet_table_spec
from functions.common.grants import GrantCounter, GrantsExhausted


@pytest.fixture
def counter_table(moto_endpoint: str) -> tuple[object, str]:
    db = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1")
    name = f"fleet-{uuid.uuid4().hex[:6]}"
    db.create_table(**fleet_table_spec(name))
    return db, name


def test_a_device_gets_its_limit_per_window_and_then_a_clear_refusal(
    counter_table: tuple[object, str],
) -> None:
    db, table = counter_table
    now = [1000.0]
    counter = GrantCounter(db, table, limit=3, window_seconds=60, clock=lambda: now[0])
    for _ in range(3):
        counter.take("pump-1")
    with pytest.raises(GrantsExhausted, match=r"ask again in 20 s") as refused:
        counter.take("pump-1")
    assert refused.value.retry_after == 20
    counter.take("pump-2")  # another device has its own count
    now[0] = 1021.0  # the next window
    counter.take("pump-1")


def test_the_counter_is_invisible_to_the_fleet_view(counter_table: tuple[object, str]) -> None:
    from functions.common.fleet import FleetTable

    db, table = counter_table
    GrantCounter(db, table, limit=1, window_seconds=60).take("pump-1")
    assert FleetTable(db, table).for_model("digits") == []


def test_devices_racing_into_a_new_window_are_all_counted(
    counter_table: tuple[object, str],
) -> None:
    import threading

    db, table = counter_table
    counter = GrantCounter(db, table, limit=8, window_seconds=3600)
    refused: list[GrantsExhausted] = []

    def ask() -> None:
        try:
            counter.take("pump-1")
        except GrantsExhausted as exc:
            refused.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refused == []
    with pytest.raises(GrantsExhausted):
        counter.take("pump-1")


def test_the_counter_carries_its_expiry_in_epoch_seconds_under_the_tables_ttl_attribute(
    moto_endpoint: str,
) -> None:
    """DynamoDB's TTL reads a number of epoch seconds from the table's TTL attribute:
    the counter of a device that stopped asking is removed a window after its last one."""
    from edgeloop.local.aws import provision
    from functions.common.fleet import TTL_ATTRIBUTE

    resources = provision(
        lambda service: boto3.client(service, endpoint_url=moto_endpoint, region_name="eu-west-1"),
        prefix=f"ttl-{uuid.uuid4().hex[:6]}",
    )
    db = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="eu-west-1")
    ttl = db.describe_time_to_live(TableName=resources.fleet_table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)
    GrantCounter(db, resources.fleet_table, 5, 3600, clock=lambda: 1_800_000_123.7).take("pump-1")
    item = db.get_item(TableName=resources.fleet_table, Key={"thing": {"S": "pump-1#grants"}})
    assert item["Item"][TTL_ATTRIBUTE] == {"N": str(1_800_000_123 + 2 * 3600)}
