"""The whole benchmark: real runs at some sizes (or kept from an earlier result), the 1M
model, and every figure costed, with the goals."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import time
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.fleet.at_rest import AtRest, per_device_day_at_rest
from bench.fleet.costs import Sizes, per_device_day, per_model_day, per_update, reads_by_type
from bench.fleet.devices import report, status_topic
from bench.fleet.moto_run import run_real
from bench.fleet.observed import origin_gets
from bench.fleet.prices import (
    GOAL_MESSAGES,
    GOAL_USD_PER_MILLION,
    IOT_MESSAGE_BYTES,
    PRICES,
    STATUS_OVER_BASIC_INGEST,
)
from bench.fleet.settings import (
    COSTS_FROM,
    DEVICE_MODEL,
    MODELLED,
    OUTCOME_TYPES,
    SIZES,
    at,
)
from bench.fleet.simulation import simulate
from bench.soak import train_versions
from edgeloop.demo.scenarios import ANOMALY_TOML
from edgeloop.factory.config import parse_config

Runs = dict[str, dict[str, Any]]


def measure(sizes: Iterable[int] = SIZES, reuse: Runs | None = None) -> dict[str, Any]:
    """Run the real rollout at each size, model 1M, and cost it all. `reuse` holds real
    runs of an earlier result to keep as measured (sizes not run again here): their
    request counts stand, and their cost inputs (what one device's update asks of the
    CDN, the nudge's and the status report's size) are this run's, or their own when
    no size is run again (the figures recomputed from what was measured)."""
    status_bytes = _status_bytes()
    real = run_sizes(tuple(sizes))
    fresh = set(real)
    for size, kept in (reuse or {}).items():
        if size not in real:
            real[size] = kept
    _cost_inputs(real, fresh, status_bytes)
    real = dict(sorted(real.items(), key=lambda kv: int(kv[0])))
    for r in real.values():
        _cost_run(r)
    modelled = model_million(real)
    return _summary(real, modelled, status_bytes)


def run_sizes(sizes: tuple[int, ...]) -> Runs:
    if not sizes:
        return {}
    commit = _commit()  # now: the code that runs, whatever is committed meanwhile
    config = parse_config(tomllib.loads(ANOMALY_TOML))
    runs = train_versions(2)
    real: Runs = {}
    for n in sizes:
        print(f"fleet: {n:,} devices against moto", flush=True)
        started = time.monotonic()
        r = run_real(n, config, runs)
        r["wall_s"]["total"] = round(time.monotonic() - started, 1)
        r["commit"] = commit
        real[str(n)] = r
        rollout = {k: v for k, v in r["rollout"].items() if k != "history"}
        line = {"devices": n, "wall_s": r["wall_s"], "reports": r["reports"], "rollout": rollout}
        print(json.dumps(line), flush=True)
    return real


def _status_bytes() -> int:
    sample = report("dev-0000000", at(0), "installed")
    body = json.dumps({k: v for k, v in sample.items() if k != "thing"}).encode()
    return len(body) + len(status_topic("dev-0000000"))


def _cost_inputs(real: Runs, fresh: set[str], status_bytes: int) -> None:
    """Fresh runs measure their own cost inputs; kept ones take the largest fresh run's."""
    for size in fresh:
        r = real[size]
        update = r["device_update"]
        r["cost_inputs"] = dataclasses.asdict(
            Sizes(
                status_messages=math.ceil(status_bytes / IOT_MESSAGE_BYTES),
                nudge_messages=r["delivery_messages"] / max(r["deliveries"], 1),
                cdn_requests=float(update["cdn_requests"]),
                download_bytes=int(update["bytes"]),
                origin_gets=float(origin_gets(update["paths"])),
            )
        )
    if not fresh:
        return
    latest = real[max(fresh, key=int)]
    for size in set(real) - fresh:
        real[size]["cost_inputs"] = latest["cost_inputs"]
        real[size]["cost_inputs_from"] = latest["devices"]


def _cost_run(r: dict[str, Any]) -> None:
    r["per_update"] = per_update(
        r["reached"],
        {k: r["reports"].get(k, 0) for k in OUTCOME_TYPES},
        r["schedule_runs"]["rolling"],
        r["deliveries"],
        r,
        Sizes(**r["cost_inputs"]),
    )
    r["per_device_day"] = per_device_day(r, r["cost_inputs"]["status_messages"])
    r["per_model_day"] = per_model_day(r)
    r["at_rest"] = _at_rest(r)
    r["model"] = simulate(r["devices"])


