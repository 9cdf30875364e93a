"""moto's server for the fleet benchmark, with three of its emulator costs removed.

    python -m bench.fleet.moto_server PORT

moto 5 keeps an exact copy of every table a transaction touches, to roll back
if it fails (`copy.deepcopy` of the whole fleet table, per TransactWriteItems),
and finds a thing by scanning every thing (DescribeThing,
ListThingGroupsForThing). Both are artefacts of the emulator, not of DynamoDB or
IoT Core, and would make a 100k-device run quadratic. Here a transaction backs up
only the items it touches (the same rollback, item by item) and a thing is found
by its ARN. The server also remembers which backend serves a host instead of
scanning every moto module's name and URL pattern on every request (13% of its
time per request under a profiler). The requests, their parameters and their
answers are unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import types
from typing import Any


def patch_moto() -> None:
    _transactions_back_up_their_items()
    _things_by_arn()
    _backends_by_host()


def _transactions_back_up_their_items() -> None:
    from moto.dynamodb import models as ddb
    from moto.dynamodb.models.table import Table

    shim = types.ModuleType("copy")
    shim.__dict__.update(copy.__dict__)

    def deepcopy(value: Any, memo: Any = None) -> Any:
        # Only transact_write_items deep-copies a Table; the rollback below replaces it.
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    shim.deepcopy = deepcopy  # type: ignore[attr-defined]
    ddb.copy = shim  # type: ignore[attr-defined]
    original = ddb.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items:
            op = next(iter(entry.values()))
            name = op.get("TableName")
            if not name or name not in self.tables:
                continue
            table = self.tables[name]
            if "Key" in op:
                key = dict(op["Key"])
            else:
                attrs = ("hash_key_attr", "range_key_attr")
                names = [getattr(table, a) for a in attrs if getattr(table, a, None)]
                key = {k: op["Item"][k] for k in names}
            try:
                current = self.get_item(name, key)
            except Exception:
                current = None
            before = None if current is None else copy.deepcopy(current.to_json()["Attributes"])
            saved.append((name, key, before))
        try:
            original(self, transact_items)
        except Exception:
            for name, key, before in reversed(saved):
                if before is None:
                    with contextlib.suppress(Exception):
                        self.delete_item(name, key)
                else:
                    self.put_item(name, before)
            raise

    ddb.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _things_by_arn() -> None:
    from moto.iot import models as iot
    from moto.iot.exceptions import ResourceNotFoundException

    def describe_thing(self: Any, thing_name: str) -> Any:
        arn = f"arn:{self.partition}:iot:{self.region_name}:{self.account_id}:thing/{thing_name}"
        thing = self.things.get(arn)
        if thing is None or thing.thing_name != thing_name:
            raise ResourceNotFoundException()
        return thing

    iot.IoTBackend.describe_thing = describe_thing  # type: ignore[method-assign]


def _backends_by_host() -> None:
    # The server finds each request's backend by scanning every moto module's name and
    # URL pattern, for every request: the answer for a host never changes.
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    find = DomainDispatcherApplication.get_backend_for_host
    found: dict[str | None, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host not in found:
            found[host] = find(self, host)
        return found[host]

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    from moto.server import main as serve

    patch_moto()
    serve(["-H", "127.0.0.1", "-p", argv[0]])


if __name__ == "__main__":
    main(sys.argv[1:])
