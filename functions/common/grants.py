"""How many upload grants a device may have per window: one atomic counter per device.

A device that asks for grants in a loop would otherwise fill the data bucket
and every retrain's budget. Each grant is counted with one conditional
DynamoDB update on the device's own counter item in the fleet table (kept
apart from its status record, and invisible to the by-model index); past the
limit the request is refused with when to try again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from functions.common.fleet import TTL_ATTRIBUTE


@dataclass(frozen=True)
class GrantsExhausted(Exception):
    """The device used its grants for this window; `retry_after` is in seconds."""

    thing: str
    limit: int
    window_seconds: int
    retry_after: int

    def __str__(self) -> str:
        return (
            f"{self.thing} has used its {self.limit} upload grants for this "
            f"{self.window_seconds} s window; ask again in {self.retry_after} s"
        )


class GrantCounter:
    def __init__(
        self,
        dynamodb_client: Any,
        table: str,
        limit: int,
        window_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db, self._table = dynamodb_client, table
        self.limit, self.window_seconds = limit, window_seconds
        self._clock = clock

    def take(self, thing: str) -> None:
        """Count one grant for `thing`, or raise GrantsExhausted."""
        now = self._clock()
        window = int(now // self.window_seconds)
        # Two tries: a request that loses the race to start a new window finds
        # the window started and counts in it.
        for _ in range(2):
            if self._count_in(thing, window) or self._start(thing, window, now):
                return
        retry_after = math.ceil((window + 1) * self.window_seconds - now)
        raise GrantsExhausted(thing, self.limit, self.window_seconds, retry_after)

    def _update(self, thing: str, **request: Any) -> bool:
        try:
            self._db.update_item(
                TableName=self._table, Key={"thing": {"S": f"{thing}#grants"}}, **request
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def _count_in(self, thing: str, window: int) -> bool:
        """The common case, one write: same window, under the limit."""
        return self._update(
            thing,
            UpdateExpression="ADD grants :one",
            ConditionExpression="grant_window = :w AND grants < :limit",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":w": {"N": str(window)},
                ":limit": {"N": str(self.limit)},
            },
        )

    def _start(self, thing: str, window: int, now: float) -> bool:
        """A new window (or the first grant ever) starts the count again."""
        return self._update(
            thing,
            # The counter outlives its window by one more, then DynamoDB's TTL removes it.
            UpdateExpression="SET grant_window = :w, grants = :one, #expires = :expires",
            ConditionExpression="attribute_not_exists(grant_window) OR grant_window < :w",
            ExpressionAttributeNames={"#expires": TTL_ATTRIBUTE},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":w": {"N": str(window)},
                ":expires": {"N": str(int(now) + 2 * self.window_seconds)},
            },
        )
