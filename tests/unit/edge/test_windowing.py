"""Windowing on the device: ring buffer, hop, gaps and clock jumps, the sources of
named channels, the window spec in the signed version spec, and which models a
raw source can feed."""

from __future__ import annotations

import io
import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.channel_sources import (
    parse_reading,
    serial_readings,
    stdin_readings,
    synthetic_signal,
)
from edge.config import parse_agent_config
from edge.errors import AgentConfigError, SourceError, SourceGone
from edge.scoring import LoadedModel, Scorer
from edge.sources import SkippedLines
from edge.windowing import Reading, WindowCounts, Windower, installed_window, windowed
from edgeloop.contract import (
    ArtifactRef,
    HealthCheck,
    InputSpecMismatch,
    Manifest,
    TensorSpec,
    WindowSpec,
    check_input,
    parse_manifest,
)
from edgeloop.contract.trust_targets import MalformedTrustTarget, VersionSpec
from edgeloop.factory.signal import SignalSection, frames
from tests.unit.edge.test_agent_config import minimal

SPEC = WindowSpec(channels=("x", "y"), sample_rate=100.0, window=4, hop=2)


def _readings(n: int, start: int = 0, rate: float = 100.0) -> list[Reading]:
    return [
        Reading(t=i / rate, values={"x": float(i), "y": -float(i), "z": 9.8})
        for i in range(start, start + n)
    ]


def test_rows_are_sample_major_in_the_models_channel_order_every_hop() -> None:
    w = Windower(lambda: SPEC)
    rows = [r for r in (w.push(x) for x in _readings(8)) if r is not None]
    # Windows start at samples 0, 2, 4: the first after `window` samples, then every hop.
    assert len(rows) == 3
    np.testing.assert_array_equal(rows[0], [0, 0, 1, -1, 2, -2, 3, -3])
    np.testing.assert_array_equal(rows[2], [4, -4, 5, -5, 6, -6, 7, -7])
    assert w.counts.windows == 3


def test_the_device_cuts_what_the_cloud_cuts() -> None:
    """The same recording makes the same rows as the factory's `frames`."""
    signal = SignalSection.model_validate(
        {
            "channels": ("x", "y"),
            "sample_rate": 100.0,
            "window": 16,
            "hop": 5,
            "features": ({"name": "rms"},),
        }
    )
    rng = np.random.default_rng(0)
    recording = rng.normal(size=(100, 2)).astype(np.float32)
    spec = WindowSpec(("x", "y"), 100.0, 16, 5)
    readings = [Reading(None, {"x": float(a), "y": float(b)}) for a, b in recording]
    got = np.stack([s.x for s in windowed(readings, Windower(lambda: spec))])
    np.testing.assert_array_equal(got, frames(signal, recording).astype(np.float32))


def test_a_gap_starts_a_new_window_and_is_counted() -> None:
    w = Windower(lambda: SPEC)
    before = [w.push(r) for r in _readings(3)]
    # Samples 3..9 lost: sample 10 starts over, and the next row is 10..13.
    after = [w.push(r) for r in _readings(4, start=10)]
    assert all(r is None for r in before + after[:3])
    assert after[3] is not None
    np.testing.assert_array_equal(after[3][::2], [10, 11, 12, 13])
    assert (w.counts.gaps, w.counts.clock_jumps) == (1, 0)
    assert "1 gaps" in w.counts.summary()


def test_a_clock_going_back_starts_a_new_window_and_is_counted() -> None:
    w = Windower(lambda: SPEC)
    for r in _readings(3, start=50):
        w.push(r)
    rows = [w.push(r) for r in _readings(4, start=0)]
    assert rows[3] is not None
    assert rows[3][0] == 0.0
    assert (w.counts.gaps, w.counts.clock_jumps) == (0, 1)
    # A repeated timestamp cannot continue a window either.
    w.push(Reading(3 / 100.0, {"x": 0.0, "y": 0.0}))
    assert w.counts.clock_jumps == 2


def test_jitter_within_max_gap_is_not_a_gap() -> None:
    w = Windower(lambda: SPEC, max_gap=1.5)
    times = [0.0, 0.012, 0.02, 0.033, 0.04]
    for t in times:
        w.push(Reading(t, {"x": 0.0, "y": 0.0}))
    assert w.counts.gaps == 0
    assert w.counts.windows == 1


def test_a_new_spec_starts_over_with_its_own_window() -> None:
    current = [SPEC]
    w = Windower(lambda: current[0])
    for r in _readings(3):
        w.push(r)
    current[0] = WindowSpec(("z",), 100.0, 2, 1)
    rows = [w.push(r) for r in _readings(3, start=3)]
    assert rows[0] is None
    assert rows[1] is not None
    assert rows[1].tolist() == pytest.approx([9.8, 9.8])
    assert w.counts.gaps == 0


