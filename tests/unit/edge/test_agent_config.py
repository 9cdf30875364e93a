"""The agent config: declared once, read strictly, every key named when it is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import (
    AgentConfig,
    SourceKind,
    UploadSection,
    WatchSection,
    load_agent_config,
    parse_agent_config,
)
from edge.errors import AgentConfigError
from edgeloop.trust import DirectoryStore, RootCeremony
from edgeloop.trust.keys import generate_root_key


def fleet_root(tmp_path: Path) -> bytes:
    """Root v1 of a fleet, as `edgeloop trust init` writes it."""
    store = DirectoryStore(tmp_path / "fleet")
    if store.get("tuf/metadata/1.root.json") is None:
        keys = [generate_root_key(tmp_path / "fleet-keys" / f"{i}.pem", None) for i in range(3)]
        RootCeremony(store).init(keys, 2, keys[0].public_key)
    data = store.get("tuf/metadata/1.root.json")
    assert data is not None
    return data


def minimal(tmp_path: Path) -> dict[str, object]:
    (tmp_path / "root.json").write_bytes(fleet_root(tmp_path))
    (tmp_path / "not-root.json").write_text('{"signed": {"_type": "timestamp"}}')
    return {
        "device": {"thing": "pump-1", "model": "vibration", "n_features": 8},
        "broker": {"url": "mqtt://localhost:1883"},
        "artifacts": {"base_url": "http://cdn.local"},
        "trust": {"root": "root.json"},
        "state": {"dir": "state"},
    }


def test_defaults_come_from_the_declaration_and_paths_from_the_config_file(tmp_path: Path) -> None:
    config = parse_agent_config(minimal(tmp_path), tmp_path)
    assert isinstance(config, AgentConfig)
    assert config.upload == UploadSection()
    assert config.watch == WatchSection()
    assert config.source.kind is SourceKind.SYNTHETIC
    assert config.state_dir == tmp_path / "state"
    assert config.trust.root == tmp_path / "root.json"
    assert (config.trust.min_refresh_seconds, config.trust.refresh_interval) == (10.0, 172800.0)
    assert config.artifacts.base_url == "http://cdn.local/"
    assert (config.broker.host, config.broker.port) == ("localhost", 1883)
    # Status and upload requests go to the default stack's rules by Basic Ingest.
    assert (config.broker.basic_ingest, config.broker.stack_name) == (True, "edgeloop")
    # IoT Core publishes lifecycle events itself: the agent's stand-in is off by default.
    assert config.broker.presence_will is False


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("upload", "batch_rows", 0, r"upload\.batch_rows must be an integer in \[1, 1000000\]"),
        ("upload", "sample_rate", True, r"upload\.sample_rate must be a finite number"),
        ("watch", "window", "500", r"watch\.window must be an integer"),
        # The cloud puts a device in its rollout stage: the config has no say.
        ("device", "ring", "canary", r"device\.ring: unknown key"),
        ("device", "stage", 0, r"device\.stage: unknown key"),
        ("device", "model", "Vibration", r"device\.model: model name"),
        ("source", "loop", 1, r"source\.loop must be true or false"),
        ("broker", "colour", "red", r"broker\.colour: unknown key"),
        ("broker", "basic_ingest", "yes", r"broker\.basic_ingest must be true or false"),
        # Rule names allow letters, digits and '_': a stack name maps onto them.
        ("broker", "stack_name", "edge_loop", r"broker\.stack_name: stack name"),
        ("broker", "stack_name", "x" * 120, r"broker\.stack_name: stack name .* 1-112 characters"),
        ("trust", "root", "gone.json", r"trust\.root: .*gone\.json does not exist"),
        ("trust", "root", "not-root.json", r"trust\.root: .*is not TUF root metadata"),
        ("trust", "verify_in", "cloud", r"trust\.verify_in 'cloud' is not one of child, agent"),
        # The pinned PEM of the hand-written manifests is gone: root is the only anchor.
        ("artifacts", "manifest_keys", ["k.pem"], r"artifacts\.manifest_keys: unknown key"),
        ("broker", "url", "http://localhost", r"broker\.url must look like mqtt://"),
        ("device", "feature_names", ["rpm"], r"device\.feature_names has 1 names, n_features is 8"),
        (
            "device",
            "feature_names",
            ["rpm", 3],
            r"device\.feature_names must be a list of non-empty",
        ),
    ],
)
def test_a_bad_value_is_refused_with_its_key_named(
    tmp_path: Path, section: str, key: str, value: object, named: str
) -> None:
    doc = minimal(tmp_path)
    table = doc.setdefault(section, {})
    assert isinstance(table, dict)
    table[key] = value
    with pytest.raises(AgentConfigError, match=named):
        parse_agent_config(doc, tmp_path)


def test_a_missing_section_or_key_is_named(tmp_path: Path) -> None:
    doc = minimal(tmp_path)
    del doc["state"]
    with pytest.raises(AgentConfigError, match=r"\[state\] is missing"):
        parse_agent_config(doc, tmp_path)
    doc = minimal(tmp_path)
    del doc["device"]["n_features"]  # type: ignore[attr-defined]
    with pytest.raises(AgentConfigError, match=r"device\.n_features is missing"):
        parse_agent_config(doc, tmp_path)


def test_an_unknown_top_level_table_is_refused(tmp_path: Path) -> None:
    doc = minimal(tmp_path)
    doc["uplaod"] = {}
    with pytest.raises(AgentConfigError, match="uplaod: unknown key"):
        parse_agent_config(doc, tmp_path)


def test_a_csv_source_needs_its_file(tmp_path: Path) -> None:
    doc = minimal(tmp_path)
    doc["source"] = {"kind": "csv"}
    with pytest.raises(AgentConfigError, match=r"source\.path"):
        parse_agent_config(doc, tmp_path)


def test_the_file_named_in_an_error_is_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[device]\nthing = "pump-1"\n')
    with pytest.raises(AgentConfigError, match=f"{path}: "):
        load_agent_config(path)


def test_the_status_report_is_a_daily_keep_alive_and_the_old_key_still_sets_it(
    tmp_path: Path,
) -> None:
    config = parse_agent_config(minimal(tmp_path), tmp_path)
    assert (config.status_interval, config.status_check) == (7 * 86400.0, 10.0)
    doc = {**minimal(tmp_path), "status_interval": 3600.0, "status_check": 2.0}
    config = parse_agent_config(doc, tmp_path)
    assert (config.status_interval, config.status_check) == (3600.0, 2.0)
    with pytest.raises(AgentConfigError, match=r"status_check must be a finite number in"):
        parse_agent_config({**minimal(tmp_path), "status_check": 600}, tmp_path)
