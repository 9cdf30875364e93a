"""The nudge: an MQTT message that tells devices to refresh the fleet's signed metadata.

It is never the authority on what to install (the signed rollout pointer is),
so nothing in it is trusted: a forged or replayed nudge costs a device one
rate-limited refresh. It names the model and the version the rollout offers,
for logs and for people watching the topics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edgeloop.contract.errors import ContractError
from edgeloop.contract.reader import Fields

MAX_NUDGE_BYTES = 256


class MalformedNudge(ContractError):
    """Not a nudge; the device refreshes all the same, as any message on the topic asks it to."""


@dataclass(frozen=True)
class Nudge:
    model: str
    version: int | None

    def to_bytes(self) -> bytes:
        doc = {"model": self.model, "version": self.version}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def from_bytes(raw: bytes) -> Nudge:
        if len(raw) > MAX_NUDGE_BYTES:
            raise MalformedNudge(f"a nudge is at most {MAX_NUDGE_BYTES} bytes, not {len(raw)}")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise MalformedNudge(f"not JSON: {str(exc)[:80]}") from exc
        f = Fields(doc, "nudge", MalformedNudge, known=("model", "version"))
        return Nudge(
            model=f.text("model", max_length=64),
            version=f.optional_integer("version", low=1),
        )
