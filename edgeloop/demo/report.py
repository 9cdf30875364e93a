"""The demo's report: report.json (the facts), report.md (for people), report.png (the picture)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeloop.demo.scenarios import Scenario
    from edgeloop.demo.state import DemoState
    from edgeloop.local.runtime import LocalRuntime


def build_report(
    state: DemoState, cloud: LocalRuntime, scenario: Scenario, quality: dict[str, Any]
) -> dict[str, Any]:
    shipments: list[dict[str, Any]] = [
        {
            "device": s.device,
            "path": s.path,
            "kind": s.kind,
            "bytes": s.bytes,
            "version": int(s.path.split("/")[2]),
        }
        for s in cloud.cdn.log.shipments
    ]
    full_sizes: dict[int, int] = {}
    for s in cloud.cdn.log.shipments:
        if s.kind == "full":
            full_sizes[int(s.path.split("/")[2])] = s.bytes
    s3 = cloud.client("s3")
    for version in {x["version"] for x in shipments}:
        if version not in full_sizes:
            head = s3.head_object(
                Bucket=cloud.resources.artifact_bucket,
                Key=f"models/{scenario.model}/{version}/model.tflite",
            )
            full_sizes[version] = int(head["ContentLength"])
    devices = {}
    for agent in state.agents:
        c = agent.counters
        with_model = c.scored - c.scored_without_model
        devices[agent.config.device.thing] = {
            "ring": agent.config.device.ring,
            "final_version": agent.version,
            "versions_over_time": [
                [round(t - state_epoch(state), 2), v] for t, v in agent.versions_seen
            ],
            "samples_without_model": c.scored_without_model,
            "samples_with_model": with_model,
            "uploaded_rows_without_model": c.uploaded_rows_without_model,
            "uploaded_rows_with_model": c.uploaded_rows_with_model,
            "upload_share_before_swap": c.uploaded_rows_without_model
            / max(1, c.scored_without_model),
            "upload_share_after_swap": c.uploaded_rows_with_model / max(1, with_model),
            "alarms": c.alarms,
            "bytes_received": {
                "full": sum(
                    x["bytes"]
                    for x in shipments
                    if x["device"] == agent.config.device.thing and x["kind"] == "full"
                ),
                "patch": sum(
                    x["bytes"]
                    for x in shipments
                    if x["device"] == agent.config.device.thing and x["kind"] == "patch"
                ),
            },
        }
    return {
        "scenario": scenario.name,
        "model": scenario.model,
        "devices": devices,
        "rounds": state.rounds,
        "final_version": state.champion,
        "gate": _gate(scenario),
        "quality": quality,
        "shipments": shipments,
        "full_artifact_bytes": {str(k): v for k, v in sorted(full_sizes.items())},
        "events": state.events,
        "router_errors": cloud.router.errors,
        "elapsed_seconds": round(state.elapsed, 1),
    }


def state_epoch(state: DemoState) -> float:
    """Agents stamp wall-clock times; the demo's own clock started this long ago."""
    import time

    return time.time() - state.elapsed


def _gate(scenario: Scenario) -> dict[str, Any]:
    import tomllib

    gate: dict[str, Any] = tomllib.loads(scenario.config)["gate"]
    return gate


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# edgeloop demo: {report['scenario']}", ""]
    lines.append(
        f"Finished in {report['elapsed_seconds']} s with {len(report['devices'])} devices; "
        f"final model version: v{report['final_version']}."
    )
    lines += [
        "",
        "## Rounds",
        "",
        "| round | data | decision | metrics | version |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["rounds"]:
        for run in r["runs"] or [{"decision": "(no run)", "metrics": {}, "version": None}]:
            metrics = ", ".join(
                f"{k} {v:.3f}" for k, v in (run.get("metrics") or {}).items() if k != "holdout_rows"
            )
            lines.append(
                f"| {r['round']} | {r['label']} | {run['decision']} | {metrics} | "
                f"{'v' + str(run['version']) if run.get('version') else '-'} |"
            )
    lines += ["", "## Quality", ""]
    for key, value in report["quality"].items():
        lines.append(f"- {key}: {value if not isinstance(value, float) else round(value, 4)}")
    lines += [
        "",
        "## Devices",
        "",
        "| device | ring | version | bytes full | bytes patch | upload share before swap | after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, d in report["devices"].items():
        lines.append(
            f"| {name} | {d['ring']} | v{d['final_version']} | {d['bytes_received']['full']} | "
            f"{d['bytes_received']['patch']} | {d['upload_share_before_swap']:.0%} | "
            f"{d['upload_share_after_swap']:.0%} |"
        )
    lines += ["", "## What happened", "", *[f"    {e}" for e in report["events"]], ""]
    lines.append("![report](report.png)")
    return "\n".join(lines) + "\n"


def _picture(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    fig.suptitle(
        f"edgeloop demo: {report['scenario']} ({len(report['devices'])} devices, "
        f"{report['elapsed_seconds']} s)"
    )
    ax = axes[0][0]
    metric = report["gate"]["metric"]
    xs, ys, judged, colours = [], [], [], []
    for r in report["rounds"]:
        for run in r["runs"]:
            value = (run.get("metrics") or {}).get(metric)
            if value is not None:
                xs.append(f"round {r['round']}")
                ys.append(value)
                judged.append(run.get("judged") if run.get("judged") is not None else value)
                colours.append("tab:green" if run["decision"] == "promoted" else "tab:red")
    ax.bar(range(len(judged)), judged, color=colours, tick_label=xs, label="judged by the gate")
    ax.scatter(range(len(ys)), ys, color="black", marker="_", s=400, label=f"held-out {metric}")
    ax.axhline(report["gate"]["threshold"], color="black", linestyle="--", label="gate threshold")
    low = min([*judged, report["gate"]["threshold"]], default=0.0)
    ax.set_ylim(max(-1.0, low - 0.15), 1.0)
    ax.set_title(f"{metric} per training run (green: promoted)")
    ax.legend(loc="lower right", fontsize="small")

    ax = axes[0][1]
    names = list(report["devices"])
    full = [report["devices"][n]["bytes_received"]["full"] for n in names]
    patch = [report["devices"][n]["bytes_received"]["patch"] for n in names]
    ax.bar(names, full, label="full artifacts")
    ax.bar(names, patch, bottom=full, label="patches")
    ax.set_title("bytes each device received")
    ax.legend()
    ax.tick_params(axis="x", rotation=30)

    ax = axes[1][0]
    for name, d in report["devices"].items():
        points = [(t, v or 0) for t, v in d["versions_over_time"]]
        if points:
            times, versions = zip(*points, strict=True)
            ax.step(
                [*times, report["elapsed_seconds"]],
                [*versions, versions[-1]],
                where="post",
                label=name,
            )
    ax.set_title("model version on each device over time (s)")
    ax.set_yticks(range(0, (report["final_version"] or 0) + 1))
    ax.legend(fontsize="small")

    ax = axes[1][1]
    before = [report["devices"][n]["upload_share_before_swap"] for n in names]
    after = [report["devices"][n]["upload_share_after_swap"] for n in names]
    positions = range(len(names))
    ax.bar([p - 0.2 for p in positions], before, width=0.4, label="before a model")
    ax.bar([p + 0.2 for p in positions], after, width=0.4, label="with a model")
    ax.set_xticks(list(positions), names, rotation=30)
    ax.set_title("share of samples uploaded")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text(_markdown(report))
    _picture(report, out / "report.png")
