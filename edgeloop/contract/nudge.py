"""The nudge: an MQTT message that tells devices to refresh the fleet's signed metadata.

It is never the authority on what to install (the signed rollout pointer is),
so nothing in it is trusted: a forged or replayed nudge costs a device one
rate-limited refresh. It names the model and the version the rollout offers,
for logs and for people watching the topics.

It may also carry copies of repository files a refreshing device would fetch
after the timestamp (the snapshot, the model's role, the offered version's
spec, patches into it): an IoT message is billed per started 5 KB and a CDN
request per request, so what rides along in the same 5 KB is a request the
device need not make. The device hands them to python-tuf, which verifies them
exactly as if the CDN had sent them; the nudge vouches for none of them. The
timestamp itself always comes from the CDN (a device ignores a carried one):
it is what tells a nudge from before an abort from the repository's newest state.

Wire format: one line of compact JSON, then the carried files' bytes back to back.

    {"files":[["tuf/metadata/7.snapshot.json",412],...],"model":"vibration","version":3}\\n
    <412 bytes of 7.snapshot.json><...>

The header names each file's path (relative to the repository root) and length,
so the files travel byte for byte as signed (no re-encoding, no escaping: a
signature covers exact bytes) and a reader checks every length against what is
left before it slices. A nudge that carries nothing is the header alone, byte for
byte the small JSON nudge devices have always read. Binary framing would save a
few dozen bytes of a 5 KB unit; a text header keeps the message readable on any
MQTT console and keeps the one strict JSON reader the contract already has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from edgeloop.contract.errors import ContractError
from edgeloop.contract.reader import Fields

# What a device reads at all. Above the 5 KB the cloud fills (IOT_MESSAGE_UNIT),
# so a fleet may move to two units without a device release, and small enough to
# hold in memory on the smallest board before a byte of it is parsed.
MAX_NUDGE_BYTES = 16 * 1024
MAX_HEADER_BYTES = 1024
MAX_CARRIED_FILES = 8
MAX_PATH_CHARS = 160
# AWS IoT Core meters messages (payload and topic) in 5 KB units: up to here, a
# nudge costs what a 75-byte one does.
IOT_MESSAGE_UNIT = 5 * 1024

# Only the repository's metadata and targets, no empty or dot segments.
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9_.-]*"
_PATH = re.compile(rf"tuf/(?:metadata|targets)(?:/{_SEGMENT})+")
_HEADER_KEYS = ("files", "model", "version")


class MalformedNudge(ContractError):
    """Not a nudge; the device refreshes all the same, as any message on the topic asks it to."""


class CarriedFile(NamedTuple):
    """A repository file's exact bytes, at its path under the repository root."""

    path: str
    data: bytes


def check_carried_path(path: str) -> str:
    if len(path) > MAX_PATH_CHARS or not _PATH.fullmatch(path) or "/../" in f"/{path}/":
        raise MalformedNudge(
            f"carried path {path!r:.80} is not a file under tuf/metadata/ or tuf/targets/"
        )
    return path


@dataclass(frozen=True)
class Nudge:
    model: str
    version: int | None
    carried: tuple[CarriedFile, ...] = ()

    def __post_init__(self) -> None:
        if len(self.carried) > MAX_CARRIED_FILES:
            raise MalformedNudge(f"a nudge carries at most {MAX_CARRIED_FILES} files")
        seen: set[str] = set()
        for path, data in self.carried:
            check_carried_path(path)
            if path in seen:
                raise MalformedNudge(f"{path} is carried twice")
            if not data:
                raise MalformedNudge(f"{path} is carried empty")
            seen.add(path)

    def _header(self) -> bytes:
        doc: dict[str, object] = {"model": self.model, "version": self.version}
        if self.carried:
            doc["files"] = [[path, len(data)] for path, data in self.carried]
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def to_bytes(self) -> bytes:
        if not self.carried:
            return self._header()
        return b"\n".join((self._header(), b"".join(data for _, data in self.carried)))

    @property
    def files(self) -> dict[str, bytes]:
        return {path: data for path, data in self.carried}

    @staticmethod
    def filled(
        model: str, version: int | None, candidates: Iterable[CarriedFile], max_bytes: int
    ) -> Nudge:
        """The nudge carrying, in order, each candidate that still fits in `max_bytes`;
        one that does not is skipped (the device fetches it from the CDN) and the
        next, smaller one may still fit."""
        nudge = Nudge(model, version)
        if len(nudge.to_bytes()) > max_bytes:
            raise ValueError(f"even a nudge that carries nothing is over {max_bytes} bytes")
        for candidate in candidates:
            if len(nudge.carried) == MAX_CARRIED_FILES:
                break
            wider = Nudge(model, version, (*nudge.carried, candidate))
            if len(wider.to_bytes()) <= min(max_bytes, MAX_NUDGE_BYTES):
                nudge = wider
        return nudge

    @staticmethod
    def from_bytes(raw: bytes) -> Nudge:
        if len(raw) > MAX_NUDGE_BYTES:
            raise MalformedNudge(f"a nudge is at most {MAX_NUDGE_BYTES} bytes, not {len(raw)}")
        end = raw.find(b"\n", 0, MAX_HEADER_BYTES + 1)
        if end < 0 and len(raw) > MAX_HEADER_BYTES:
            raise MalformedNudge(f"a nudge's header line is at most {MAX_HEADER_BYTES} bytes")
        header, body = (raw, b"") if end < 0 else (raw[:end], memoryview(raw)[end + 1 :])
        try:
            doc = json.loads(header.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise MalformedNudge(f"not JSON: {str(exc)[:80]}") from exc
        f = Fields(doc, "nudge", MalformedNudge, known=_HEADER_KEYS)
        model = f.text("model", max_length=64)
        version = f.optional_integer("version", low=1)
        listed = f.items("files", [], max_items=MAX_CARRIED_FILES)
        sizes: list[tuple[str, int]] = []
        for i, entry in enumerate(listed):
            if (
                not isinstance(entry, list)
                or len(entry) != 2
                or not isinstance(entry[0], str)
                or isinstance(entry[1], bool)
                or not isinstance(entry[1], int)
                or not 1 <= entry[1] <= MAX_NUDGE_BYTES
            ):
                raise MalformedNudge(f"nudge.files[{i}] must be [path, length >= 1]")
            sizes.append((entry[0], entry[1]))
        # Every length is checked against the bytes that came before any is sliced.
        declared = sum(size for _, size in sizes)
        if declared != len(body):
            raise MalformedNudge(
                f"the header declares {declared} bytes of files, {len(body)} follow it"
            )
        carried: list[CarriedFile] = []
        offset = 0
        for path, size in sizes:
            carried.append(CarriedFile(path, bytes(body[offset : offset + size])))
            offset += size
        return Nudge(model, version, tuple(carried))
