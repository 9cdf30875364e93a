"""Poisoning: k of 20 devices upload label-shifted digits; how far does the shipped model move?

Each scenario runs the factory path the retrain function takes, over a few
rounds: every device uploads real `.npz` bytes under its own key, the run
reads them (`read_batch`), caps each device's share (`assemble`) and trains
against the champion the previous rounds shipped (`train_run`), with and
without a reference set (a clean slice of digits no device can write). The
poisoned devices shift every label by one and upload five times as many rows
as an honest device, replaying what they have.

The figure is the deployed model's accuracy on a clean test set after each
round, against the clean run (k = 0) of the same seed and setting. A round
where the clean run has a model and the poisoned run has none counts as not
within 1 point (a stall), and is reported separately from a worse model
shipped, with the reason the run gave. `by_share` sums it up per poisoned
share: the clean run's figures, then the poisoned runs' without and with a
reference set, and which devices screening left out (poisoned, honest).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits

from edgeloop.factory.config import ModelConfig, load_config
from edgeloop.factory.data import Batch, Dataset, Quarantined, assemble, read_batch, reference_set
from edgeloop.factory.run import train_run
from edgeloop.factory.training import TrainedModel

CONFIG = Path(__file__).parents[1] / "models" / "digits.toml"
DEVICES = 20
ROUNDS = 3
SEEDS = (0, 1)
POISONED = (0, 1, 2, 4, 6, 8)  # of DEVICES
AMPLIFY = 5  # a poisoned device uploads this many times an honest device's rows
TEST_ROWS, REFERENCE_ROWS = 400, 200
POINT = 0.01
# Accuracies are counts over TEST_ROWS; a drop of exactly 4 rows is 1 point,
# and 0.96 - 0.95 is 0.01000000000000001 in floating point.
EPSILON = 1e-9


def _npz(X: npt.NDArray[Any], y: npt.NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


def _accuracy(model: TrainedModel | None, X: npt.NDArray[Any], y: npt.NDArray[Any]) -> float | None:
    if model is None:
        return None
    return float(np.mean(model.predict(X) == y))


def _uploads(
    config: ModelConfig,
    seed: int,
    poisoned: int,
    X: npt.NDArray[np.float64],
    y: npt.NDArray[np.int64],
) -> list[list[Batch | Quarantined]]:
    """Per round, every device's upload as the retrain reads it (real bytes, real keys)."""
    rng = np.random.default_rng(1000 + seed)
    slices = np.array_split(np.arange(len(X)), DEVICES)
    rounds: list[list[Batch | Quarantined]] = [[] for _ in range(ROUNDS)]
    for d, rows in enumerate(slices):
        thing = f"pump-{d:02d}"
        bad = d < poisoned
        for r, part in enumerate(np.array_split(rows, ROUNDS)):
            labels = (y[part] + 1) % 10 if bad else y[part]
            Xp = X[part]
            if bad:
                replay = rng.integers(0, len(part), AMPLIFY * len(part))
                Xp, labels = Xp[replay], labels[replay]
            key = f"data/{config.model.name}/{thing}/{r:04d}.npz"
            rounds[r].append(read_batch(key, _npz(Xp, labels), config))
    return rounds


def _scenario(
    config: ModelConfig,
    seed: int,
    poisoned: int,
    data: tuple[npt.NDArray[Any], ...],
    reference: Dataset | None,
) -> list[dict[str, Any]]:
    X_pool, y_pool, X_test, y_test = data
    rounds = _uploads(config, seed, poisoned, X_pool, y_pool)
    champion: TrainedModel | None = None
    seen: list[Batch | Quarantined] = []
    out = []
    for r, uploads in enumerate(rounds):
        seen.extend(uploads)  # the retrain reads every upload still under data/
        dataset = assemble(seen, config)
        result = train_run(config, dataset, champion, reference)
        if result.promoted and result.model is not None:
            champion = result.model
        out.append(
            {
                "round": r + 1,
                "shipped": result.promoted,
                "accuracy": _accuracy(champion, X_test, y_test),
                "reason": result.decision.reason,
                "holdout_devices": result.record["split"].get("holdout_devices", []),
                "screened": [d["device"] for d in result.record.get("screened", [])],
                "device_cap_rows": dataset.device_cap,
            }
        )
    return out