def test_a_reading_without_a_needed_channel_is_skipped_and_counted() -> None:
    counts = WindowCounts()
    w = Windower(lambda: SPEC, counts)
    assert w.push(Reading(None, {"x": 1.0})) is None
    assert counts.incomplete == 1
    assert "'y'" in counts.last


def test_json_lines_of_named_channels() -> None:
    skipped = SkippedLines()
    lines = "\n".join(
        [
            json.dumps({"t": 1712.5, "x": 0.1, "y": -0.2, "z": 9.8}),
            "",
            '{"x": 1, "y": 2, "z": 3}',
            '{"x": 1, "y": "a", "z": 3}',
            '{"x": 1, "z": 3}',
            "[1, 2]",
            '{"x": 1e999, "y": 0, "z": 0}',
            "not json",
        ]
    )
    got = list(stdin_readings(("x", "y", "z"), skipped, io.StringIO(lines)))
    assert got[0] == Reading(1712.5, {"x": 0.1, "y": -0.2, "z": 9.8})
    assert got[1].t is None
    assert len(got) == 2
    assert skipped.count == 5
    assert "not json" not in skipped.last
    assert "line 8" in skipped.last


def test_parse_reading_names_what_is_wrong() -> None:
    with pytest.raises(SourceError, match="no channel 'q'"):
        parse_reading('{"x": 1}', ("x", "q"))
    with pytest.raises(SourceError, match="t must be a number"):
        parse_reading('{"x": 1, "t": "now"}', ("x",))


def _manifest(window: WindowSpec | None, width: int) -> Manifest:
    return Manifest.new(
        model="pump",
        version=3,
        input=TensorSpec(shape=(-1, width)),
        output=TensorSpec(shape=(-1,)),
        artifact=ArtifactRef("pump/3/model.tflite", "0" * 64, 10),
        health_checks=(HealthCheck(((0.0,) * width,), ((0.0,),), 1e-3),),
        window=window,
    )


def test_the_window_spec_travels_in_the_manifest_and_the_signed_version_spec() -> None:
    m = _manifest(SPEC, SPEC.width)
    assert parse_manifest(m.to_bytes()).window == SPEC
    spec = VersionSpec.of(m)
    back = VersionSpec.from_bytes(spec.to_bytes())
    assert back.window == SPEC
    assert back.manifest(m.artifact, m.health_checks[0].inputs).window == SPEC
    # A feature model's spec carries no window key: its bytes are what they were.
    plain = VersionSpec.of(_manifest(None, 3))
    assert b"window" not in plain.to_bytes()
    assert VersionSpec.from_bytes(plain.to_bytes()).window is None


def test_a_malformed_window_spec_is_refused_with_its_key() -> None:
    doc = json.loads(VersionSpec.of(_manifest(SPEC, SPEC.width)).to_bytes())
    doc["window"]["hop"] = 9
    with pytest.raises(MalformedTrustTarget, match=r"window\.hop"):
        VersionSpec.from_bytes(json.dumps(doc).encode())
    doc["window"]["hop"] = 2
    doc["window"]["channels"] = ["x", "x"]
    with pytest.raises(MalformedTrustTarget, match=r"window\.channels"):
        VersionSpec.from_bytes(json.dumps(doc).encode())


RAW = WindowSpec(("x", "y", "z"), 100.0, 8, 4)


def test_a_raw_source_feeds_any_window_of_its_channels_at_its_rate() -> None:
    device = TensorSpec(shape=(-1, RAW.width))
    check_input(_manifest(SPEC, SPEC.width), device, RAW)
    other = WindowSpec(("x", "w"), 100.0, 4, 2)
    with pytest.raises(InputSpecMismatch, match="channel 'w'"):
        check_input(_manifest(other, other.width), device, RAW)
    faster = WindowSpec(("x",), 200.0, 4, 2)
    with pytest.raises(InputSpecMismatch, match="at 200 Hz"):
        check_input(_manifest(faster, faster.width), device, RAW)
    with pytest.raises(InputSpecMismatch, match="takes feature vectors"):
        check_input(_manifest(None, RAW.width), device, RAW)
    with pytest.raises(InputSpecMismatch, match="delivers feature vectors"):
        check_input(_manifest(SPEC, SPEC.width), TensorSpec(shape=(-1, SPEC.width)))


