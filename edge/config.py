"""The agent's config file (agent.toml), declared once and checked strictly when the agent starts.

Each section is a dataclass: its fields are the keys, their defaults the
defaults, their metadata the bounds. One loop reads any section through the
contract's strict reader, so a typo or a bad value stops the agent with the
key named: a device that silently ignores its config is worse than one that
does not start. Relative paths are relative to the config file.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from edge.errors import AgentConfigError
from edgeloop.contract import Fields, WindowSpec
from edgeloop.contract.manifest import MAX_WINDOW_CHANNELS, MAX_WINDOW_SAMPLES
from edgeloop.contract.provisioning import check_template_name
from edgeloop.contract.topics import (
    DEFAULT_STACK,
    check_model_name,
    check_stack_name,
    check_thing_name,
)
from edgeloop.tomlfile import read_toml

S = TypeVar("S")


def rule(
    *,
    low: float | None = None,
    high: float | None = None,
    check: Callable[[Any], object] | None = None,
    existing_file: bool = False,
) -> dict[str, Any]:
    """A key's metadata: its bounds, a check of its value, or a file that must exist."""
    return {"low": low, "high": high, "check": check, "existing_file": existing_file}


class VerifyIn(StrEnum):
    CHILD = "child"
    AGENT = "agent"


class SourceKind(StrEnum):
    SYNTHETIC = "synthetic"
    CSV = "csv"
    STDIN = "stdin"
    # Raw samples published by the sensor code on a topic of a local broker.
    MQTT = "mqtt"
    # Raw samples as JSON lines on a serial port (pyserial, the agent's `serial` extra).
    SERIAL = "serial"


@dataclass(frozen=True)
class DeviceSection:
    n_features: int = field(metadata=rule(low=1, high=65536))
    # Who the device is. Given here for a device enrolled by hand; with a
    # [provisioning] section both come from the cloud when the device registers.
    thing: str = field(default="", metadata=rule(check=check_thing_name))
    model: str = field(default="", metadata=rule(check=check_model_name))
    # The model's input names, in order: the CSV source picks its columns by them.
    # Without them, the installed manifest's input names are used.
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.feature_names and len(self.feature_names) != self.n_features:
            raise AgentConfigError(
                f"device.feature_names has {len(self.feature_names)} names, "
                f"n_features is {self.n_features}"
            )


@dataclass(frozen=True)
class BrokerSection:
    url: str
    ca: Path | None = field(default=None, metadata=rule(existing_file=True))
    cert: Path | None = field(default=None, metadata=rule(existing_file=True))
    key: Path | None = field(default=None, metadata=rule(existing_file=True))
    keepalive: int = field(default=30, metadata=rule(low=5, high=1200))
    # Reconnect backoff: starts at min, doubles to max, with full jitter.
    reconnect_min: float = field(default=1.0, metadata=rule(low=0.01, high=600))
    reconnect_max: float = field(default=60.0, metadata=rule(low=0.01, high=3600))
    # Status reports and upload requests go straight to the stack's IoT rules
    # (`$aws/rules/{rule}/...`), past the broker: AWS IoT Core bills no messaging for
    # them. The local runtime's brokers route them the same way. Off for a broker
    # where something else subscribes to the plain topics.
    basic_ingest: bool = True
    # The stack's name (`cdk deploy -c stack_name=...`): the IoT rules are named after it.
    stack_name: str = field(default=DEFAULT_STACK, metadata=rule(check=check_stack_name))
    # For a broker that publishes no lifecycle events (mosquitto, amqtt; the local
    # cloud): say "connected" on the presence topic at each connect and leave a last
    # will saying "disconnected", which the broker publishes when the connection dies
    # unannounced (1.5x keepalive at most). AWS IoT Core publishes the real events:
    # off there, where each of these would be a billed message.
    presence_will: bool = False
    # The TLS ALPN protocol to offer. AWS IoT Core takes MQTT with client certificates
    # on port 443 only under "x-amzn-mqtt-ca" (for networks that block 8883), which is
    # the default on port 443; "" offers none.
    alpn: str | None = None

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise AgentConfigError(
                f"broker.url must look like mqtt://host:port or mqtts://host:8883, not {self.url!r}"
            )
        _check_port("broker.url", self.url)
        if self.tls and not self.ca:
            raise AgentConfigError("broker: mqtts:// (AWS IoT Core) needs the server's ca file")
        if bool(self.cert) != bool(self.key):
            raise AgentConfigError("broker: cert and key go together: give both or neither")

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

    @property
    def alpn_protocol(self) -> str:
        if self.alpn is not None:
            return self.alpn
        return AWS_IOT_ALPN if self.tls and self.port == 443 else ""


