"""The README's benchmark table, from bench/results/*.json: every section's rows, and the
rewrite of the block between its markers. Reads results only, so any benchmark can save
its own figures and refresh the table without importing the others."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import inference
from bench.common import RESULTS

Row = tuple[str, str, str, str, str]
README = Path(__file__).parents[1] / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _count(n: float, noun: str) -> str:
    return f"{n:.0f} {noun}{'' if round(n) == 1 else 's'}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _bytes_rows(b: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, label in (
        ("digits-int8-sparse0.01", "digits MLP, int8 + sparse updates"),
        ("vibration-int8-dense", "k-means, int8"),
        ("digits-512x512-none-sparse0.01", "digits MLP 64-512-512-10, float32 + sparse"),
        ("digits-none-dense", "digits MLP, float32, dense (for comparison)"),
    ):
        v = b["variants"].get(name)
        if v is None:
            continue
        s = v["summary"]
        r = s["median_received"]
        compare = name == "digits-none-dense"
        if compare:
            goal = "-"
        elif s["goal_applies"]:
            goal = "≤ 25% (models ≥ 50 KB), within 0.5 pt of a cold retrain, never > 100%"
        else:
            goal = f"report (a {s['model_bytes'] / 1024:.0f} KB model: under the 50 KB goal)"
        rows.append(
            (
                f"bytes per update ÷ the same update with the full model: {label}",
                goal,
                f"median {_pct(s['median_ratio'])}, max {_pct(s['max_ratio'])} "
                f"(patch alone ÷ zstd model: {_pct(s['median_patch_only_ratio'])}); median "
                f"bytes: nudge {r['nudge']:.0f}, metadata {r['metadata']:.0f}, spec "
                f"{r['spec']:.0f}, golden inputs {r['golden']:.0f}, patch {r['patch']:.0f} "
                f"vs zstd model {r['compressed_full']:.0f}; "
                f"{_count(r.get('cdn_requests', 0), 'CDN request')} per update; "
                f"{s['mean_gap_points']:+.2f} pt vs cold ({b['steps']} steps × "
                f"{s['seeds']} seed{'s' if s['seeds'] != 1 else ''})",
                "-" if compare else _mark(s["meets_goal"]),
                "`python -m bench.run bytes`",
            )
        )
    return rows


def _inference_rows(i: dict[str, Any]) -> list[Row]:
    """Per model: against scikit-learn, against the bare interpreter, and batches; each
    side timed in a clean process of its own."""
    cmd = "`python -m bench.run inference`"
    rows: list[Row] = []
    for name, m in i["models"].items():
        lite = m["backends"]["ai_edge_litert"]
        old = m["backends"].get("tflite_runtime")
        rows.append(
            (
                f"single-sample inference vs scikit-learn: {name}",
                "≥ 20x",
                f"{m['speedup_p50']}x at p50 ({lite['predict_single']['p50_us']} vs "
                f"{m['sklearn_single']['p50_us']} µs), {m['speedup_p99']}x at p99; "
                f"tflite-runtime 2.14: {m.get('speedup_p50_tflite_runtime_214', '-')}x",
                _mark(m["speedup_p50"] >= inference.GOAL_SPEEDUP),
                cmd,
            )
        )
        rows.append(
            (
                f"edgeloop's single-sample scoring ÷ the bare interpreter: {name}",
                f"≤ {i['goal_overhead']:g}x, both backends",
                "; ".join(
                    f"{b['backend']}: {b['score_over_interpreter_p50']}x at p50 "
                    f"({b['score_single']['p50_us']} vs {b['interpreter_single']['p50_us']} µs "
                    f"set-tensor + invoke + get-tensor; predict {b['predict_single']['p50_us']} µs)"
                    for b in (lite, old)
                    if b is not None
                ),
                _mark(
                    all(
                        b["score_over_interpreter_p50"] <= i["goal_overhead"]
                        for b in m["backends"].values()
                    )
                ),
                cmd,
            )
        )
        rows.append(
            (
                f"batch throughput: {name}",
                "report",
                ", ".join(f"{int(v):,}/s at {k}" for k, v in lite["batch_samples_per_s"].items()),
                "-",
                cmd,
            )
        )
    return rows


def _floor_note(a: dict[str, Any]) -> str:
    """Where the peak goes: the libraries' floor measured alone, and the agent above it."""
    floor = a.get("floor_rss_mb")
    if not floor:
        return ""
    note = (
        f"; of the peak, {floor['link']} MB is the libraries alone (the bare "
        f"interpreter {floor['python']}, NumPy {floor['numpy'] - floor['python']:.1f}, "
        f"the TFLite interpreter with the model {floor['interpreter'] - floor['numpy']:.1f}, "
        f"ssl and paho {floor['link'] - floor['interpreter']:.1f}) and "
        f"{a['above_floor_mb']} MB the agent above them"
    )
    if "with_children_peak_rss_mb" in a:
        note += (
            f"; python-tuf and cryptography verifying ({floor['verifying'] - floor['link']:.1f}"
            " MB alone) run in a short-lived child per refresh: the agent with its children "
            f"peaked at {a['with_children_peak_rss_mb']} MB during the install (sampled), "
            f"the children alone at {a['children_peak_rss_mb']} MB"
        )
    return note


