"""The demo's report: report.json (the facts), report.md (for people), report.png (the picture)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeloop.demo import shipments
from functions.common.registry import Registry

if TYPE_CHECKING:
    from edgeloop.demo.scenarios import Scenario
    from edgeloop.demo.state import DemoState
    from edgeloop.local.runtime import LocalRuntime


def build_report(
    state: DemoState, cloud: LocalRuntime, scenario: Scenario, quality: dict[str, Any]
) -> dict[str, Any]:
    logged = list(cloud.cdn.log.shipments)
    shipped: list[dict[str, Any]] = [shipments.to_json(x) for x in logged]
    received = shipments.by_device(logged)
    full_sizes: dict[int, int] = {}
    compressed_sizes: dict[int, int] = {}
    registry = Registry(cloud.client("dynamodb"), cloud.resources.registry_table)
    for version in sorted({x["version"] for x in shipped if x["version"] is not None}):
        record = registry.version(scenario.model, version) or {}
        full_sizes[version] = int(record.get("size", 0))
        compressed_sizes[version] = int(record.get("compressed_full_size", 0))
    devices = {}
    for agent in state.agents:
        c = agent.counters
        with_model = c.scored - c.scored_without_model
        devices[agent.config.device.thing] = {
            "stage": state.stages.get(agent.config.device.thing, "-"),
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
                shipments.NUDGE: agent.updates.nudge_bytes,
                **received.get(agent.config.device.thing, dict.fromkeys(shipments.KINDS, 0)),
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
        "shipments": shipped,
        "full_artifact_bytes": {str(k): v for k, v in sorted(full_sizes.items())},
        "compressed_artifact_bytes": {str(k): v for k, v in sorted(compressed_sizes.items())},
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

    doc = tomllib.loads(scenario.config)
    gate: dict[str, Any] = {
        "min_improvement": 0.0,
        "confidence": 0.0,
        **doc["gate"],
        "holdout": doc.get("train", {}).get("holdout", 0.2),
    }
    return gate


def gate_sentence(gate: dict[str, Any]) -> str:
    """The gate in one sentence, as the report states it."""
    metric = gate["metric"]
    judged = (
        f"the {gate['confidence']:.0%} lower confidence bound of {metric}"
        if gate.get("confidence")
        else metric
    )
    return (
        f"A candidate ships when {judged} on held-out rows is at least {gate['threshold']} "
        f"and beats the champion's {metric} on the same rows by more than "
        f"{gate['min_improvement']}, significantly (a one-sided sign test at "
        f"{gate.get('significance', 0.05):g} on the rows only one of them gets right): a tie "
        f"never ships. About {gate['holdout']:.0%} of the rows are held out: whole devices "
        f"once there are at least {math.ceil(1 / gate['holdout'] - 1e-9)} of them, so no "
        "device's rows both train and judge a candidate, else rows chosen by a hash of each "
        "row. A row stays on its side as data accumulates and each round adds new held-out "
        "rows, so the candidate and the champion are judged on more rows every round and "
        "never on rows either trained on."
    )


def update_lines(report: dict[str, Any]) -> list[str]:
    """Per version: what a device fetched to get it, against the compressed model."""
    lines = []
    for version in sorted({x["version"] for x in report["shipments"] if x["version"]}):
        got = [x for x in report["shipments"] if x["version"] == version]
        patches = sorted({x["bytes"] for x in got if x["kind"] == "patch"})
        compressed = report["compressed_artifact_bytes"].get(str(version))
        fetched_model = any(x["kind"] in ("compressed", "full") for x in got)
        if patches and compressed:
            sizes = f"{patches[0]}–{patches[-1]}" if len(patches) > 1 else str(patches[0])
            share = max(patches) / compressed
            lines.append(
                f"v{version}: a patch of {sizes} B, {share:.0%} of the {compressed} B compressed "
                f"model ({report['full_artifact_bytes'][str(version)]} B uncompressed)"
            )
        elif fetched_model and compressed:
            lines.append(f"v{version}: the compressed full model, {compressed} B")
        elif compressed:
            # Nothing of the model from the CDN: the patch rode in the nudge.
            lines.append(
                f"v{version}: its patch came inside the nudge (MQTT) beside the signed "
                f"metadata; no model bytes from the CDN ({compressed} B compressed model)"
            )
    return lines


def quality_lines(quality: dict[str, Any]) -> list[str]:
    """The quality figures in words, not a dict."""
    if "confusion" in quality:
        c = quality["confusion"]
        planted, alarms = c["tp"] + c["fn"], c["tp"] + c["fp"]
        return [
            f"planted anomalies caught on board: {c['tp']} of {planted} "
            f"(recall {quality['recall']:.3f})",
            f"alarms that were planted anomalies: {c['tp']} of {alarms} "
            f"(precision {quality['precision']:.3f})",
            f"normal samples scored without an alarm: {c['tn']} of {c['tn'] + c['fp']}",
        ]
    if "deployed_accuracy" in quality:
        return [
            f"accuracy of the deployed model on {quality['test_rows']} digits no device "
            f"uploaded: {quality['deployed_accuracy']:.3f}"
        ]
    return ["no model was promoted, so there is nothing to measure on board"]


def _markdown(report: dict[str, Any]) -> str:
    final = report["final_version"]
    lines = [f"# edgeloop demo: {report['scenario']}", ""]
    lines.append(
        f"Finished in {report['elapsed_seconds']} s with {len(report['devices'])} devices; "
        + (f"final model version: v{final}." if final else "no model was promoted.")
    )
    lines += ["", "## The gate", "", gate_sentence(report["gate"])]
    lines += [
        "",
        "## Rounds",
        "",
        "| round | data | decision | held-out rows | metrics | judged | version |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rounds"]:
        for run in r["runs"] or [{"decision": "(no run)", "metrics": {}, "version": None}]:
            metrics = run.get("metrics") or {}
            shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "holdout_rows")
            held = int(metrics["holdout_rows"]) if "holdout_rows" in metrics else "-"
            judged = f"{run['judged']:.3f}" if run.get("judged") is not None else "-"
            lines.append(
                f"| {r['round']} | {r['label']} | {run['decision']} | {held} | {shown} | "
                f"{judged} | {'v' + str(run['version']) if run.get('version') else '-'} |"
            )
    lines += ["", "## Updates", "", *[f"- {line}" for line in update_lines(report)]]
    lines += ["", "## Quality", "", *[f"- {line}" for line in quality_lines(report["quality"])]]
    lines += [
        "",
        "## Devices",
        "",
        "Bytes each device received: its nudges over MQTT (with the signed metadata, the "
        "spec and the patch they carry when those fit one message), then from the CDN the "
        "signed metadata and the small files beside a version (its spec, golden inputs "
        "when they changed), patches, the zstd-compressed full model (what a device "
        "without a usable patch fetches) and the uncompressed full model (the last resort).",
        "",
        "| device | stage | version | nudges (MQTT) | metadata | patches "
        "| compressed full (.zstd) | full (.tflite) | upload share before swap | after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, d in report["devices"].items():
        b = d["bytes_received"]
        version = f"v{d['final_version']}" if d["final_version"] else "-"
        lines.append(
            f"| {name} | {d['stage']} | {version} | {b[shipments.NUDGE]} "
            f"| {b['metadata']} | {b['patch']} | {b['compressed']} | {b['full']} | "
            f"{d['upload_share_before_swap']:.0%} | {d['upload_share_after_swap']:.0%} |"
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
                held = (run.get("metrics") or {}).get("holdout_rows")
                xs.append(f"round {r['round']}" + (f"\n{int(held)} held out" if held else ""))
                ys.append(value)
                judged.append(run.get("judged") if run.get("judged") is not None else value)
                colours.append("tab:green" if run["decision"] == "promoted" else "tab:red")
    ax.bar(range(len(judged)), judged, color=colours, tick_label=xs, label="judged by the gate")
    ax.scatter(range(len(ys)), ys, color="black", marker="_", s=400, label=f"held-out {metric}")
    gate = report["gate"]
    ax.axhline(
        gate["threshold"],
        color="black",
        linestyle="--",
        label=f"gate threshold {gate['threshold']}",
    )
    low = min([*judged, report["gate"]["threshold"]], default=0.0)
    ax.set_ylim(max(-1.0, low - 0.15), 1.0)
    judged_by = f"{gate['confidence']:.0%} lower bound" if gate.get("confidence") else metric
    ax.set_title(f"{metric} per training run (bar: {judged_by}; green: promoted)")
    ax.legend(loc="lower right", fontsize="small")

    ax = axes[0][1]
    names = list(report["devices"])
    bottom = [0] * len(names)
    for kind in (shipments.NUDGE, *shipments.KINDS):
        heights = [report["devices"][n]["bytes_received"][kind] for n in names]
        ax.bar(names, heights, bottom=bottom, label=shipments.LABELS[kind])
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
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
