"""Sources of raw samples with named channels: JSON lines on stdin, a local MQTT topic,
a serial line.

All read the same line format, one JSON object per sample, a value per channel
and an optional time in seconds:

    {"t": 1712.5, "x": 0.1, "y": -0.2, "z": 9.8}

A line that is not such an object, or lacks a channel the device declared
(`source.channels`), or holds a value that is not a finite number, is skipped
and counted, as the feature sources do. An MQTT message may hold several lines,
so a sensor can publish a batch of samples at once.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TextIO
from urllib.parse import urlparse

import numpy as np

from edge.config import AgentConfig, SourceKind
from edge.errors import SourceError, SourceGone
from edge.sources import SkippedLines
from edge.windowing import Reading

log = logging.getLogger(__name__)

# Messages an MQTT source holds for the scoring loop before it drops the newest:
# a scoring loop that stalls must not grow the agent without bound.
MQTT_QUEUE_MESSAGES = 10_000
# A serial line without a newline this long is noise (a wrong baud rate), not a sample.
MAX_SERIAL_LINE = 64 * 1024


def parse_reading(line: str, channels: tuple[str, ...]) -> Reading:
    """One line as a reading of `channels`; SourceError says why it is not one."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise SourceError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SourceError(f'expected an object like {{"t": ..., {channels[0]!r}: ...}}')
    values: dict[str, float] = {}
    for name in channels:
        if name not in doc:
            raise SourceError(f"no channel {name!r}")
        values[name] = _finite(doc[name], name)
    raw_t = doc.get("t")
    t = None if raw_t is None else _finite(raw_t, "t")
    return Reading(t, values)


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SourceError(f"{name} must be a number, not {value!r:.40}")
    try:
        out = float(value)
    except OverflowError as exc:  # an integer past float's range
        raise SourceError(f"{name} is out of range") from exc
    if not math.isfinite(out):
        raise SourceError(f"{name} is not a finite number")
    return out