def _footprint_rows(af: dict[str, Any]) -> list[Row]:
    """One row per interpreter the agent ran in, as its own process."""
    rows: list[Row] = []
    for a in af["agents"].values():
        rows.append(
            (
                f"a running agent ({a['backend']}): its own process, a model installed, "
                "samples on stdin",
                f"≤ {a['goal_rss_mb']:g} MB resident; idle CPU ≤ {af['goal_idle_cpu_pct']:g}% "
                "of one core",
                f"{a['installed_rss_mb']} MB resident with the model installed, peak "
                f"{a['peak_rss_mb']} MB; `run` imports in {a.get('run_import_ms', '-')} ms; "
                f"idle {a['idle_cpu_pct_of_core']:.2f}% of one core (over {a['idle_seconds']:g} "
                f"s); {a['cpu_s_per_1000_samples'] * 1000:.1f} ms "
                f"CPU per 1,000 samples ({a['samples']:,} at {a['rate']:,}/s)" + _floor_note(a),
                _mark(a["meets_goal"]),
                "`python -m bench.run agent_footprint`",
            )
        )
    return rows


def _verify_note(latency: dict[str, Any]) -> str:
    """What verifying in a child adds beside the model's check (absent in older results)."""
    if "verify_in_child_added_p50" not in latency:
        return ""
    return (
        f"; verifying in a child as well, as `run` does: "
        f"{latency['child_verify_and_check_p50']} ms "
        f"(+{latency['verify_in_child_added_p50']} ms for starting it and importing python-tuf)"
    )


