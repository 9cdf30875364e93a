"""The agent caps glibc's malloc arenas for its threads, unless the operator already has."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's"
)

# Six threads that each allocate through malloc (a bytearray past pymalloc's 512 B) and
# stay alive, then the number of arenas glibc's malloc_info reports.
_ARENAS_AFTER_THREADS = """
import ctypes, sys, tempfile, threading
from edge.allocator import cap_malloc_arenas
capped = cap_malloc_arenas() if sys.argv[1] == "cap" else None
held, ready, done = [], threading.Barrier(7), threading.Event()
def work():
    held.append(bytearray(4096))
    ready.wait()
    done.wait()
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads:
    t.start()
ready.wait()
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
with tempfile.TemporaryFile() as out:
    stream = libc.fdopen(out.fileno(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fflush(ctypes.c_void_p(stream))
    out.seek(0)
    print(capped, out.read().count(b"<heap nr="))
done.set()
"""


def _arenas(mode: str, **env: str) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run(
        [sys.executable, "-c", _ARENAS_AFTER_THREADS, mode],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


def test_the_agents_threads_share_two_arenas() -> None:
    assert _arenas("cap") == ("True", 2)


def test_without_the_cap_each_thread_gets_an_arena_of_its_own() -> None:
    """The control: the same threads, uncapped, spread over more arenas."""
    _, arenas = _arenas("none")
    assert arenas > 2


def test_the_operators_malloc_arena_max_wins() -> None:
    assert _arenas("cap", MALLOC_ARENA_MAX="3") == ("False", 3)


_TRIM = """
import sys
from edge.allocator import return_free_memory

def rss_kb():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'):
            return int(line.split()[1])

# Many small blocks, then all but the last freed: glibc keeps the freed heap below
# the last block resident until it is trimmed.
blocks = [bytearray(512) for _ in range(100_000)]
for block in blocks:
    block[0] = 1
keep = bytearray(512)
del blocks
before = rss_kb()
trimmed = return_free_memory() if sys.argv[1] == 'trim' else False
print(trimmed, before - rss_kb())
"""


def _released_kb(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _TRIM, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_an_update_gives_its_freed_heap_back() -> None:
    trimmed, released = _released_kb("trim")
    assert trimmed == "True"
    assert released > 10_000  # of the ~60 MB the blocks took, most goes back


def test_without_the_trim_the_freed_heap_stays_resident() -> None:
    """The control: the same frees, untrimmed."""
    trimmed, released = _released_kb("none")
    assert trimmed == "False"
    assert released < 1_000
