"""The SimPy model of a rollout gives what the committed fleet results recorded for it."""

from __future__ import annotations

import json

from bench.common import RESULTS
from bench.fleet.devices import Devices
from bench.fleet.settings import OUTCOME_TYPES
from bench.fleet.simulation import simulate


def test_the_model_reproduces_the_recorded_1000_device_timeline() -> None:
    recorded = json.loads((RESULTS / "fleet.json").read_text())["runs"]["1000"]["model"]
    assert simulate(1000) == recorded


def test_every_device_reports_and_only_the_failing_ones_do_not_install() -> None:
    modelled = simulate(200)
    assert modelled["state"] == "complete"
    assert modelled["reached"] == 200
    assert sum(modelled["reports"][k] for k in OUTCOME_TYPES) >= 200
    assert modelled["installed"] == 200 - int(Devices.draw(200).fails.sum())