def _raw_config(tmp_path: Path, **source: object) -> dict[str, object]:
    doc = minimal(tmp_path)
    base = {"kind": "stdin", "channels": ["x", "y"], "sample_rate": 100.0, "window": 4, "hop": 2}
    doc["source"] = {**base, **source}
    doc["device"] = {"thing": "pump-1", "model": "pump", "n_features": 8}
    return doc


def test_a_raw_source_config(tmp_path: Path) -> None:
    config = parse_agent_config(_raw_config(tmp_path), tmp_path)
    assert config.source.raw
    assert config.source.window_spec() == SPEC


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"sample_rate": 0.0}, "source.sample_rate"),
        ({"window": 0}, "source.window"),
        ({"hop": 5}, "source.hop"),
        ({"kind": "csv", "path": "root.json"}, "source.channels"),
        ({"kind": "serial"}, "source.port"),
        ({"kind": "mqtt", "url": "http://x"}, "source.url"),
        ({"kind": "mqtt", "url": "mqtt://localhost", "topic": "a/#"}, "source.topic"),
        ({"window": 3, "hop": 1}, "device.n_features"),
    ],
)
def test_a_raw_source_config_error_names_the_key(
    tmp_path: Path, change: dict[str, object], key: str
) -> None:
    with pytest.raises(AgentConfigError, match=key.replace(".", r"\.")):
        parse_agent_config(_raw_config(tmp_path, **change), tmp_path)


def test_json_lines_from_a_serial_port() -> None:
    """A microcontroller printing samples on a serial line, here a pseudo-terminal."""
    pytest.importorskip("serial")
    controller, device = os.openpty()
    stop = threading.Event()
    skipped = SkippedLines()
    readings = serial_readings(os.ttyname(device), 115200, ("x", "y"), skipped, stop)
    # Written once the source has opened the port: opening it drops what was pending.
    writer = threading.Timer(
        1.0, os.write, (controller, b'{"t": 0.0, "x": 1, "y": 2}\r\nnoise\n{"t": 0.01, "x"')
    )
    writer.start()
    first = next(readings)
    writer.join()
    os.write(controller, b': 3, "y": 4}\n')
    second = next(readings)
    assert (first.values, second.values) == ({"x": 1.0, "y": 2.0}, {"x": 3.0, "y": 4.0})
    assert skipped.count == 1
    stop.set()
    os.close(controller)
    assert list(readings) == []
    os.close(device)


def test_a_serial_port_that_is_not_there_ends_the_source() -> None:
    pytest.importorskip("serial")
    with pytest.raises(SourceGone, match="/dev/no-such-tty"):
        next(serial_readings("/dev/no-such-tty", 9600, ("x",), SkippedLines()))


def test_a_serial_source_config(tmp_path: Path) -> None:
    config = parse_agent_config(
        _raw_config(tmp_path, kind="serial", port="/dev/ttyUSB0", baudrate=9600), tmp_path
    )
    assert (config.source.port, config.source.baudrate) == ("/dev/ttyUSB0", 9600)
    with pytest.raises(AgentConfigError, match=r"source\.port"):
        parse_agent_config(_raw_config(tmp_path, kind="serial"), tmp_path)


def test_the_window_follows_the_running_model_through_a_rollback() -> None:
    scorer = Scorer(0.6)
    spec = installed_window(scorer, RAW)
    assert spec() == RAW
    runtime: Any = object()  # never run: only the manifest is read
    v1 = LoadedModel(_manifest(SPEC, SPEC.width), runtime)
    other = WindowSpec(("z", "x"), 100.0, 6, 3)
    v2 = LoadedModel(replace(_manifest(other, other.width), version=4), runtime)
    scorer.swap(v1)
    assert spec() == SPEC
    scorer.swap(v2)
    assert spec() == other
    scorer.swap(v1)  # what the swap guard does to a misbehaving v2
    assert spec() == SPEC
    scorer.swap(LoadedModel(_manifest(None, 3), runtime))
    assert spec() == RAW


def test_the_synthetic_raw_source_knocks_where_it_says(tmp_path: Path) -> None:
    readings = list(synthetic_signal(("x", "y", "z"), 1000.0, 0.5, seed=3, segment=64, count=640))
    assert len(readings) == 640
    assert [r.t for r in readings[:2]] == [0.0, 0.001]
    knocks = np.array([r.planted_anomaly for r in readings]).reshape(10, 64)
    assert set(knocks.sum(axis=1)) <= {0, 32}
    assert 0 < knocks.any(axis=1).sum() < 10
    z = np.array([r.values["z"] for r in readings])
    assert abs(np.median(z) - 9.81) < 1.0
    config = parse_agent_config(_raw_config(tmp_path, kind="synthetic"), tmp_path)
    assert config.source.raw
