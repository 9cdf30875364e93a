"""The device's refresh against a lying, frozen or stale repository, and key rotations.

Every case runs python-tuf's ngclient through the agent's HTTP fetcher against
real signatures; each test names the guard it proves.
"""

from __future__ import annotations

import json

import pytest
from securesystemslib.signer import CryptoSigner

from edge.errors import MetadataExpired, TrustRefused
from edgeloop.contract.trust_targets import RolloutPointer, model_path
from edgeloop.trust import DirectoryStore, TrustRepository
from edgeloop.trust.repository import TrustError
from tests.support_http import Fault
from tests.support_trust import PREFIX, TrustWorld, installed, later, model_bytes, world

__all__ = ["world"]


def _target_url(world: TrustWorld, path: str) -> str:
    repo = world.repo()
    role = repo.model_role(path.split("/")[0])
    assert role is not None
    return PREFIX + "tuf/targets/" + role.targets[path].get_prefixed_paths()[0]


def test_device_updates_to_the_version_its_pointer_names(world: TrustWorld) -> None:
    world.publish("digits", 1)
    world.publish("digits", 2)
    device = world.device()
    offer = device.refresh("digits", "thing-1", installed(1))
    assert offer.version == 2
    assert offer.model is not None
    assert device.download(offer.model) == model_bytes(2)
    assert offer.patch is not None
    assert offer.patch[1].base_version == 1
    assert device.bytes_received > 0


def test_tampered_target_is_refused(world: TrustWorld) -> None:
    world.publish("digits", 1)
    url = _target_url(world, model_path("digits", 1))
    world.cdn.files[url] = b"x" + world.cdn.files[url][1:]
    device = world.device()
    offer = device.refresh("digits", "thing-1", None)
    assert offer.model is not None
    with pytest.raises(TrustRefused, match="LengthOrHashMismatch"):
        device.download(offer.model)


def test_endless_target_is_cut_off_at_its_signed_length(world: TrustWorld) -> None:
    world.publish("digits", 1)
    url = _target_url(world, model_path("digits", 1))
    world.cdn.faults[url] = Fault(extra=b"\0" * 100_000)
    device = world.device()
    offer = device.refresh("digits", "thing-1", None)
    assert offer.model is not None
    with pytest.raises(TrustRefused, match="endless data"):
        device.download(offer.model)
    assert device.bytes_received < 50_000


def test_endless_timestamp_is_cut_off_at_the_cap(world: TrustWorld) -> None:
    world.publish("digits", 1)
    world.cdn.faults[PREFIX + "tuf/metadata/timestamp.json"] = Fault(extra=b" " * 1_000_000)
    device = world.device()
    with pytest.raises(TrustRefused, match="endless data"):
        device.refresh("digits", "thing-1", None)
    assert device.bytes_received < 80_000


def test_rolled_back_metadata_is_refused(world: TrustWorld) -> None:
    world.publish("digits", 1)
    old = {k: v for k, v in world.cdn.files.items()}
    world.publish("digits", 2)
    device = world.device()
    assert device.refresh("digits", "thing-1", installed(1)).version == 2
    world.cdn.files.clear()
    world.cdn.files.update(old)  # a CDN (or attacker) serving yesterday's repository
    with pytest.raises(TrustRefused, match="version"):
        device.refresh("digits", "thing-1", installed(1))


def test_frozen_repository_is_reported_as_expired(world: TrustWorld) -> None:
    world.publish("digits", 1)
    device = world.device()
    assert device.refresh("digits", "thing-1", None).version == 1
    later(world.clock, hours=7)
    world.publish("digits", 2)  # signed at a clock 7 hours ahead: the device's now is stale
    frozen = world.device()
    world.clock.now -= __import__("datetime").timedelta(hours=14)
    world.repo().resign_due()  # a timestamp that expired before the device's now
    world.sync()
    with pytest.raises(MetadataExpired):
        frozen.refresh("digits", "thing-1", installed(1))


def test_metadata_signed_by_an_untrusted_key_is_refused(world: TrustWorld) -> None:
    world.publish("digits", 1)
    impostor = CryptoSigner.generate_ecdsa()
    ts_key = PREFIX + "tuf/metadata/timestamp.json"
    doc = json.loads(world.cdn.files[ts_key])
    from tuf.api.metadata import Metadata

    md = Metadata.from_dict(doc)
    md.signed.version += 1
    md.sign(impostor, append=False)
    world.cdn.files[ts_key] = md.to_bytes()
    with pytest.raises(TrustRefused, match="Unsigned"):
        world.device().refresh("digits", "thing-1", None)


def test_mix_and_match_of_snapshots_is_refused(world: TrustWorld) -> None:
    world.publish("digits", 1)
    world.publish("digits", 2)
    # The newest timestamp names snapshot N; serve snapshot N-1's bytes under N's name.
    meta = sorted(k for k in world.cdn.files if k.endswith(".snapshot.json"))
    newest, older = meta[-1], meta[-2]
    world.cdn.files[newest] = world.cdn.files[older]
    with pytest.raises(TrustRefused):
        world.device().refresh("digits", "thing-1", installed(1))


def test_aborted_version_is_no_longer_offered_to_a_refreshing_device(world: TrustWorld) -> None:
    world.publish("digits", 1)
    world.publish("digits", 2)
    device = world.device()
    assert device.refresh("digits", "thing-1", installed(1)).version == 2
    world.repo().withdraw("digits", 2, back_to=1)
    world.sync()
    offer = world.device().refresh("digits", "thing-1", installed(1))
    assert offer.version == 1
    assert not offer.update
    assert world.repo().model_role("digits").targets.get(model_path("digits", 2)) is None  # type: ignore[union-attr]


