"""A device kept the root of another cloud (a local cloud set up anew): refused, in one
line that names the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from edge.errors import TrustRefused
from edgeloop.trust import DirectoryStore, RootCeremony
from edgeloop.trust.keys import generate_root_key
from tests.support_trust import TrustWorld, world

__all__ = ["world"]


def other_root(tmp_path: Path) -> bytes:
    store = DirectoryStore(tmp_path / "other-bucket")
    keys = [generate_root_key(tmp_path / "other-keys" / f"root-{i}.pem", None) for i in range(3)]
    return RootCeremony(store).init(keys, 2, CryptoSigner.generate_ecdsa().public_key).to_bytes()


def test_a_root_from_another_cloud_is_refused_with_the_fix(
    world: TrustWorld, tmp_path: Path
) -> None:
    world.publish("digits", 1)
    device = world.device(root=other_root(tmp_path))
    # Nothing kept yet: the root it starts from is the wrong one.
    with pytest.raises(TrustRefused) as refused:
        device.refresh("digits", "thing-1", None)
    said = str(refused.value)
    assert "\n" not in said
    assert "([trust] root) is not this cloud's root: use the cloud's root.json" in said
    assert "remove" not in said
    # Kept from then on: forgetting it is the fix.
    with pytest.raises(TrustRefused) as again:
        device.refresh("digits", "thing-1", None)
    said = str(again.value)
    assert "\n" not in said
    assert "trust root is not its root" in said
    assert f"remove {tmp_path / 'device-1' / 'metadata'}" in said
    assert "root.json" in said
