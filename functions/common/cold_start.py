"""What a Lambda container builds once and keeps until it is recycled.

Every cached factory of the functions (clients, parsed environment, model
configs, the wiring) is declared with `cold_start`, so one call,
`reset_cold_start()`, makes the process behave like a fresh container: the
local runtime does it between runs and the tests between cases.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

P = ParamSpec("P")
T = TypeVar("T")

_RESETS: list[Callable[[], None]] = []


def cold_start(factory: Callable[P, T]) -> Callable[P, T]:
    """Call `factory` once per distinct arguments until the next `reset_cold_start()`."""
    cached = functools.cache(factory)
    _RESETS.append(cached.cache_clear)
    # functools.cache types its wrapper as taking any hashable arguments; the
    # factory's own signature is the one callers should be checked against.
    return cast(Callable[P, T], cached)


def reset_cold_start() -> None:
    """Forget everything built since the last cold start, as a new container would."""
    for reset in _RESETS:
        reset()
