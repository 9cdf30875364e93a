"""Rollout stages: which devices a rollout reaches, decided by the cloud's records alone.

Every device has a fixed place in its fleet, its basis point: the first eight
bytes of SHA-256 over its thing name, modulo 10,000. A stage of a rollout covers
the devices below a percentage (1% covers basis points 0-99). The same thing
name always lands in the same place, so a device keeps its place across
rollouts and no table of assignments has to be kept or read.

Named canaries (members of the canary thing group) come first, as stage 0,
whatever their basis point. The device cannot pick its place: the thing name
is the one its certificate connects as, and group membership is the registry's.

The device learns which versions reach it through its band: one of 100 bands
of 1% each, every band a retained MQTT topic. Moving a rollout to a new stage
publishes only on the bands the stage adds, so each device hears of an update
once, however many stages the rollout has.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass

BASIS_POINTS = 10_000
BANDS = 100
_BAND_WIDTH = BASIS_POINTS // BANDS
DEFAULT_PERCENTAGES = (1, 10, 50, 100)


def basis_points(thing: str) -> int:
    """The device's fixed place in the fleet, 0-9999."""
    digest = hashlib.sha256(thing.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BASIS_POINTS


def band_of(thing: str) -> int:
    """The 1% band (0-99) whose nudge topic the device listens on."""
    return basis_points(thing) // _BAND_WIDTH


def check_percentages(percentages: Iterable[int]) -> tuple[int, ...]:
    """A stage plan: whole percentages, strictly increasing, ending at 100."""
    plan = tuple(percentages)
    if not plan or plan[-1] != 100:
        raise ValueError(f"rollout stages {list(plan)} must end at 100 (the whole fleet)")
    for value in plan:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
            raise ValueError(f"rollout stage {value!r} is not a whole percentage from 1 to 100")
    if any(b <= a for a, b in itertools.pairwise(plan)):
        raise ValueError(f"rollout stages {list(plan)} must increase strictly")
    return plan


@dataclass(frozen=True)
class StagePlan:
    """Stage 0 is the named canaries; stage i (1..n) covers devices below percentages[i-1]%."""

    percentages: tuple[int, ...] = DEFAULT_PERCENTAGES

    def __post_init__(self) -> None:
        check_percentages(self.percentages)

    @property
    def last(self) -> int:
        return len(self.percentages)

    def stage_of(self, thing: str, named_canary: bool) -> int:
        if named_canary:
            return 0
        place = basis_points(thing)
        for stage, percent in enumerate(self.percentages, start=1):
            if place < percent * _BAND_WIDTH:
                return stage
        raise AssertionError("the last stage covers every basis point")

    def bands_added(self, stage: int) -> range:
        """The bands a stage adds to those before it (none for the named canaries)."""
        if stage == 0:
            return range(0)
        low = 0 if stage == 1 else self.percentages[stage - 2]
        return range(low, self.percentages[stage - 1])

    def bands_covered(self, stage: int) -> range:
        """Every band a rollout at `stage` has reached."""
        return range(0, self.percentages[stage - 1] if stage > 0 else 0)

    def describe(self, stage: int) -> str:
        if stage == 0:
            return "stage 0 (named canaries)"
        return f"stage {stage} ({self.percentages[stage - 1]}%)"
