"""Rollout stages: a device's place follows from its thing name alone, the same every time."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from edgeloop.contract import StagePlan
from edgeloop.contract.stages import BANDS, band_of, basis_points

NAMES = [f"device-{i:05d}" for i in range(10_000)]


def test_a_things_place_is_stable_across_calls_and_processes() -> None:
    # Pinned: a change of hash would move every device to another stage mid-rollout.
    assert [basis_points(t) for t in ("pump-1", "pump-10", "pump-7")] == [4046, 1018, 2121]
    assert basis_points("pump-1") == basis_points("pump-1")
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edgeloop.contract.stages import band_of; print(band_of('pump-1'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(other.stdout) == band_of("pump-1") == 40


def test_bands_spread_evenly_over_ten_thousand_names() -> None:
    counts = Counter(band_of(t) for t in NAMES)
    assert sorted(counts) == list(range(BANDS))
    # 100 expected per band, a standard deviation of about 10.
    assert 60 <= min(counts.values()) <= max(counts.values()) <= 140
    shares = Counter(StagePlan().stage_of(t, named_canary=False) for t in NAMES)
    # Stage i holds the devices between the previous percentage and its own.
    for stage, expected in ((1, 100), (2, 900), (3, 4000), (4, 5000)):
        assert abs(shares[stage] - expected) <= 4 * (expected**0.5) + 10, (stage, shares)


def test_named_canaries_are_stage_0_wherever_their_name_puts_them() -> None:
    plan = StagePlan((25, 50, 100))
    assert {plan.stage_of(t, named_canary=True) for t in NAMES[:200]} == {0}


def test_each_stage_adds_the_bands_its_devices_listen_on() -> None:
    plan = StagePlan()
    added = [list(plan.bands_added(stage)) for stage in range(plan.last + 1)]
    assert added[0] == []
    assert sorted(b for bands in added for b in bands) == list(range(BANDS))  # once each
    for stage in range(plan.last + 1):
        assert list(plan.bands_covered(stage)) == sorted(b for s in added[: stage + 1] for b in s)
    for thing in NAMES[:2000]:
        assert band_of(thing) in plan.bands_added(plan.stage_of(thing, named_canary=False))


def test_stages_are_described_as_people_read_them() -> None:
    plan = StagePlan((1, 10, 50, 100))
    assert plan.describe(0) == "stage 0 (named canaries)"
    assert plan.describe(3) == "stage 3 (50%)"
    assert plan.last == 4


@pytest.mark.parametrize(
    ("percentages", "message"),
    [
        ((), r"rollout stages \[\] must end at 100 \(the whole fleet\)"),
        ((10, 50), r"rollout stages \[10, 50\] must end at 100"),
        ((50, 10, 100), r"rollout stages \[50, 10, 100\] must increase strictly"),
        ((10, 10, 100), "must increase strictly"),
        ((0, 100), "rollout stage 0 is not a whole percentage from 1 to 100"),
        ((True, 100), "rollout stage True is not a whole percentage"),
        ((2.5, 100), "rollout stage 2.5 is not a whole percentage"),
    ],
)
def test_a_bad_plan_is_refused_with_what_is_wrong(
    percentages: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        StagePlan(percentages)