# AWS IoT Core's ALPN protocol for MQTT with X.509 client certificates on port 443.
AWS_IOT_ALPN = "x-amzn-mqtt-ca"


@dataclass(frozen=True)
class ProvisioningSection:
    """Provisioning by claim: the agent makes its own key and certificate with the
    claim, registers as the thing its serial names, and keeps the result in its state
    directory (`identity/`); later starts use that identity and never the claim."""

    claim_cert: Path = field(metadata=rule(existing_file=True))
    claim_key: Path = field(metadata=rule(existing_file=True))
    # The stack's fleet provisioning template (a stack output).
    template: str = field(metadata=rule(check=check_template_name))
    # The device's serial, which names its thing. Usually given per device on the
    # command line (`--serial`) or in EDGELOOP_SERIAL, so that one file serves a fleet.
    serial: str = field(default="", metadata=rule(check=check_thing_name))
    # How long each provisioning call may take before it is asked again.
    timeout: float = field(default=30.0, metadata=rule(low=1.0, high=600))


@dataclass(frozen=True)
class ArtifactsSection:
    base_url: str
    max_bytes: int = field(default=64 * 1024 * 1024, metadata=rule(low=1024, high=2**31))
    timeout: float = field(default=10.0, metadata=rule(low=0.05, high=600))
    retries: int = field(default=4, metadata=rule(low=0, high=100))
    # Each fetch must finish within timeout + its length at this rate, retries
    # included: a path trickling bytes cannot hold the update thread for hours.
    min_bytes_per_second: float = field(default=1024.0, metadata=rule(low=1.0, high=1e9))
    # How long a new model may take to load and pass its health checks in the
    # child process that tries it before the agent does.
    check_timeout: float = field(default=10.0, metadata=rule(low=0.5, high=600))

    def __post_init__(self) -> None:
        parsed = urlparse(self.base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise AgentConfigError(
                f"artifacts.base_url must be an http(s) URL with a host, not {self.base_url!r}"
            )
        if parsed.query or parsed.fragment:
            raise AgentConfigError(
                f"artifacts.base_url {self.base_url!r}: artifact paths are appended to it, "
                "so it cannot carry a query or a fragment"
            )
        _check_port("artifacts.base_url", self.base_url)
        if not self.base_url.endswith("/"):
            # Artifact paths are appended to it.
            object.__setattr__(self, "base_url", self.base_url + "/")


@dataclass(frozen=True)
class TrustSection:
    # The fleet's root metadata shipped with the device: its trust anchor until it
    # has verified a newer root (kept under the state directory, `trust/metadata`).
    root: Path = field(metadata=rule(existing_file=True, check=lambda p: _root_metadata(p)))
    # Nudges within this many seconds of the last refresh wait for the next one.
    min_refresh_seconds: float = field(default=10.0, metadata=rule(low=0.0, high=3600))
    # A refresh without a nudge: a missed nudge or a frozen CDN is noticed by then.
    # Every two days by default: the nudge (retained, and queued in the persistent
    # session) is how updates arrive, so this is only the backstop, and at rest it is
    # most of what a device costs (the root probe, the timestamp and the timestamp's
    # S3 read: $1.20 per million device-days every two days, $57.60 hourly).
    refresh_interval: float = field(default=2 * 86400.0, metadata=rule(low=1.0, high=7 * 86400))
    # Where signed metadata is verified: "child", a short-lived process for each
    # refresh and its downloads, so the agent never holds python-tuf and cryptography
    # (11 MB resident); or "agent", its own process (a simulation of many devices).
    verify_in: VerifyIn = VerifyIn.CHILD


@dataclass(frozen=True)
class StateSection:
    dir: Path


@dataclass(frozen=True)
class SourceSection:
    kind: SourceKind = SourceKind.SYNTHETIC
    path: Path | None = field(default=None, metadata=rule(existing_file=True))
    label_column: str = "label"
    rate: float = field(default=100.0, metadata=rule(low=0.0))
    # The synthetic source's planted anomalies: a share of samples, or with channels
    # a share of its 1,024-sample segments that knock.
    anomaly_rate: float = field(default=0.01, metadata=rule(low=0.0, high=1.0))
    seed: int = field(default=0, metadata=rule(low=0))
    loop: bool = True
    # Raw samples instead of feature vectors: the channels each reading holds, by
    # name, at `sample_rate` Hz. The agent cuts them into windows of the installed
    # signal model's spec; `window` and `hop` (samples) are the windowing before
    # any model is installed, whose rows are uploaded as training data.
    channels: tuple[str, ...] = ()
    sample_rate: float = field(default=0.0, metadata=rule(low=0.0, high=1e7))
    window: int = field(default=0, metadata=rule(low=0, high=MAX_WINDOW_SAMPLES))
    hop: int = field(default=0, metadata=rule(low=0, high=MAX_WINDOW_SAMPLES))
    # A step between timestamps longer than this many sample periods is a gap.
    max_gap: float = field(default=1.5, metadata=rule(low=1.0, high=1e6))
    # An mqtt source: the local broker (mqtt://host:port, no TLS) and the topic.
    url: str = ""
    topic: str = ""
    # A serial source: the port (/dev/ttyUSB0, or a pyserial URL) and its speed.
    port: str = ""
    baudrate: int = field(default=115200, metadata=rule(low=50, high=10_000_000))

    def __post_init__(self) -> None:
        if self.kind == SourceKind.CSV and self.path is None:
            raise AgentConfigError("source.path is missing: a csv source needs a file")
        if self.kind == SourceKind.MQTT:
            if not self.channels:
                raise AgentConfigError(
                    "source.channels is missing: an mqtt source reads raw samples"
                )
            parsed = urlparse(self.url)
            if parsed.scheme != "mqtt" or not parsed.hostname:
                raise AgentConfigError(
                    f"source.url must look like mqtt://localhost:1883 for an mqtt source, "
                    f"not {self.url!r}"
                )
            _check_port("source.url", self.url)
            if not self.topic or any(c in self.topic for c in "#+\0"):
                raise AgentConfigError(
                    f"source.topic {self.topic!r} must be one topic, without wildcards"
                )
        if self.kind == SourceKind.SERIAL:
            if not self.channels:
                raise AgentConfigError(
                    "source.channels is missing: a serial source reads raw samples"
                )
            if not self.port:
                raise AgentConfigError("source.port is missing: a serial source needs its port")
        if not self.channels:
            return
        if self.kind == SourceKind.CSV:
            raise AgentConfigError(
                "source.channels: a csv source delivers feature vectors; raw samples come "
                "from a stdin, mqtt, serial or synthetic source"
            )
        if (
            len(set(self.channels)) != len(self.channels)
            or len(self.channels) > MAX_WINDOW_CHANNELS
        ):
            raise AgentConfigError(
                f"source.channels: names must be distinct, at most {MAX_WINDOW_CHANNELS}"
            )
        if self.sample_rate <= 0.0:
            raise AgentConfigError(
                "source.sample_rate is missing: raw samples need their rate in Hz"
            )
        if self.window < 2:
            raise AgentConfigError(
                "source.window is missing: the samples per window before a model is installed"
            )
        if not 1 <= self.hop <= self.window:
            raise AgentConfigError(f"source.hop must be in [1, source.window = {self.window}]")

    @property
    def raw(self) -> bool:
        """True when the source delivers raw samples for the agent to window."""
        return bool(self.channels)

    def window_spec(self) -> WindowSpec:
        """The windowing before a signal model is installed."""
        return WindowSpec(self.channels, self.sample_rate, self.window, self.hop)


@dataclass(frozen=True)
class UploadSection:
    batch_rows: int = field(default=256, metadata=rule(low=1, high=1_000_000))
    # Once a model runs: the share of samples uploaded beside every alarm. A version
    # may ask for more in its signed spec (its model's `collect` section), up to
    # max_sample_rate, the owner's ceiling for a metered link.
    sample_rate: float = field(default=0.05, metadata=rule(low=0.0, high=1.0))
    max_sample_rate: float = field(default=1.0, metadata=rule(low=0.0, high=1.0))
    # A partial batch is sent once its oldest row has waited this long, so a
    # device fed a few rows, or a trickle, is still heard.
    max_wait_seconds: float = field(default=300.0, metadata=rule(low=0.1, high=7 * 86400))
    queue_max_batches: int = field(default=64, metadata=rule(low=1, high=1_000_000))
    retry_seconds: float = field(default=5.0, metadata=rule(low=0.01, high=3600))
    low_confidence: float = field(default=0.6, metadata=rule(low=0.0, high=1.0))


@dataclass(frozen=True)
class WatchSection:
    window: int = field(default=500, metadata=rule(low=1))
    max_alarm_factor: float = field(default=5.0, metadata=rule(low=1.0))
    min_alarm_margin: float = field(default=0.05, metadata=rule(low=0.0, high=1.0))


@dataclass(frozen=True)
class AgentConfig:
    device: DeviceSection
    broker: BrokerSection
    artifacts: ArtifactsSection
    trust: TrustSection
    state: StateSection
    source: SourceSection = field(default_factory=SourceSection)
    upload: UploadSection = field(default_factory=UploadSection)
    watch: WatchSection = field(default_factory=WatchSection)
    provisioning: ProvisioningSection | None = None
    # The keep-alive report: the whole report once per interval even when nothing
    # changed. Weekly by default: presence comes from the broker (MQTT keep-alive pings
    # are free and IoT Core's lifecycle events say connected or not), and a change of
    # health or version is reported within `status_check` seconds, so this only
    # refreshes drift and queue figures; at fleet scale every report is billed, and
    # a daily one with the identity lookup it brings is $3.97 per million device-days.
    status_interval: float = field(default=7 * 86400.0, metadata=rule(low=0.05, high=7 * 86400))
    # How often the agent looks for a change of health or version to report.
    status_check: float = field(default=10.0, metadata=rule(low=0.01, high=60))

    def __post_init__(self) -> None:
        s = self.source
        if s.raw and self.device.n_features != s.window * len(s.channels):
            raise AgentConfigError(
                f"device.n_features is {self.device.n_features}, but a raw source's rows are "
                f"source.window x source.channels = {s.window * len(s.channels)} values"
            )
        if self.provisioning is None:
            if not (self.device.thing and self.device.model):
                raise AgentConfigError(
                    "device.thing and device.model are missing: give both, or a "
                    "[provisioning] section with a claim certificate to get them from the cloud"
                )
            if self.broker.tls and not self.broker.cert:
                raise AgentConfigError(
                    "broker: mqtts:// needs the device's cert and key, or a [provisioning] "
                    "section with a claim certificate to make them"
                )
        elif not self.broker.tls:
            raise AgentConfigError(
                "provisioning needs a TLS broker (mqtts://): the claim is a client certificate"
            )

    @property
    def state_dir(self) -> Path:
        return self.state.dir


def _check_port(key: str, url: str) -> None:
    """A port out of range is refused now, not when the connection thread first uses it."""
    try:
        port = urlparse(url).port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise AgentConfigError(f"{key} {url!r}: the port must be in [1, 65535]")


def _root_metadata(path: Path) -> None:
    # Read at load, so a wrong trust anchor stops the agent before it connects. Its
    # shape only: python-tuf, which checks the rest at the first refresh, stays out of
    # the agent's process (edge.trust_child).
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ValueError(f"{path} is not TUF root metadata: {exc}") from exc
    signed = doc.get("signed") if isinstance(doc, dict) else None
    if not isinstance(signed, dict) or not isinstance(doc.get("signatures"), list):
        raise ValueError(f"{path} is not TUF root metadata: no signed part and signatures")
    if signed.get("_type") != "root":
        raise ValueError(f"{path} holds {signed.get('_type')} metadata, not root")


def read_section(cls: type[S], doc: Any, where: str, base: Path) -> S:
    """One dataclass from one TOML table: unknown keys refused, every value checked."""
    specs = dataclasses.fields(cls)  # type: ignore[arg-type]
    f = Fields(doc, where, AgentConfigError, known={spec.name for spec in specs})
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for spec in specs:
        has_default = (
            spec.default is not dataclasses.MISSING
            or spec.default_factory is not dataclasses.MISSING
        )
        kind = hints[spec.name]
        if spec.name not in f.doc and has_default:
            continue
        optional = _optional_section(kind)
        if optional is not None:
            values[spec.name] = read_section(optional, f.doc[spec.name], spec.name, base)
        elif dataclasses.is_dataclass(kind):
            if spec.name not in f.doc:
                raise AgentConfigError(f"[{spec.name}] is missing")
            values[spec.name] = read_section(
                typing.cast(type, kind), f.doc[spec.name], spec.name, base
            )
        else:
            values[spec.name] = _value(f, spec.name, kind, spec.metadata, base)
    return cls(**values)


def _optional_section(kind: Any) -> type | None:
    """The section class of an optional section (`X | None`), else None."""
    args = typing.get_args(kind)
    if len(args) == 2 and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        if dataclasses.is_dataclass(inner):
            return typing.cast(type, inner)
    return None


def _value(f: Fields, key: str, kind: Any, meta: typing.Mapping[str, Any], base: Path) -> Any:
    low, high = meta.get("low"), meta.get("high")
    value: Any
    if kind is bool:
        value = f.flag(key)
    elif kind is int:
        value = f.integer(
            key,
            low=int(low) if low is not None else 0,
            high=int(high) if high is not None else 2**63 - 1,
        )
    elif kind is float:
        value = f.number(
            key,
            low=low if low is not None else float("-inf"),
            high=high if high is not None else float("inf"),
        )
    elif kind is str:
        value = f.text(key)
    elif kind == str | None:  # a string where "" means none
        value = f.any_text(key, max_length=255)
    elif kind in (Path, Path | None):
        value = _path(f.text(key), base)
    elif kind == tuple[str, ...]:
        items = f.items(key, max_items=65536)
        if not all(isinstance(item, str) and item for item in items):
            raise f.fail(key, "a list of non-empty strings")
        value = tuple(items)
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        value = f.choice(key, kind)
    else:  # a declaration this loop cannot read is a bug here, not in the file
        raise TypeError(f"{f.path(key)}: no reader for {kind!r}")
    if meta.get("existing_file") and value is not None and not value.is_file():
        raise AgentConfigError(f"{f.path(key)}: {value} does not exist")
    check = meta.get("check")
    return value if check is None else f.checked(key, value, check)


def _path(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def parse_agent_config(doc: dict[str, Any], base: Path) -> AgentConfig:
    return read_section(AgentConfig, doc, "agent", base)


def load_agent_config(path: str | Path) -> AgentConfig:
    path = Path(path)
    doc = read_toml(path, AgentConfigError, "agent config")
    try:
        return parse_agent_config(doc, path.parent)
    except AgentConfigError as exc:
        raise AgentConfigError(f"{path}: {exc}") from exc
