"""The agent's one setting of the C allocator, made before its threads start.

glibc's malloc gives each new thread an arena of its own, up to eight per core, so
that threads rarely wait on one lock. Each arena holds freed memory for its own
thread only. The agent's threads (MQTT, updates, uploads, status, scoring) allocate
little and seldom at the same time, so two arenas serve them as well as eight and
keep about 0.6 MB less resident (the agent_footprint bench's agent, with the cap and
without). An operator's MALLOC_ARENA_MAX (glibc reads it at start) wins over this.
"""

from __future__ import annotations

import ctypes
import os

ARENAS = 2
# glibc's malloc.h: mallopt's parameter for the arena cap.
_M_ARENA_MAX = -8


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; False where it was not set (the
    environment already sets it, or the C library is not glibc)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    # A C library that keeps the symbol without glibc's arenas answers 0.
    return bool(mallopt(_M_ARENA_MAX, arenas))


def return_free_memory() -> bool:
    """Give the heap's free pages back to the system (glibc's malloc_trim); False where
    the C library has no such call.

    An update decodes JSON, patches and loads a model: megabytes allocated and freed
    within a second, which glibc would otherwise keep resident for the next one, a
    week or a month away.
    """
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    return bool(malloc_trim(0))