def _swap_rows(w: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    u, base = w["with_updates"], w["without_updates"]
    rows.append(
        (
            f"hot swap under {w['rate']:,} samples/s ({w['updates']} real updates)",
            "0 dropped, < 5 ms stall",
            f"{u['dropped']} dropped; longest stall {u['max_stall_ms']} ms "
            f"(same loop without updates: {base['max_stall_ms']} ms)",
            _mark(w["meets_goal"]),
            "`python -m bench.run swap`",
        )
    )
    memory = w.get("agent_memory")
    if memory:
        rows.append(
            (
                "agent memory",
                "report",
                f"{memory['import_rss_mb']} MB resident after importing what `run` does; "
                f"{memory['update_peak_alloc_kb']} KB peak Python allocations over "
                f"{w['updates']} updates",
                "-",
                "`python -m bench.run swap`",
            )
        )
    latency = w.get("update_latency_ms")
    if latency:
        rows.append(
            (
                "update latency: a new model tried in a child process first",
                f"adds ≤ {latency['goal_added_ms']:.0f} ms; hot-swap stall unchanged",
                f"{latency['child_process_check_p50']} ms per update with the child-process "
                f"check vs {latency['in_process_check_p50']} ms with the check in the "
                f"agent's own process (+{latency['added_p50']} ms, median of "
                f"{w['updates']} updates)" + _verify_note(latency),
                _mark(latency["added_p50"] <= latency["goal_added_ms"]),
                "`python -m bench.run swap`",
            )
        )
    return rows


def _loop_rows(lp: dict[str, Any]) -> list[Row]:
    refused = lp.get("refused_rounds", [])
    rows: list[Row] = []
    rows.append(
        (
            f"local loop: last upload → all {lp['devices']} devices on the new version",
            "< 5 s",
            ", ".join(f"v{r['version']}: {r['upload_to_all_swapped_s']} s" for r in lp["rounds"])
            + (
                f"; {len(refused)} round(s) refused by the gate, reported: "
                + "; ".join(f"round {r['round']}: {r['reason']}" for r in refused)
                if refused
                else ""
            ),
            _mark(lp["meets_goal"]),
            "`python -m bench.run loop`",
        )
    )
    return rows


def _fanout_rows(f: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    rows.append(
        (
            f"fan-out: one nudge → {f['agents']:,} agents refreshed and swapped",
            "< 60 s, O(1) cloud publishes",
            ", ".join(f"{r['shipped']}: {r['announce_to_all_swapped_s']} s" for r in f["rounds"])
            + f"; {f['cloud_publishes_per_version']} publish per version",
            _mark(f["meets_goal"]),
            "`python -m bench.run fanout`",
        )
    )
    return rows


def _stage_delay_rows(sd: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    rows.append(
        (
            "counted outcome → stage decided and pointer signed (status only counts; "
            "the registry's stream invokes the schedule function)",
            f"seconds (≤ {sd['goal_s']:g} s)",
            f"median {sd['median_s']} s, max {sd['max_s']} s over {sd['versions']} "
            f"rollouts (stream polled every {sd['stream_poll_s']:g} s, "
            f"{sd['stream_batching_window_s']:g} s batching window)",
            _mark(sd["meets_goal"]),
            "`python -m bench.run stage_delay`",
        )
    )
    return rows


def _scale_rows(sc: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    runs = sc["runs"]
    rows.append(
        (
            "k-means retrain streamed from storage, 16 features",
            "1M rows < 60 s, peak RSS < 1 GB, flat",
            "; ".join(
                f"{int(n):,} rows: {r['seconds']} s, {r['peak_rss_mb']:.0f} MB"
                for n, r in runs.items()
            ),
            _mark(sc["meets_goal"]),
            "`python -m bench.run scale`",
        )
    )
    return rows


def _patchgen_rows(pg: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for size, codecs in pg["sizes"].items():
        rows.append(
            (
                f"patch generation, {size} float32 model",
                "report",
                "; ".join(
                    f"{c}: {r['make_s']:.2f} s, +{r['make_peak_extra_mb']:.0f} MB, "
                    f"{_pct(r['ratio_to_model'])}"
                    for c, r in codecs.items()
                ),
                "-",
                "`python -m bench.run patchgen`",
            )
        )
    return rows


def _poison_rows(ps: dict[str, Any]) -> list[Row]:
    """Two rows, without and with a reference set: per poisoned share, what moved."""
    out = []
    for label, setting, goal, ok in (
        (
            "without_reference",
            "no reference set",
            "1 device in 20: within 1 pt of the clean run",
            ps["goal_one_device_within_1pt"],
        ),
        (
            "with_reference",
            "reference set",
            "≤ 20% of devices poisoned: no worse model shipped",
            ps["goal_reference_20pct_no_worse_shipped"],
        ),
    ):
        r = ps[label]
        per_k = {k: e for k, e in r["by_poisoned_devices"].items() if k != "0"}
        by_share = "; ".join(
            f"{_pct(e['share'])}: {e['max_drop_points']:.2f} pt, {e['stalled']} stalled, "
            f"{e['worse_shipped']} worse"
            for e in per_k.values()
        )
        reasons = [reason for e in per_k.values() for reason in e.get("stall_reasons", [])]
        export = sum("exported model disagrees" in reason for reason in reasons)
        screened = sum(e.get("screened_poisoned", 0) for e in per_k.values())
        honest = sum(e.get("screened_honest", 0) for e in per_k.values())
        out.append(
            (
                f"poisoning, k of {ps['devices']} devices label-shifted ({setting})",
                goal,
                f"within 1 pt up to {_pct(r['largest_share_within_1pt'])} poisoned; no worse "
                f"model shipped up to {_pct(r['largest_share_no_worse_shipped'])}. By share "
                f"(largest drop, stalled rounds, worse models shipped): {by_share} "
                f"({len(ps['seeds'])} seeds x {ps['rounds']} rounds; {export} of "
                f"{len(reasons)} stalls refused by the int8 export check). Screened out: "
                f"{screened} poisoned, {honest} honest device-rounds",
                _mark(ok),
                "`python -m bench.run poison`",
            )
        )
    return out


FLEET_CMD = "`python -m bench.run fleet`"


def _fleet_rows(fl: dict[str, Any]) -> list[Row]:
    """Per device-update at each size measured, the 1M model with the bill, and what a
    device and a model cost a day whether or not they update."""
    out = [_fleet_size_row(fl, n, r) for n, r in fl["runs"].items()]
    out.append(_fleet_model_row(fl))
    basis = fl["runs"].get(str(fl["modelled"]["costs_from"]))
    if basis:
        out.append(_fleet_day_row(basis))
    at_rest = fl["modelled"].get("at_rest")
    if at_rest:
        out.append(_fleet_at_rest_row(at_rest))
    return out


def _fleet_size_row(fl: dict[str, Any], n: str, r: dict[str, Any]) -> Row:
    goals = fl["goals"]
    reads = fl["reads_per_report"]["by_type"]
    u, ro = r["per_update"], r["rollout"]
    by_type = ", ".join(
        f"{kind} {reads[kind][n]['reads']:g} ({reads[kind][n]['rru']:g} RRU)"
        for kind in ("counted", "duplicate", "not counted", "heartbeat")
        if n in reads.get(kind, {})
    )
    origin = f" ({u['cdn_origin_gets']:g} passed to S3)" if "cdn_origin_gets" in u else ""
    return (
        f"rollout to {int(n):,} devices, real status/rollout code on moto",
        "DynamoDB reads per report flat (per report type); ≤ 3 cloud messages per device-update",
        f"per device-update ({r['reached']:,} reached): {u['cloud_messages']:g} IoT "
        f"messages ({u['iot_messages_received']:g} in, {u['iot_messages_sent']:g} out), "
        f"{u['lambda_invocations']:g} Lambda, {u['dynamodb_reads']:g} DynamoDB reads / "
        f"{u['dynamodb_writes']:g} writes ({u['dynamodb_rru']:g} RRU / "
        f"{u['dynamodb_wru']:g} WRU), {u['s3_requests']:g} S3, {u['kms_requests']:g} "
        f"KMS, {u['iot_registry_operations']:g} registry operations, "
        f"{u['cdn_requests']:g} CDN requests{origin}; DynamoDB reads per report: {by_type}; "
        f"100% of stages passed in {ro['complete_s']} s; installed p50 "
        f"{ro['p50_installed_s']} s, p99 {ro['p99_installed_s']} s, last "
        f"{ro['all_installed_s']} s; ${u['usd_per_million_updates_total']:.2f} per M "
        f"updates; {r['wall_s']['total']:.0f} s to run"
        + (
            f" (run at {r['commit']}, kept: its CDN requests and message sizes are the "
            f"{r['cost_inputs_from']:,}-device run's)"
            if r.get("cost_inputs_from")
            else ""
        ),
        _mark(
            goals["dynamodb_reads_per_report_flat"] and u["cloud_messages"] <= fl["goal_messages"]
        ),
        FLEET_CMD,
    )


def _fleet_model_row(fl: dict[str, Any]) -> Row:
    goals = fl["goals"]
    m = fl["modelled"]
    u = m["per_update"]
    items = sorted(u["usd_per_million_updates"].items(), key=lambda kv: -kv[1])
    return (
        f"rollout to {m['devices']:,} devices, SimPy model with the costs measured at "
        f"{m['costs_from']:,}",
        f"≤ 3 cloud messages; ≤ ${fl['goal_usd_per_million']:g} per million device-updates "
        "before data transfer",
        f"{u['cloud_messages']:g} messages per device-update; 100% of stages passed in "
        f"{m['complete_s']} s; installed p50 {m['p50_installed_s']} s, p99 "
        f"{m['p99_installed_s']} s, last {m['all_installed_s']} s; "
        f"${u['usd_per_million_updates_total']:.2f} per M updates ("
        + ", ".join(f"{k} ${v:.4g}" for k, v in items if v > 0)
        + f"; each CDN request per update ${u['usd_per_million_per_extra_cdn_request']:.2f}"
        f"), data transfer ${u['data_transfer_usd_per_million_updates']:.2f} on top",
        _mark(goals["cloud_messages_le_3"] and goals["usd_per_million_le_5"]),
        FLEET_CMD,
    )


def _fleet_day_row(basis: dict[str, Any]) -> Row:
    h = basis["per_device_day"]["heartbeats"]
    i = basis["per_device_day"]["identity_lookups"]
    s = basis["per_model_day"]
    return (
        "every day, updates or not, in the hourly-heartbeat design presence replaced: "
        "heartbeats, identity lookups, the schedule",
        "report",
        f"per device-day: {h['per_day']:g} heartbeats (every {h['interval_s']:.0f} s: "
        f"{h['messages']:g} messages, {h['lambda_invocations']:g} Lambda, "
        f"{h['dynamodb_rru']:g} RRU / {h['dynamodb_wru']:g} WRU) "
        f"${h['usd_per_million_device_days']:.2f} per M device-days; "
        f"{i['per_day']:g} identity lookup (every {i['ttl_hours']:g} h: "
        f"{i['registry_operations']:g} registry operations) "
        f"${i['usd_per_million_device_days']:.2f} per M device-days. Per model-day: "
        f"{s['schedule_runs']:g} schedule runs, {s['dynamodb_rru']:g} RRU, "
        f"${s['usd_per_model_day']:.3f}",
        "-",
        FLEET_CMD,
    )


def _fleet_at_rest_row(a: dict[str, Any]) -> Row:
    params = a["parameters"]
    lines = "; ".join(f"{k} ${v:.2f}" for k, v in a["usd_per_million_device_days"].items())
    variants = "; ".join(
        f"{k}: ${v:.2f}" for k, v in a["variants_usd_per_million_device_days"].items()
    )
    beside = a["beside"]
    return (
        "a device-day at rest: presence from lifecycle events, status on change, a weekly "
        "keep-alive, a refresh without a nudge every two days (costed from the measured "
        "status report and the agent's defaults)",
        f"≤ ${a['goal_usd_per_million']:g} per million device-days (presence, health, "
        "identity, schedule; connectivity aside)",
        f"${a['usd_per_million_device_days_total']:.2f} per M device-days ({lines}); "
        f"${a['usd_per_million_device_days_total_lifecycle_unbilled']:.2f} if lifecycle "
        f"events are not metered as messages (counted as 1 message each: not confirmed). "
        f"Keep-alive every {params['keepalive_s']:.0f} s, {params['reconnects_per_day']:g} "
        f"reconnect and {params['health_changes_per_day']:g} health changes a day, identity "
        f"every {params['identity_ttl_hours']:g} h ({a['identity_lookups_per_day']:g} "
        f"lookup a day), a refresh without a nudge every {params['refresh_s']:.0f} s. "
        f"Variants: {variants}. Beside: the hourly-heartbeat design "
        f"${beside['hourly_heartbeat_design_usd_per_million_device_days']:.2f}, "
        f"${beside['hourly_heartbeat_design_with_its_refreshes_usd_per_million_device_days']:.2f}"
        f" with its hourly refreshes; connectivity "
        f"${beside['connectivity_usd_per_million_device_days']:.2f}; each reconnect (its "
        f"events, CONNECT, SUBSCRIBE, the retained announcement, the report on connect) "
        f"${beside['usd_per_million_reconnects']:.2f} per million",
        _mark(a["meets_goal"]),
        FLEET_CMD,
    )


def _signal_rows(sg: dict[str, Any]) -> list[Row]:
    cmd = "`python -m bench.run signal`"
    w, t = sg["window"], sg["per_window"]
    shape = f"{w['samples']} samples x {w['channels']} channels, hop {w['hop']}"
    return [
        (
            f"signals in: one window's inference on the device ({shape}, "
            f"{sg['features']} features)",
            "report",
            f"{t['signal_model_us']['p50_us']} µs at p50: features in the graph "
            f"{t['feature_part_us']['p50_us']} µs, the estimator "
            f"{t['estimator_part_us']['p50_us']} µs (NumPy's features: "
            f"{t['numpy_features_us']['p50_us']} µs); windowing "
            f"{sg['windowing_us_per_window']} µs per window, reading a sample's JSON line "
            f"{sg.get('parse_us_per_sample', '-')} µs",
            "-",
            cmd,
        ),
        (
            "signals in: knock AUC, signal model through a whole agent vs "
            "the same k-means on NumPy features",
            "equal",
            f"{sg['auc_signal_model_through_agent']} vs "
            f"{sg['auc_feature_model_numpy_features']} ({sg['knock_windows']} of "
            f"{sg['live_windows']} live windows knocking)",
            _mark(
                sg["auc_signal_model_through_agent"]
                >= sg["auc_feature_model_numpy_features"] - 0.01
            ),
            cmd,
        ),
        (
            "signals in: bytes a weights-only retrain ships, with the features in the "
            "graph vs the same k-means on features",
            "within 10%",
            f"{sg['weights_only_update_bytes_signal']} B vs "
            f"{sg['weights_only_update_bytes_feature']} B "
            f"({sg['weights_only_update_ratio']}x; full models "
            f"{sg['signal_model_bytes']} B vs {sg['feature_model_bytes']} B)",
            _mark(sg["weights_only_update_ratio"] <= 1.1),
            cmd,
        ),
    ]


def _signal_real_rows(sr: dict[str, Any]) -> list[Row]:
    rec, w = sr["recording"], sr["window"]
    return [
        (
            f"signals in, a real recording: anomaly AUC through a whole agent, "
            f"{rec['name']} ({len(rec['channels'])} channels at {rec['rate_hz']:g} Hz; "
            f"normal {' and '.join(sr['normal']).lower()}, anomalous "
            f"{' and '.join(sr['anomalous']).lower()})",
            f"≥ {sr['goal_auc']}",
            f"{sr['auc_signal_model_through_agent']} (the same k-means on NumPy features: "
            f"{sr['auc_feature_model_numpy_features']}); {sr['anomalous_windows']} of "
            f"{sr['test_windows']} test windows anomalous, windows of {w['samples']} "
            f"samples, hop {w['hop']}, {sr['features']} features; alarms on "
            f"{_pct(sr['alarm_rate_anomalous'])} of anomalous and "
            f"{_pct(sr['alarm_rate_normal'])} of normal windows",
            _mark(sr["meets_goal"]),
            "`python -m bench.run signal_real`",
        )
    ]


def _handoff_rows(h: dict[str, Any]) -> list[Row]:
    names = {
        "kmeans_anomaly": "k-means",
        "logistic_classifier": "logistic",
        "mlp_classifier": "MLP",
    }
    runs = "; ".join(
        f"{names[r['kind']]} {r['rows'] / 1e6:g}M x {r['width']}"
        f"{' streamed' if r['streamed'] else ''}: {r['seconds']} s, {r['peak_rss_mb']:.0f} MB"
        for r in h["runs"]
    )
    return [
        (
            "training job entry point as a process (the hand-off path, local)",
            "report",
            f"{runs} (in memory unless streamed)",
            "-",
            "`python -m bench.run handoff`",
        )
    ]


# A streamed fit this close to an in-memory one on a subsample costs nothing worth
# the name: a point of accuracy, 0.02 of silhouette.
MAX_ACCURACY_COST_PT = 1.0
MAX_SILHOUETTE_COST = 0.02
# Memory is flat when four times the rows raise the peak by less than this share.
FLAT_MEMORY_GROWTH = 0.25


def _handoff_big_rows(h: dict[str, Any]) -> list[Row]:
    names = {
        "logistic_classifier": ("logistic regression", 64),
        "mlp_classifier": ("MLP (32)", 64),
        "kmeans_anomaly": ("k-means", 16),
    }
    usd = h["price"]["usd_per_hour"]
    rows: list[Row] = []
    for kind, (label, width) in names.items():
        runs = sorted((r for r in h["runs"] if r["kind"] == kind), key=lambda r: r["rows"])
        if not runs:
            continue
        classifier = kind != "kmeans_anomaly"
        parts = []
        for r in runs:
            ref = r.get("in_memory_subsample", {})
            quality = (
                f"accuracy {r['test_accuracy']:.4f} vs {ref['test_accuracy']:.4f}"
                if classifier
                else f"silhouette {r['test_silhouette']:.3f} vs {ref['test_silhouette']:.3f}"
            )
            parts.append(
                f"{r['rows'] / 1e6:g}M rows: {r['seconds']:.0f} s, {r['peak_rss_mb']:.0f} MB, "
                f"{quality}, ${r['seconds'] / 3600 * usd:.2f} on {h['price']['instance']}"
            )
        costs = [
            r["accuracy_cost_pt"] <= MAX_ACCURACY_COST_PT
            if classifier
            else r["silhouette_cost"] <= MAX_SILHOUETTE_COST
            for r in runs
        ]
        peaks = [r["peak_rss_mb"] for r in runs]
        flat = max(peaks) <= (1 + FLAT_MEMORY_GROWTH) * min(peaks) if len(runs) > 1 else None
        ok = all(costs) and all(r["exit"] == 0 for r in runs) and flat is not False
        goal = (
            f"10M x {width} through the hand-off; peak RSS flat; within "
            + (f"{MAX_ACCURACY_COST_PT:g} pt of" if classifier else f"{MAX_SILHOUETTE_COST:g} of")
            + " an in-memory fit on 250k rows"
        )
        if kind == "kmeans_anomaly":
            goal = goal.replace("10M", "50M")
        rows.append(
            (
                f"{label} streamed through the training job entry point, {width} features "
                "(vs in memory on a subsample, same test rows)",
                goal,
                "; ".join(parts),
                _mark(ok),
                "`python -m bench.handoff --big`",
            )
        )
    return rows


# Each section's rows, in the table's order, from its results file.
ROWS: tuple[tuple[str, Callable[[dict[str, Any]], list[Row]]], ...] = (
    ("bytes", _bytes_rows),
    ("inference", _inference_rows),
    ("swap", _swap_rows),
    ("agent_footprint", _footprint_rows),
    ("loop", _loop_rows),
    ("fanout", _fanout_rows),
    ("stage_delay", _stage_delay_rows),
    ("scale", _scale_rows),
    ("patchgen", _patchgen_rows),
    ("poison", _poison_rows),
    ("fleet", _fleet_rows),
    ("signal", _signal_rows),
    ("signal_real", _signal_real_rows),
    ("handoff", _handoff_rows),
    ("handoff_big", _handoff_big_rows),
)
# The sections whose machine the table names (the first found).
MACHINE_FROM = (
    "bytes",
    "inference",
    "swap",
    "loop",
    "fanout",
    "scale",
    "patchgen",
    "poison",
    "fleet",
)


def table() -> str:
    rows: list[Row] = []
    loaded: dict[str, dict[str, Any]] = {}
    for name, section_rows in ROWS:
        result = _load(name)
        if result:
            loaded[name] = result
            rows.extend(section_rows(result))
    machine = next((loaded[n]["machine"] for n in MACHINE_FROM if n in loaded), None)
    lines = [
        "| figure | goal | measured | reached | reproduce |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {' | '.join(r)} |" for r in rows),
    ]
    if machine:
        lines.append("")
        lines.append(
            f"Machine: {machine['cpus']} CPUs, {machine['memory_gb']} GB, Python "
            f"{machine['python']}, NumPy {machine['numpy']}, {machine['platform']}."
        )
    return "\n".join(lines)


def rewrite_readme() -> None:
    text = README.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block to rewrite")
    README.write_text(pattern.sub(lambda _: f"{BEGIN}\n{table()}\n{END}", text))