def measure(seeds: Sequence[int] = SEEDS, poisoned: Sequence[int] = POISONED) -> dict[str, Any]:
    base = load_config(CONFIG)
    with_ref = base.model_copy(
        update={"gate": base.gate.model_copy(update={"reference": "reference/digits/"})}
    )
    X_all, y_all = load_digits(return_X_y=True)
    results: dict[str, Any] = {}
    for label, config in (("without_reference", base), ("with_reference", with_ref)):
        per_k: dict[int, dict[str, Any]] = {}
        for seed in seeds:
            order = np.random.default_rng(seed).permutation(len(X_all))
            test, ref, pool = np.split(order, [TEST_ROWS, TEST_ROWS + REFERENCE_ROWS])
            data = (
                X_all[pool].astype(np.float64),
                y_all[pool].astype(np.int64),
                X_all[test].astype(np.float64),
                y_all[test].astype(np.int64),
            )
            reference = None
            if config.gate.reference:
                item = read_batch(
                    "reference/digits/clean.npz", _npz(X_all[ref], y_all[ref]), config
                )
                reference = reference_set([item], config)
            clean = _scenario(config, seed, 0, data, reference)
            for k in poisoned:
                runs = clean if k == 0 else _scenario(config, seed, k, data, reference)
                entry = per_k.setdefault(
                    k,
                    {
                        "share": k / DEVICES,
                        "runs": [],
                        "within_1pt": True,
                        "stalled": 0,
                        "worse_shipped": 0,
                        "max_drop_points": 0.0,
                        "stall_reasons": [],
                        "screened_poisoned": 0,
                        "screened_honest": 0,
                    },
                )
                for mine, theirs in zip(runs, clean, strict=True):
                    a, c = mine["accuracy"], theirs["accuracy"]
                    poisoned_things = {f"pump-{d:02d}" for d in range(k)}
                    entry["screened_poisoned"] += len(set(mine["screened"]) & poisoned_things)
                    entry["screened_honest"] += len(set(mine["screened"]) - poisoned_things)
                    if c is not None and a is None:
                        entry["stalled"] += 1
                        entry["stall_reasons"].append(mine["reason"])
                        entry["within_1pt"] = False
                    elif c is not None and a is not None:
                        drop = c - a
                        entry["max_drop_points"] = max(entry["max_drop_points"], 100 * drop)
                        if drop > POINT + EPSILON:
                            entry["within_1pt"] = False
                            entry["worse_shipped"] += int(mine["shipped"])
                    if mine["shipped"] and c is None:
                        # A model shipped where the clean run had none: judge it
                        # against the clean run's first model.
                        first = next((x["accuracy"] for x in clean if x["accuracy"]), None)
                        if first is not None and a is not None and a < first - POINT - EPSILON:
                            entry["worse_shipped"] += 1
                entry["runs"].append({"seed": seed, "rounds": runs})
        ordered = sorted(per_k)
        results[label] = {
            "by_poisoned_devices": {str(k): per_k[k] for k in ordered},
            "largest_share_within_1pt": _largest(per_k, lambda e: e["within_1pt"]),
            "largest_share_no_worse_shipped": _largest(per_k, lambda e: e["worse_shipped"] == 0),
        }
    one = results["without_reference"]["by_poisoned_devices"].get("1")
    goal_one = bool(one and one["within_1pt"])
    goal_ref = all(
        e["worse_shipped"] == 0
        for k, e in results["with_reference"]["by_poisoned_devices"].items()
        if int(k) / DEVICES <= 0.2
    )
    return {
        "by_share": _by_share(results),
        "devices": DEVICES,
        "rounds": ROUNDS,
        "seeds": list(seeds),
        "amplify": AMPLIFY,
        "attack": "labels shifted by one ((y + 1) mod 10)",
        "max_device_share": base.train.max_device_share,
        "config": str(CONFIG.relative_to(CONFIG.parents[1])),
        **results,
        "goal_one_device_within_1pt": goal_one,
        "goal_reference_20pct_no_worse_shipped": goal_ref,
        "meets_goal": goal_one and goal_ref,
    }


def _by_share(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per poisoned share: the clean run's deployed accuracy, then each setting's outcome."""
    out = []
    for k in results["without_reference"]["by_poisoned_devices"]:
        row: dict[str, Any] = {"poisoned_devices": int(k), "share": int(k) / DEVICES}
        for label in ("without_reference", "with_reference"):
            clean = results[label]["by_poisoned_devices"]["0"]["runs"]
            e = results[label]["by_poisoned_devices"][k]
            row["clean_accuracy"] = [[x["accuracy"] for x in r["rounds"]] for r in clean]
            row[label] = {
                "accuracy": [[x["accuracy"] for x in r["rounds"]] for r in e["runs"]],
                "within_1pt": e["within_1pt"],
                "max_drop_points": round(e["max_drop_points"], 2),
                "stalled_rounds": e["stalled"],
                "worse_shipped": e["worse_shipped"],
                "screened_poisoned": e["screened_poisoned"],
                "screened_honest": e["screened_honest"],
            }
        out.append(row)
    return out


def _print_by_share(figures: dict[str, Any]) -> None:
    def cell(e: dict[str, Any]) -> str:
        return (
            f"drop {e['max_drop_points']:5.2f} pt, stalled {e['stalled_rounds']}, "
            f"worse {e['worse_shipped']}, screened {e['screened_poisoned']}+{e['screened_honest']}"
        )

    print("share  clean (final, per seed)  | without reference | with reference")
    for row in figures["by_share"]:
        final = [r[-1] for r in row["clean_accuracy"]]
        print(
            f"{row['share']:5.0%}  {final} | {cell(row['without_reference'])} | "
            f"{cell(row['with_reference'])}"
        )
    print(
        "(screened a+b: poisoned + honest devices left out, summed over rounds and seeds)\n"
        f"goal 1, one device in 20 within 1 pt: {figures['goal_one_device_within_1pt']}; "
        f"goal 2, <= 20% with a reference set, no worse model shipped: "
        f"{figures['goal_reference_20pct_no_worse_shipped']}"
    )


def _largest(per_k: dict[int, dict[str, Any]], ok: Any) -> float:
    """The largest poisoned share up to which every smaller share also holds."""
    best = 0.0
    for k in sorted(per_k):
        if not ok(per_k[k]):
            break
        best = per_k[k]["share"]
    return best


if __name__ == "__main__":
    # The section alone, without rewriting the README (bench.run does that).
    import time

    from bench.common import write_result

    start = time.monotonic()
    figures = measure()
    figures["seconds"] = round(time.monotonic() - start, 1)
    _print_by_share(figures)
    print(write_result("poison", figures))
