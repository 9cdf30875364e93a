"""The agent's config file (agent.toml), checked strictly when the agent starts.

A typo or a bad value stops the agent with the key named: a device that
silently ignores its config is worse than one that does not start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from edgeloop.contract.topics import Ring, check_model_name, check_thing_name
from edgeloop.tomlfile import read_toml


class AgentConfigError(ValueError):
    """The agent config cannot be used; the message names the key."""


@dataclass(frozen=True)
class DeviceSection:
    thing: str
    model: str
    n_features: int
    ring: Ring = Ring.ALL


@dataclass(frozen=True)
class BrokerSection:
    url: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    keepalive: int = 30
    # Reconnect backoff: starts at min, doubles to max, with full jitter.
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or ""

    @property
    def port(self) -> int:
        parsed = urlparse(self.url)
        return parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlparse(self.url).scheme == "mqtts"


@dataclass(frozen=True)
class ArtifactsSection:
    base_url: str
    manifest_keys: tuple[Path, ...]
    max_bytes: int = 64 * 1024 * 1024
    timeout: float = 10.0
    retries: int = 4


@dataclass(frozen=True)
class SourceSection:
    kind: str = "synthetic"
    path: Path | None = None
    label_column: str = "label"
    rate: float = 100.0
    anomaly_rate: float = 0.01
    seed: int = 0
    loop: bool = True


@dataclass(frozen=True)
class UploadSection:
    batch_rows: int = 256
    sample_rate: float = 0.05
    queue_max_batches: int = 64
    retry_seconds: float = 5.0
    low_confidence: float = 0.6


@dataclass(frozen=True)
class WatchSection:
    window: int = 500
    max_alarm_factor: float = 5.0
    min_alarm_margin: float = 0.05


@dataclass(frozen=True)
class AgentConfig:
    device: DeviceSection
    broker: BrokerSection
    artifacts: ArtifactsSection
    state_dir: Path
    source: SourceSection = field(default_factory=SourceSection)
    upload: UploadSection = field(default_factory=UploadSection)
    watch: WatchSection = field(default_factory=WatchSection)
    status_interval: float = 30.0


class _Reader:
    """Typed access to one TOML table; unknown keys are refused."""

    def __init__(self, doc: Any, section: str, allowed: set[str], base: Path) -> None:
        if not isinstance(doc, dict):
            raise AgentConfigError(f"[{section}] must be a table")
        unknown = sorted(set(doc) - allowed)
        if unknown:
            raise AgentConfigError(
                f"{section}.{unknown[0]}: unknown key (known: {', '.join(sorted(allowed))})"
            )
        self.doc, self.section, self.base = doc, section, base

    def _fail(self, key: str, expected: str) -> AgentConfigError:
        return AgentConfigError(
            f"{self.section}.{key} must be {expected}, not {self.doc.get(key)!r}"
        )

    def text(self, key: str, default: str | None = None) -> str:
        value = self.doc.get(key, default)
        if not isinstance(value, str) or not value:
            raise self._fail(key, "a non-empty string")
        return value

    def number(self, key: str, default: float, low: float, high: float = math.inf) -> float:
        value = self.doc.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise self._fail(key, f"a number in [{low}, {high}]")
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int = 2**31) -> int:
        value = self.doc.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._fail(key, f"an integer in [{low}, {high}]")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.doc.get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def path(self, key: str, required: bool = False) -> Path | None:
        if key not in self.doc and not required:
            return None
        path = Path(self.text(key)).expanduser()
        return path if path.is_absolute() else self.base / path


def parse_agent_config(doc: dict[str, Any], base: Path) -> AgentConfig:
    top = _Reader(
        doc,
        "agent",
        {"device", "broker", "artifacts", "state", "source", "upload", "watch", "status_interval"},
        base,
    )
    for required in ("device", "broker", "artifacts", "state"):
        if required not in doc:
            raise AgentConfigError(f"[{required}] is missing")

    d = _Reader(doc["device"], "device", {"thing", "model", "n_features", "ring"}, base)
    try:
        thing = check_thing_name(d.text("thing"))
        model = check_model_name(d.text("model"))
    except ValueError as exc:
        raise AgentConfigError(f"device: {exc}") from exc
    ring = d.text("ring", "all")
    if ring not in tuple(Ring):
        names = ", ".join(r.value for r in Ring)
        raise AgentConfigError(f"device.ring must be one of {names}, not {ring!r}")
    device = DeviceSection(thing, model, d.integer("n_features", 0, 1, 65536), Ring(ring))

    b = _Reader(
        doc["broker"],
        "broker",
        {"url", "ca", "cert", "key", "keepalive", "reconnect_min", "reconnect_max"},
        base,
    )
    url = b.text("url")
    if urlparse(url).scheme not in ("mqtt", "mqtts") or not urlparse(url).hostname:
        raise AgentConfigError(
            f"broker.url must look like mqtt://host:port or mqtts://host:8883, not {url!r}"
        )
    broker = BrokerSection(
        url=url,
        ca=b.path("ca"),
        cert=b.path("cert"),
        key=b.path("key"),
        keepalive=b.integer("keepalive", 30, 5, 1200),
        reconnect_min=b.number("reconnect_min", 1.0, 0.01, 600),
        reconnect_max=b.number("reconnect_max", 60.0, 0.01, 3600),
    )
    if broker.tls and not (broker.ca and broker.cert and broker.key):
        raise AgentConfigError("broker: mqtts:// (AWS IoT Core) needs ca, cert and key files")
    for key in ("ca", "cert", "key"):
        path = getattr(broker, key)
        if path is not None and not path.is_file():
            raise AgentConfigError(f"broker.{key}: {path} does not exist")

    a = _Reader(
        doc["artifacts"],
        "artifacts",
        {"base_url", "manifest_keys", "max_bytes", "timeout", "retries"},
        base,
    )
    base_url = a.text("base_url")
    if urlparse(base_url).scheme not in ("http", "https"):
        raise AgentConfigError(f"artifacts.base_url must be an http(s) URL, not {base_url!r}")
    keys = a.doc.get("manifest_keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise AgentConfigError("artifacts.manifest_keys must be a list of PEM public key files")
    key_paths = tuple(p if p.is_absolute() else base / p for p in (Path(k) for k in keys))
    for path in key_paths:
        if not path.is_file():
            raise AgentConfigError(f"artifacts.manifest_keys: {path} does not exist")
    artifacts = ArtifactsSection(
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        manifest_keys=key_paths,
        max_bytes=a.integer("max_bytes", 64 * 1024 * 1024, 1024),
        timeout=a.number("timeout", 10.0, 0.05, 600),
        retries=a.integer("retries", 4, 0, 100),
    )

    s = _Reader(doc["state"], "state", {"dir"}, base)
    state_dir = s.path("dir", required=True)
    assert state_dir is not None

    src = _Reader(
        doc.get("source", {}),
        "source",
        {"kind", "path", "label_column", "rate", "anomaly_rate", "seed", "loop"},
        base,
    )
    kind = src.text("kind", "synthetic")
    if kind not in ("synthetic", "csv", "stdin"):
        raise AgentConfigError(f"source.kind must be synthetic, csv or stdin, not {kind!r}")
    source = SourceSection(
        kind=kind,
        path=src.path("path", required=kind == "csv"),
        label_column=src.text("label_column", "label"),
        rate=src.number("rate", 100.0, 0.0),
        anomaly_rate=src.number("anomaly_rate", 0.01, 0.0, 1.0),
        seed=src.integer("seed", 0, 0),
        loop=src.flag("loop", True),
    )

    u = _Reader(
        doc.get("upload", {}),
        "upload",
        {"batch_rows", "sample_rate", "queue_max_batches", "retry_seconds", "low_confidence"},
        base,
    )
    upload = UploadSection(
        batch_rows=u.integer("batch_rows", 256, 1, 1_000_000),
        sample_rate=u.number("sample_rate", 0.05, 0.0, 1.0),
        queue_max_batches=u.integer("queue_max_batches", 64, 1, 1_000_000),
        retry_seconds=u.number("retry_seconds", 5.0, 0.01, 3600),
        low_confidence=u.number("low_confidence", 0.6, 0.0, 1.0),
    )
    w = _Reader(
        doc.get("watch", {}), "watch", {"window", "max_alarm_factor", "min_alarm_margin"}, base
    )
    watch = WatchSection(
        window=w.integer("window", 500, 1),
        max_alarm_factor=w.number("max_alarm_factor", 5.0, 1.0),
        min_alarm_margin=w.number("min_alarm_margin", 0.05, 0.0, 1.0),
    )
    return AgentConfig(
        device=device,
        broker=broker,
        artifacts=artifacts,
        state_dir=state_dir,
        source=source,
        upload=upload,
        watch=watch,
        status_interval=top.number("status_interval", 30.0, 0.05, 86400),
    )


def load_agent_config(path: str | Path) -> AgentConfig:
    path = Path(path)
    doc = read_toml(path, AgentConfigError, "agent config")
    try:
        return parse_agent_config(doc, path.parent)
    except AgentConfigError as exc:
        raise AgentConfigError(f"{path}: {exc}") from exc