def cost_basis(real: Runs) -> tuple[dict[str, Any], dict[str, int]]:
    """The run whose per-report costs the 1M model takes (COSTS_FROM's, else the largest).
    A report type it happened not to see (a duplicate arriving while its stage still
    counts is rare) is costed as the nearest size that saw it measured it."""
    basis = dict(real.get(str(COSTS_FROM)) or real[str(max(int(k) for k in real))])
    borrowed: dict[str, int] = {}
    per_report = dict(basis["per_report"])
    for kind in OUTCOME_TYPES:
        if kind not in per_report:
            nearest = sorted(
                (r for r in real.values() if kind in r["per_report"]),
                key=lambda r: abs(math.log(r["devices"] / basis["devices"])),
            )
            if nearest:
                per_report[kind] = nearest[0]["per_report"][kind]
                borrowed[kind] = nearest[0]["devices"]
    basis["per_report"] = per_report
    return basis, borrowed


def model_million(real: Runs) -> dict[str, Any]:
    basis, borrowed = cost_basis(real)
    print(f"fleet: modelling {MODELLED:,} devices", flush=True)
    started = time.monotonic()
    modelled = simulate(MODELLED)
    modelled["seconds"] = round(time.monotonic() - started, 1)
    # Every delivery of the model is a nudge, as in the real runs.
    modelled["per_update"] = per_update(
        modelled["reached"],
        modelled["reports"],
        modelled["schedule_runs"]["rolling"],
        modelled["deliveries"],
        basis,
        Sizes(**basis["cost_inputs"]),
    )
    modelled["costs_from"] = basis["devices"]
    modelled["costs_borrowed_from"] = borrowed
    modelled["per_device_day"] = per_device_day(basis, basis["cost_inputs"]["status_messages"])
    modelled["at_rest"] = _at_rest(basis)
    return modelled


# What moves the at-rest total: the agent's earlier intervals, and reconnects (each
# two lifecycle events, which may or may not be metered as messages).
AT_REST_VARIANTS = {
    "keep-alive report daily": AtRest(keepalive_s=86_400.0),
    "refresh without a nudge daily": AtRest(refresh_s=86_400.0),
    "refresh without a nudge hourly (the earlier default)": AtRest(refresh_s=3_600.0),
    "1 reconnect a day": AtRest(reconnects_per_day=1.0),
    "1 reconnect a day, lifecycle events unbilled": AtRest(
        reconnects_per_day=1.0, lifecycle_events_billed=False
    ),
}


def _at_rest(r: dict[str, Any]) -> dict[str, Any]:
    inputs = r["cost_inputs"]
    args = (
        r,
        inputs["status_messages"],
        inputs["nudge_messages"],
        r["per_model_day"]["usd_per_model_day"],
    )
    figures = per_device_day_at_rest(*args)
    figures["variants_usd_per_million_device_days"] = {
        name: per_device_day_at_rest(*args, params)["usd_per_million_device_days_total"]
        for name, params in AT_REST_VARIANTS.items()
    }
    return figures


def _summary(real: Runs, modelled: dict[str, Any], status_bytes: int) -> dict[str, Any]:
    reads = reads_by_type(real)
    flat = all(v is not False for v in reads["flat"].values()) and any(
        v is True for v in reads["flat"].values()
    )
    messages_ok = all(
        r["per_update"]["cloud_messages"] <= GOAL_MESSAGES for r in real.values()
    ) and (modelled["per_update"]["cloud_messages"] <= GOAL_MESSAGES)
    cost_ok = modelled["per_update"]["usd_per_million_updates_total"] <= GOAL_USD_PER_MILLION
    return {
        "sizes": [int(n) for n in real],
        "device_model": DEVICE_MODEL,
        "prices": PRICES,
        "status_message_bytes": status_bytes,
        "status_over_basic_ingest": STATUS_OVER_BASIC_INGEST,
        "runs": real,
        "modelled": modelled,
        "reads_per_report": reads,
        "goals": {
            "dynamodb_reads_per_report_flat": flat,
            "cloud_messages_le_3": messages_ok,
            "usd_per_million_le_5": cost_ok,
            "at_rest_usd_per_million_le_3": modelled["at_rest"]["meets_goal"],
        },
        "goal_messages": GOAL_MESSAGES,
        "goal_usd_per_million": GOAL_USD_PER_MILLION,
        "meets_goal": flat and messages_ok and cost_ok,
        "reproduce": "python -m bench.run fleet",
    }


def _commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    )
    return found.stdout.strip() or "unknown"