def test_devices_outside_the_percentage_keep_the_previous_version(world: TrustWorld) -> None:
    world.publish("digits", 1)
    world.repo().publish(__import__("tests.support_trust").support_trust.release("digits", 2))
    world.repo().set_pointer(
        RolloutPointer("digits", offered=2, previous=1, percent=0, canaries=("canary-7",))
    )
    world.sync()
    assert world.device().refresh("digits", "canary-7", installed(1)).version == 2
    assert world.device().refresh("digits", "thing-1", installed(1)).version == 1


def test_refreshes_within_the_rate_limit_fetch_nothing(world: TrustWorld) -> None:
    world.publish("digits", 1)
    device = world.device(min_refresh_seconds=3600)
    device.refresh("digits", "thing-1", None)
    before = device.bytes_received
    for _ in range(20):
        assert not device.refresh("digits", "thing-1", None).fresh
    assert device.bytes_received == before


def _rotate_root_key(world: TrustWorld, index: int) -> None:
    ceremony = world.ceremony()
    new = CryptoSigner.generate_ecdsa()
    ceremony.replace_root_key(world.root_keys[index].public_key.keyid, new.public_key)
    signers = [k for i, k in enumerate(world.root_keys) if i != index]
    world.root_keys[index] = new
    assert not ceremony.sign_pending(new).complete
    assert not ceremony.sign_pending(signers[0]).complete  # the new root's 2 of 3, old's 1 of 2
    assert ceremony.sign_pending(signers[1]).complete


def test_offline_device_follows_two_root_rotations_and_an_online_key_rotation(
    world: TrustWorld,
) -> None:
    world.publish("digits", 1)
    device = world.device()
    assert device.refresh("digits", "thing-1", None).version == 1
    _rotate_root_key(world, 0)
    _rotate_root_key(world, 1)
    new_online = CryptoSigner.generate_ecdsa()
    ceremony = world.ceremony()
    ceremony.replace_online_key(new_online.public_key)
    for key in world.root_keys[:2]:
        ceremony.sign_pending(key)
    world.online = new_online
    world.repo().resign_due()
    world.publish("digits", 2)
    assert world.ceremony().trusted().signed.version == 4
    assert device.refresh("digits", "thing-1", installed(1)).version == 2


def test_metadata_signed_by_a_retired_online_key_is_refused(world: TrustWorld) -> None:
    world.publish("digits", 1)
    retired = world.online
    new_online = CryptoSigner.generate_ecdsa()
    ceremony = world.ceremony()
    ceremony.replace_online_key(new_online.public_key)
    for key in world.root_keys[:2]:
        ceremony.sign_pending(key)
    world.sync()  # root v2 is out; the old key still signs what the CDN serves
    with pytest.raises(TrustRefused, match="Unsigned"):
        world.device().refresh("digits", "thing-1", None)
    with pytest.raises(TrustError, match="does not name key"):
        world.repo(retired)


def test_one_root_key_alone_cannot_rotate_root(world: TrustWorld) -> None:
    world.publish("digits", 1)
    ceremony = world.ceremony()
    intruder = CryptoSigner.generate_ecdsa()
    ceremony.replace_root_key(world.root_keys[1].public_key.keyid, intruder.public_key)
    assert not ceremony.sign_pending(world.root_keys[0]).complete
    assert not ceremony.sign_pending(intruder).complete
    world.sync()
    assert world.ceremony().trusted().signed.version == 1
    # And a root v2 carrying one old signature, put on the CDN by hand, is refused.
    pending = world.store.get("tuf/pending/2.root.json")
    assert pending is not None
    world.cdn.files[PREFIX + "tuf/metadata/2.root.json"] = pending
    with pytest.raises(TrustRefused, match="root"):
        world.device().refresh("digits", "thing-1", None)


def test_an_abort_finished_twice_withdraws_only_the_aborted_version(world: TrustWorld) -> None:
    """The schedule finishes a publish a failed call left half-done: doing the withdrawal
    again must not take the version the pointer went back to."""
    world.publish("digits", 1)
    world.publish("digits", 2)
    for _ in range(2):
        world.repo().withdraw("digits", 2, back_to=1)
    world.sync()
    role = world.repo().model_role("digits")
    assert role is not None
    assert model_path("digits", 1) in role.targets
    assert world.device().refresh("digits", "thing-1", None).version == 1


def test_a_writer_that_loses_the_race_redoes_its_change_on_top_of_the_winners(
    world: TrustWorld,
) -> None:
    """Functions write the repository at once (a publish, a pointer move, the schedule).
    Here another writer commits between this one's read and its snapshot write: the
    snapshot is written create-only, so this one fails, rereads and commits on top;
    neither change is lost, and the timestamp names the newest snapshot."""
    from tests.support_trust import release

    world.publish("digits", 1)
    world.repo().publish(release("pumps", 1))
    other = world.repo()

    class Interleaved(DirectoryStore):
        raced = False

        def put(self, key: str, data: bytes, *, create_only: bool = False) -> None:
            if key.endswith(".snapshot.json") and not Interleaved.raced:
                Interleaved.raced = True
                other.set_pointer(RolloutPointer("pumps", 1, None, percent=42))
            super().put(key, data, create_only=create_only)

    racing = TrustRepository(Interleaved(world.store.root), world.online, clock=world.clock)
    racing.set_pointer(RolloutPointer("digits", 1, None, percent=17))
    assert Interleaved.raced
    world.sync()
    device = world.device()
    for model, percent in (("pumps", 42), ("digits", 17)):
        pointer = device.refresh(model, "thing-1", None).pointer
        assert pointer is not None
        assert pointer.percent == percent