def readings_of(
    lines: Iterable[str], channels: tuple[str, ...], skipped: SkippedLines, where: str
) -> Iterator[Reading]:
    """Every source's one loop: blank lines passed over, a bad line skipped with its
    place (`where` line N, counting every line the source gave), the rest parsed."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield parse_reading(line, channels)
        except SourceError as exc:
            skipped.skip(f"{where} line {number}: {exc}")


def stdin_readings(
    channels: tuple[str, ...], skipped: SkippedLines, stream: TextIO | None = None
) -> Iterator[Reading]:
    return readings_of(stream or sys.stdin, channels, skipped, "stdin")


def mqtt_readings(
    host: str,
    port: int,
    topic: str,
    channels: tuple[str, ...],
    skipped: SkippedLines,
    stop: threading.Event | None = None,
) -> Iterator[Reading]:
    """Readings from a topic of a local broker (plain MQTT, no TLS: a broker on the
    device or its LAN, where the sensor code publishes). Connects on first use and
    reconnects by itself; ends when `stop` is set."""
    import paho.mqtt.client as mqtt  # the agent's own MQTT library
    from paho.mqtt.enums import CallbackAPIVersion

    inbox: queue.Queue[bytes] = queue.Queue(MQTT_QUEUE_MESSAGES)
    stop = stop or threading.Event()
    dropped = 0

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        # Subscribed at every connect: a restarted broker has forgotten the session.
        client.subscribe(topic, qos=0)
        log.info("event=sensor_topic_subscribed host=%s port=%d topic=%s", host, port, topic)

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        nonlocal dropped
        try:
            inbox.put_nowait(bytes(message.payload))
        except queue.Full:
            dropped += 1
            skipped.skip(f"mqtt {topic}: scoring is behind; {dropped} messages dropped")

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    try:
        client.connect_async(host, port, keepalive=30)
    except (OSError, ValueError) as exc:
        raise SourceGone(f"mqtt source {host}:{port}: {exc}") from exc
    client.loop_start()

    def lines() -> Iterator[str]:
        while not stop.is_set():
            try:
                payload = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            yield from payload.decode("utf-8", errors="replace").splitlines()

    try:
        yield from readings_of(lines(), channels, skipped, f"mqtt {topic}")
    finally:
        client.loop_stop()
        client.disconnect()


def serial_readings(
    port: str,
    baudrate: int,
    channels: tuple[str, ...],
    skipped: SkippedLines,
    stop: threading.Event | None = None,
) -> Iterator[Reading]:
    """JSON lines from a serial port (`/dev/ttyUSB0`, or any pyserial URL such as
    `socket://host:port`), as a microcontroller prints them. Needs pyserial (the
    agent's `serial` extra). A port that goes away ends the source: the agent halts
    with the reason and its service manager restarts it."""
    try:
        # Imported by name: pyserial is an optional extra and ships no type hints.
        serial: Any = importlib.import_module("serial")
    except ImportError as exc:
        raise SourceGone(
            "a serial source needs pyserial: pip install 'edgeloop-agent[serial]'"
        ) from exc
    stop = stop or threading.Event()
    try:
        # The timeout bounds each read, so a silent sensor cannot hold the loop past `stop`.
        link = serial.serial_for_url(port, baudrate=baudrate, timeout=0.5)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SourceGone(f"serial source {port}: {exc}") from exc

    def lines() -> Iterator[str]:
        pending = b""
        while not stop.is_set():
            try:
                chunk = link.readline()
            except (serial.SerialException, OSError) as exc:
                raise SourceGone(f"serial source {port}: {exc}") from exc
            pending += chunk
            if not pending.endswith(b"\n"):
                if len(pending) > MAX_SERIAL_LINE:
                    skipped.skip(f"serial {port}: a line longer than {MAX_SERIAL_LINE} bytes")
                    pending = b""
                continue  # a read timed out mid-line: the rest follows
            yield pending.decode("utf-8", errors="replace")
            pending = b""

    try:
        yield from readings_of(lines(), channels, skipped, f"serial {port}")
    finally:
        link.close()


# The synthetic machine's operating modes: shaft tone (Hz), its amplitude, the noise.
SIGNAL_MODES = ((25.0, 1.0, 0.1), (60.0, 2.0, 0.2), (120.0, 0.5, 0.05), (300.0, 3.0, 0.4))
GRAVITY = 9.81


def synthetic_signal(
    channels: tuple[str, ...],
    sample_rate: float,
    knock_rate: float,
    seed: int,
    segment: int = 1024,
    count: int | None = None,
) -> Iterator[Reading]:
    """A vibrating machine's accelerometer, sample by sample: segments of `segment`
    samples each in one of four operating modes (a shaft tone and noise), a share
    `knock_rate` of them knocking (a broadband burst over their middle half). A
    channel named z carries gravity. Times start at 0 and advance by one period."""
    rng = np.random.default_rng(seed)
    t = np.arange(segment) / sample_rate
    gains = 0.6 ** np.arange(len(channels))
    produced = 0
    while True:
        freq, amp, noise = SIGNAL_MODES[int(rng.integers(0, len(SIGNAL_MODES)))]
        freq *= rng.uniform(0.97, 1.03)
        phase = rng.uniform(0, 2 * np.pi, len(channels))
        block = np.sin(2 * np.pi * freq * t[:, None] + phase[None, :]) * (gains * amp)[None, :]
        block += rng.normal(0.0, noise, block.shape)
        knocked = np.zeros(segment, dtype=bool)
        if rng.random() < knock_rate:
            knocked[segment // 4 : 3 * segment // 4] = True
            block[knocked] += rng.normal(0.0, 4.0, (int(knocked.sum()), len(channels)))
        if "z" in channels:
            block[:, channels.index("z")] += GRAVITY
        for row, knock in zip(block.tolist(), knocked.tolist(), strict=True):
            if count is not None and produced >= count:
                return
            values = dict(zip(channels, row, strict=True))
            yield Reading(produced / sample_rate, values, planted_anomaly=knock)
            produced += 1


def readings_from_config(
    config: AgentConfig, skipped: SkippedLines, stop: threading.Event
) -> Iterator[Reading]:
    s = config.source
    if s.kind == SourceKind.MQTT:
        url = urlparse(s.url)
        return mqtt_readings(
            url.hostname or "", url.port or 1883, s.topic, s.channels, skipped, stop
        )
    if s.kind == SourceKind.SYNTHETIC:
        return synthetic_signal(s.channels, s.sample_rate, s.anomaly_rate, s.seed)
    if s.kind == SourceKind.SERIAL:
        return serial_readings(s.port, s.baudrate, s.channels, skipped, stop)
    return stdin_readings(s.channels, skipped)
