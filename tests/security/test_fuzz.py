"""Property-based fuzzing: malformed input gives the project's typed errors, never a crash.

CI runs a small budget; `make fuzz` runs the same properties far longer
(HYPOTHESIS_PROFILE=fuzz).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import RepositoryError
from tuf.api.metadata import Metadata, Root, Targets

from edgeloop.contract import (
    CODECS,
    ContractError,
    MalformedManifest,
    Nudge,
    PatchCorrupt,
    parse_manifest,
    sha256_hex,
)
from edgeloop.contract.trust_targets import RolloutPointer, VersionSpec
from edgeloop.delta import PatchSpec, apply_checked, apply_patch, make_patch
from edgeloop.factory.data import Batch, Quarantined, read_batch
from tests.factories import digits_config, kmeans_config

ONLINE = CryptoSigner.generate_ecdsa()
OLD = bytes(range(256)) * 8
NEW = OLD[:1000] + b"changed" + OLD[1007:]


def _signed_role() -> tuple[Metadata[Root], dict[str, Any]]:
    """A model's role as the online key signs it, and the root that names the key."""
    root = Root()
    root.add_key(ONLINE.public_key, Targets.type)
    role = Metadata(Targets())
    pointer = RolloutPointer("vibration", 3, 2, 10, ("pump-1",))
    from tuf.api.metadata import TargetFile

    target = TargetFile.from_data("vibration/rollout.json", b"{}", ["sha256"])
    target.unrecognized_fields["custom"] = pointer.to_json()
    role.signed.targets[target.path] = target
    role.sign(ONLINE)
    return Metadata(root), role.to_dict()


ROOT, SIGNED = _signed_role()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_what_the_device_parses(raw: bytes) -> None:
    """A nudge (never believed) and a version's spec (a verified target) both refuse
    with the contract's errors."""
    for parse in (Nudge.from_bytes, VersionSpec.from_bytes):
        with contextlib.suppress(ContractError):
            parse(raw)


@given(json_values)
def test_arbitrary_json_never_crashes_manifest_parsing(doc: Any) -> None:
    with contextlib.suppress(MalformedManifest):
        parse_manifest(json.dumps(doc).encode())
    with contextlib.suppress(ContractError):
        RolloutPointer.from_json(doc)


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, (*path, i))] or [path]
    return [path]


PATHS = [p for p in _leaf_paths(SIGNED) if p and p[0] == "signed"]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), json_values)
def test_any_edit_to_signed_metadata_is_refused_or_changes_nothing(
    path: tuple[Any, ...], value: Any
) -> None:
    """python-tuf verifies the canonical form of what is signed: an edit anywhere in it
    (the rollout pointer included) fails verification, or did not change it."""
    doc = json.loads(json.dumps(SIGNED))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    try:
        edited = Metadata.from_dict(doc)
        ROOT.signed.verify_delegate(Targets.type, edited.signed_bytes, edited.signatures)
    except (RepositoryError, ValueError, KeyError, TypeError, AttributeError):
        return
    assert (
        edited.signed.to_dict()
        == Metadata.from_dict(json.loads(json.dumps(SIGNED))).signed.to_dict()
    )


@given(st.sampled_from(CODECS), st.binary(max_size=4096))
def test_arbitrary_patches_give_patch_corrupt_or_bytes(codec: str, patch: bytes) -> None:
    try:
        out = apply_patch(OLD, patch, codec, max_size=1 << 20)
    except PatchCorrupt:
        return
    assert len(out) <= 1 << 20


@given(st.sampled_from(CODECS), st.integers(0, 4000), st.integers(0, 255))
def test_a_flipped_byte_in_a_real_patch_is_caught(codec: str, position: int, value: int) -> None:
    patch = bytearray(make_patch(OLD, NEW, codec))
    patch[position % len(patch)] = value
    spec = PatchSpec(codec, sha256_hex(OLD), sha256_hex(NEW), len(NEW))
    with contextlib.suppress(ContractError):
        assert apply_checked(OLD, bytes(patch), spec) == NEW


@given(st.sampled_from(["a.npz", "b.csv", "c.bin"]), st.binary(max_size=4096))
def test_arbitrary_uploads_are_read_or_quarantined(key: str, data: bytes) -> None:
    for config in (digits_config(), kmeans_config()):
        assert isinstance(read_batch(key, data, config), Batch | Quarantined)


@given(st.lists(st.lists(st.text(max_size=8), max_size=10), max_size=20))
def test_arbitrary_csv_tables_are_read_or_quarantined(rows: list[list[str]]) -> None:
    text = "\n".join(",".join(r) for r in rows).encode()
    assert isinstance(read_batch("t.csv", text, kmeans_config()), Batch | Quarantined)
