"""The fleet's TUF repository: what the cloud signs, and with which key.

Layout in the store (the artifact bucket, behind the CDN):

    tuf/metadata/N.root.json        every root version, for devices to walk
    tuf/metadata/timestamp.json     the one unversioned file, re-signed every few hours
    tuf/metadata/N.snapshot.json    consistent snapshots: a CDN never mixes versions
    tuf/metadata/N.targets.json     top-level targets: only delegations, one per model
    tuf/metadata/N.{model}.json     a model's role: its versions, patches, golden
                                    inputs and its rollout pointer
    tuf/targets/{model}/.../{sha256}.{name}   hash-prefixed target files
    tuf/pending/N.root.json         a root version still collecting signatures

Root is offline (`RootCeremony`, run by people with key files); everything
else is online (`TrustRepository`, run by functions with the KMS key). The
repository's state is the store itself: the newest root, and whatever the
timestamp names, so no second record can disagree with what devices see.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from edgeloop.contract import CarriedFile, Manifest
from edgeloop.contract.trust_targets import (
    PatchInfo,
    RolloutPointer,
    VersionSpec,
    check_model_name,
    compressed_path,
    golden_bytes,
    golden_path,
    model_path,
    patch_path,
    pointer_path,
    spec_path,
)
from edgeloop.trust.store import ByteStore, KeyExists

METADATA = "tuf/metadata/"
TARGETS = "tuf/targets/"
PENDING = "tuf/pending/"
ONLINE_ROLES = (Targets.type, Snapshot.type, Timestamp.type)
_ROOT_FILE = re.compile(r"(\d+)\.root\.json")
# Every key root metadata is stored under, trusted or pending, as IAM resource patterns
# (`*`: any characters): no online signer may write these (model names exclude "root").
ROOT_METADATA_KEYS = (f"{METADATA}*.root.json", f"{PENDING}*")
# Compact JSON: every byte of metadata is a byte each device downloads.
_SERIALIZER = JSONSerializer(compact=True)

S = TypeVar("S", Root, Timestamp, Snapshot, Targets)
# What a transaction's change returns: the targets roles to commit, or None for nothing.
_Change = Mapping[str, Metadata[Targets]] | None


class TrustError(Exception):
    """The repository cannot do what was asked; the message says why and what to do."""


class NotInitialised(TrustError):
    """No root in the store yet: `edgeloop trust init` has not been run."""


class OnlineKeyNotTrusted(TrustError):
    """The online signer's key is not the one root names for the online roles."""


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Lifetimes:
    """How long each role's signature holds. Timestamp is short, so a frozen CDN shows."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    model: timedelta = timedelta(days=30)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(hours=6)
    # A role is re-signed once less than this share of its lifetime remains, so a
    # schedule that misses a few runs still re-signs it in time.
    renew_at: float = 0.5


@dataclass(frozen=True)
class PatchRelease:
    base_version: int
    base_sha256: str
    codec: str
    data: bytes


@dataclass(frozen=True)
class VersionRelease:
    """One published version of a model, as the release writer hands it over.

    The model target's custom metadata names two small targets beside it: the
    version's spec (input and output, the health checks' expected outputs and
    tolerance, metrics, stats) and its golden inputs. Both are files rather than
    custom metadata because the model's role lists every kept version and a
    device downloads the role whole on every pointer move: a spec inline would
    be paid again for each version kept and each stage, a spec file once per
    update. The golden inputs are content-addressed, so a device holding them
    from an earlier version does not fetch them again.

    TUF signs canonical JSON, which has no floats: numbers in `custom` are
    written as decimal strings (`repr(x)` reads back as exactly `x`).
    """

    model: str
    version: int
    model_bytes: bytes
    custom: Mapping[str, Any] = field(default_factory=dict)
    compressed: Mapping[str, bytes] = field(default_factory=dict)  # encoding -> bytes
    patches: tuple[PatchRelease, ...] = ()
    golden: bytes | None = None
    spec: bytes | None = None  # the version's spec (edgeloop.contract.trust_targets.VersionSpec)

    @staticmethod
    def of(manifest: Manifest, files: Mapping[str, bytes]) -> VersionRelease:
        """The release of a version the cloud built (edgeloop.factory.release): its
        manifest and the bytes of every file the manifest names, by path."""
        artifact = manifest.artifact
        if artifact.path != model_path(manifest.model, manifest.version):
            raise TrustError(
                f"{artifact.path} is not where {manifest.model} v{manifest.version}"
                " lives in the repository"
            )
        compressed = {}
        if artifact.compressed is not None:
            compressed[artifact.compressed.encoding] = files[artifact.compressed.path]
        return VersionRelease(
            model=manifest.model,
            version=manifest.version,
            model_bytes=files[artifact.path],
            compressed=compressed,
            patches=tuple(
                PatchRelease(d.from_version, d.from_sha256, d.codec, files[d.path])
                for d in manifest.deltas
            ),
            golden=golden_bytes(manifest.health_checks[0].inputs),
            spec=VersionSpec.of(manifest).to_bytes(),
        )


def _target(path: str, data: bytes, custom: Mapping[str, Any] | None = None) -> TargetFile:
    target = TargetFile.from_data(path, data, ["sha256"])
    if custom:
        target.unrecognized_fields["custom"] = dict(custom)
    return target


def _target_key(target: TargetFile) -> str:
    return TARGETS + target.get_prefixed_paths()[0]


def _version_of(path: str) -> int | None:
    _, _, rest = path.partition("/")
    number = rest.split("/", 1)[0]
    return int(number) if number.isdigit() else None


class _Store:
    """Reads and writes metadata by role and version, in the consistent-snapshot layout."""

    def __init__(self, store: ByteStore) -> None:
        self.bytes = store

    def root_versions(self, prefix: str = METADATA) -> list[int]:
        found = (_ROOT_FILE.fullmatch(k[len(prefix) :]) for k in self.bytes.list(prefix))
        return sorted(int(m.group(1)) for m in found if m)

    def load(self, key: str, kind: type[S]) -> Metadata[S]:
        data = self.bytes.get(key)
        if data is None:
            raise NotInitialised(f"{key} is not in the store")
        md = Metadata[S].from_bytes(data)
        if not isinstance(md.signed, kind):
            raise TrustError(f"{key} holds {md.signed.type} metadata, not {kind.type}")
        return md

    def root(self) -> Metadata[Root]:
        versions = self.root_versions()
        if not versions:
            raise NotInitialised("no root metadata in the store; run `edgeloop trust init` first")
        return self.load(f"{METADATA}{versions[-1]}.root.json", Root)

    def write(self, md: Metadata[Any], role: str | None = None, create_only: bool = False) -> bytes:
        """`role` names a targets role's file; the other roles are named by their type."""
        data = md.to_bytes(_SERIALIZER)
        if isinstance(md.signed, Timestamp):
            self.bytes.put(f"{METADATA}timestamp.json", data)
        else:
            key = f"{METADATA}{md.signed.version}.{role or md.signed.type}.json"
            self.bytes.put(key, data, create_only=create_only)
        return data

    def has(self, role: str, version: int) -> bool:
        return self.bytes.get(f"{METADATA}{version}.{role}.json") is not None


class TrustRepository:
    """The online side: publish versions, move pointers, keep signatures fresh.

    Holds no root key and cannot change root: a root that does not name this
    signer's key for the online roles is refused at construction.

    Several functions write at once (a retrain publishing, a status report
    moving a stage, the schedule re-signing), so every change is a transaction
    over the store: read the newest snapshot, change the roles, write them and
    a snapshot under new version numbers with create-only writes. The snapshot
    is the commit: of two writers of the same snapshot version one fails, reads
    the winner's state and applies its change again on top. The timestamp only
    publishes the newest snapshot; a writer that finds a newer snapshot after
    writing it names that one instead, so the last word is always the newest.
    """

    def __init__(
        self,
        store: ByteStore,
        online: Signer,
        *,
        lifetimes: Lifetimes | None = None,
        keep_versions: int = 2,
        clock: Callable[[], datetime] = utc_now,
        attempts: int = 8,
    ) -> None:
        if keep_versions < 1:
            raise ValueError("keep at least the newest version")
        self._store = _Store(store)
        self._online = online
        self.lifetimes = lifetimes or Lifetimes()
        self.keep_versions = keep_versions
        self._clock = clock
        self._attempts = attempts
        self.root = self._store.root()
        keyid = online.public_key.keyid
        for role in ONLINE_ROLES:
            if keyid not in self.root.signed.roles[role].keyids:
                raise OnlineKeyNotTrusted(
                    f"root v{self.root.signed.version} does not name key {keyid} for the "
                    f"{role} role; sign the pending root (`edgeloop trust sign-root`) or "
                    "configure the online key it names"
                )

    # -- reading the current state -------------------------------------------------

    def _timestamp(self) -> Metadata[Timestamp] | None:
        if self._store.bytes.get(f"{METADATA}timestamp.json") is None:
            return None
        return self._store.load(f"{METADATA}timestamp.json", Timestamp)

    def _newest_snapshot_version(self, known: int) -> int:
        """The newest committed snapshot at or after `known` (what the timestamp names):
        one a writer committed but did not get to publish counts, it is complete."""
        while self._store.has(Snapshot.type, known + 1):
            known += 1
        return known

    def _snapshot(self) -> Metadata[Snapshot] | None:
        timestamp = self._timestamp()
        if timestamp is None:
            return None
        version = self._newest_snapshot_version(timestamp.signed.snapshot_meta.version)
        return self._store.load(f"{METADATA}{version}.snapshot.json", Snapshot)

    def _role(self, snapshot: Metadata[Snapshot], role: str) -> Metadata[Targets]:
        meta = snapshot.signed.meta[f"{role}.json"]
        return self._store.load(f"{METADATA}{meta.version}.{role}.json", Targets)

    def models(self) -> list[str]:
        snapshot = self._snapshot()
        if snapshot is None:
            return []
        delegations = self._role(snapshot, Targets.type).signed.delegations
        return sorted(delegations.roles or {}) if delegations else []

    def model_role(self, model: str) -> Targets | None:
        snapshot = self._snapshot()
        if snapshot is None or f"{model}.json" not in snapshot.signed.meta:
            return None
        return self._role(snapshot, model).signed

    def pointer(self, model: str) -> RolloutPointer | None:
        role = self.model_role(model)
        target = role.targets.get(pointer_path(model)) if role else None
        return RolloutPointer.from_json(target.custom) if target else None

    def nudge_files(self, model: str, version: int | None) -> list[CarriedFile]:
        """What a device refreshing for `model` right now would fetch after the timestamp,
        as published bytes, in the order the nudge should carry them: the snapshot the
        timestamp names, the model's role it lists, `version`'s spec, and the patches
        into `version` (from the pointer's other version first, then newest base first).

        Not the timestamp: devices take it from the CDN only (it is what tells a
        replayed nudge from the repository's newest state). Exactly what devices
        are served, read back from the store: the timestamp names its snapshot,
        not a newer one a writer has yet to publish, so the set is one consistent
        state, and a device uses a carried file only when the fresh timestamp
        leads to that very file.
        """
        raw = self._store.bytes.get(f"{METADATA}timestamp.json")
        if raw is None:
            return []
        timestamp = Metadata[Timestamp].from_bytes(raw)
        assert isinstance(timestamp.signed, Timestamp)
        key = f"{METADATA}{timestamp.signed.snapshot_meta.version}.snapshot.json"
        snapshot_bytes = self._read(key)
        files = [CarriedFile(key, snapshot_bytes)]
        snapshot = Metadata[Snapshot].from_bytes(snapshot_bytes).signed
        assert isinstance(snapshot, Snapshot)
        listed = snapshot.meta
        if f"{model}.json" not in listed:
            return files
        role_key = f"{METADATA}{listed[f'{model}.json'].version}.{model}.json"
        role_bytes = self._read(role_key)
        files.append(CarriedFile(role_key, role_bytes))
        role = Metadata[Targets].from_bytes(role_bytes).signed
        assert isinstance(role, Targets)
        if version is None:
            return files
        spec = role.targets.get(spec_path(model, version))
        if spec is not None:
            spec_key = _target_key(spec)
            files.append(CarriedFile(spec_key, self._read(spec_key)))
        pointer_target = role.targets.get(pointer_path(model))
        pointer = RolloutPointer.from_json(pointer_target.custom) if pointer_target else None
        base_first = pointer.previous if pointer is not None else None
        patches = sorted(
            (
                (PatchInfo.from_json(t.custom).base_version, t)
                for path, t in role.targets.items()
                if path.startswith(f"{model}/{version}/from-")
            ),
            key=lambda pair: (pair[0] != base_first, -pair[0]),
        )
        for _, target in patches:
            patch_key = _target_key(target)
            files.append(CarriedFile(patch_key, self._read(patch_key)))
        # Not the top-level targets: it changes only when a model or a key is added, and
        # every device fetched it at its first refresh, so carrying it would add 0.9 KB
        # to every delivery to save a request almost none makes.
        return files

    def _read(self, key: str) -> bytes:
        data = self._store.bytes.get(key)
        if data is None:
            raise NotInitialised(f"{key} is named by the repository but is not in the store")
        return data

    # -- signing -------------------------------------------------------------------

    def _expiry(self, lifetime: timedelta) -> datetime:
        return self._clock() + lifetime

    def _sign(self, md: Metadata[Any], lifetime: timedelta) -> Metadata[Any]:
        md.signed.expires = self._expiry(lifetime)
        md.sign(self._online, append=False)
        return md

    def _new_top_level_targets(self) -> Metadata[Targets]:
        targets = Targets(version=1, expires=self._expiry(self.lifetimes.targets))
        targets.delegations = Delegations(keys={}, roles={})
        return Metadata(targets)

    def _transaction(self, change: Callable[[Metadata[Snapshot] | None], _Change]) -> None:
        """Apply `change` to the newest state and commit it; again on top of another
        writer's commit when one came first."""
        for _ in range(self._attempts):
            snapshot = self._snapshot()
            changed = change(snapshot)
            if changed is None:
                return
            try:
                self._commit(snapshot, changed)
                return
            except KeyExists:
                continue
        raise TrustError(
            f"gave up after {self._attempts} attempts: other writers committed each time"
        )

    def _commit(
        self, snapshot: Metadata[Snapshot] | None, changed: Mapping[str, Metadata[Targets]]
    ) -> None:
        """Write the changed targets roles as new versions, then a snapshot and a
        timestamp naming them: devices see all of it at once or none of it."""
        if snapshot is None:
            snap = Metadata(Snapshot(version=1, expires=self._expiry(self.lifetimes.snapshot)))
            snap.signed.meta.clear()
        else:
            snap = snapshot
            snap.signed.version += 1
        for role, md in changed.items():
            listed = snap.signed.meta.get(f"{role}.json")
            version = listed.version + 1 if listed else 1
            # A version some writer took (and may never list) is skipped, not reused.
            while self._store.has(role, version):
                version += 1
            md.signed.version = version
            lifetime = self.lifetimes.targets if role == Targets.type else self.lifetimes.model
            data = self._store.write(self._sign(md, lifetime), role, create_only=True)
            snap.signed.meta[f"{role}.json"] = _pinned(md.signed.version, data)
        snap_data = self._store.write(self._sign(snap, self.lifetimes.snapshot), create_only=True)
        self._publish_newest(snap.signed.version, snap_data)

    def _publish_newest(self, version: int, data: bytes) -> None:
        """Point the timestamp at snapshot `version`, or at a newer one another writer
        committed meanwhile, so the timestamp written last always names the newest."""
        while True:
            self._write_timestamp(_pinned(version, data))
            newest = self._newest_snapshot_version(version)
            if newest == version:
                return
            newer = self._store.bytes.get(f"{METADATA}{newest}.snapshot.json")
            assert newer is not None
            version, data = newest, newer

    def _write_timestamp(self, snapshot_meta: MetaFile) -> None:
        current = self._timestamp()
        version = current.signed.version + 1 if current else 1
        if current is not None and current.signed.snapshot_meta.version > snapshot_meta.version:
            # Another writer published a newer snapshot since this one read: never go back.
            snapshot_meta = current.signed.snapshot_meta
        timestamp = Timestamp(
            version=version,
            expires=self._expiry(self.lifetimes.timestamp),
            snapshot_meta=snapshot_meta,
        )
        self._store.write(self._sign(Metadata(timestamp), self.lifetimes.timestamp))

    def _roles_for(
        self, snapshot: Metadata[Snapshot] | None, model: str
    ) -> dict[str, Metadata[Targets]]:
        """The model's role, and top-level targets too when it needs a new delegation.
        The model's role is last, so `[*roles.values()][-1]` is it."""
        check_model_name(model)
        top = (
            self._role(snapshot, Targets.type)
            if snapshot is not None
            else self._new_top_level_targets()
        )
        if snapshot is not None and f"{model}.json" in snapshot.signed.meta:
            return {model: self._role(snapshot, model)}
        delegations = top.signed.delegations or Delegations(keys={}, roles={})
        top.signed.delegations = delegations
        key = self._online.public_key
        delegations.keys[key.keyid] = key
        assert delegations.roles is not None
        delegations.roles[model] = DelegatedRole(
            name=model,
            keyids=[key.keyid],
            threshold=1,
            terminating=True,
            paths=[f"{model}/*", f"{model}/*/*"],
        )
        role = Targets(version=1, expires=self._expiry(self.lifetimes.model))
        return {Targets.type: top, model: Metadata(role)}

    def _put_target(
        self, path: str, data: bytes, custom: Mapping[str, Any] | None = None
    ) -> TargetFile:
        target = _target(path, data, custom)
        self._store.bytes.put(_target_key(target), data)
        return target

    # -- what functions call ---------------------------------------------------------

    def publish(self, release: VersionRelease) -> dict[str, TargetFile]:
        """Upload a version's files and list them in the model's role.

        Files go up first, metadata last: a device never sees a target whose
        bytes are not yet on the CDN.
        """
        model, version = release.model, release.version
        targets: dict[str, TargetFile] = {}
        custom = dict(release.custom)
        if release.golden is not None:
            sha = _target(golden_path(model, "x"), release.golden).hashes["sha256"]
            golden = self._put_target(golden_path(model, sha), release.golden)
            targets[golden.path] = golden
            custom["golden"] = golden.path
        if release.spec is not None:
            spec = self._put_target(spec_path(model, version), release.spec)
            targets[spec.path] = spec
            custom["spec"] = spec.path
        full = self._put_target(model_path(model, version), release.model_bytes, custom)
        targets[full.path] = full
        for encoding, data in sorted(release.compressed.items()):
            packed = self._put_target(compressed_path(model, version, encoding), data)
            targets[packed.path] = packed
        for patch in release.patches:
            info = PatchInfo(
                codec=patch.codec,
                base_version=patch.base_version,
                base_sha256=patch.base_sha256,
                produces=model_path(model, version),
            )
            target = self._put_target(
                patch_path(model, patch.base_version, version, patch.codec),
                patch.data,
                info.to_json(),
            )
            targets[target.path] = target

        def change(snapshot: Metadata[Snapshot] | None) -> _Change:
            roles = self._roles_for(snapshot, model)
            role = roles[model].signed
            role.targets.update(targets)
            self._prune(model, role)
            return roles

        self._transaction(change)
        return targets

    def set_pointer(self, pointer: RolloutPointer) -> None:
        """Sign which version the model's rollout offers, to whom, and what the rest keep."""
        data = _pointer_bytes(pointer)
        target = self._put_target(pointer_path(pointer.model), data, pointer.to_json())

        def change(snapshot: Metadata[Snapshot] | None) -> _Change:
            roles = self._roles_for(snapshot, pointer.model)
            role = roles[pointer.model].signed
            for version in pointer.versions:
                if model_path(pointer.model, version) not in role.targets:
                    raise TrustError(
                        f"{pointer.model} v{version} is not published (or was pruned); "
                        "a pointer may only name a version devices can fetch"
                    )
            if role.targets.get(target.path) == target:
                return None  # signed already: a retried publish changes nothing
            role.targets[target.path] = target
            self._prune(pointer.model, role)
            return roles

        self._transaction(change)

    def withdraw(self, model: str, version: int, back_to: int | None) -> None:
        """An abort: the pointer goes back to `back_to` (None: no pointer), `version`'s
        targets leave the model's role, so no refreshing device is offered it again,
        and then their files leave the store, so nothing can fetch them either.

        Idempotent, as the schedule may finish an abort a failed call left half-done.
        Files go after the metadata, as publishing puts them before it: a device
        never sees a target whose bytes are gone.
        """
        back = (
            None
            if back_to is None
            else RolloutPointer(model, offered=back_to, previous=None, percent=100)
        )
        pointer_target = (
            None
            if back is None
            else self._put_target(pointer_path(model), _pointer_bytes(back), back.to_json())
        )

        gone: set[str] = set()

        def change(snapshot: Metadata[Snapshot] | None) -> _Change:
            if snapshot is None or f"{model}.json" not in snapshot.signed.meta:
                return None
            roles = self._roles_for(snapshot, model)
            role = roles[model].signed
            withdrawn = [p for p in role.targets if _version_of(p) == version]
            gone.update(_target_key(role.targets[p]) for p in withdrawn)
            current = role.targets.get(pointer_path(model))
            if not withdrawn and current == pointer_target:
                return None
            for path in withdrawn:
                del role.targets[path]
            if pointer_target is None:
                role.targets.pop(pointer_path(model), None)
            else:
                if model_path(model, back_to or 0) not in role.targets:
                    raise TrustError(f"{model} v{back_to} is not published; cannot go back to it")
                role.targets[pointer_target.path] = pointer_target
            return roles

        self._transaction(change)
        # Also what an earlier, half-done call withdrew from the role but left behind.
        gone.update(self._store.bytes.list(f"{TARGETS}{model}/{version}/"))
        for key in sorted(gone):
            self._store.bytes.delete(key)

    def _prune(self, model: str, role: Targets) -> None:
        """Keep the newest `keep_versions` versions and whatever the pointer names, and
        patches only into the newest and the offered version (nobody patches their way to
        an older one); golden inputs stay while a kept version refers to them.

        Every device downloads the model's role whole whenever it changes, so what it
        lists is paid for by the fleet on each publish and each pointer move."""
        pointer_target = role.targets.get(pointer_path(model))
        pointer = RolloutPointer.from_json(pointer_target.custom) if pointer_target else None
        pinned = set(pointer.versions) if pointer else set()
        versions = sorted({v for p in role.targets if (v := _version_of(p)) is not None})
        keep = set(versions[-self.keep_versions :]) | pinned
        patched = {versions[-1]} if versions else set()
        if pointer is not None:
            patched.add(pointer.offered)
        for path in list(role.targets):
            version = _version_of(path)
            if version is None:
                continue
            if version not in keep or (version not in patched and "/from-" in path):
                del role.targets[path]
        wanted = {
            t.custom.get("golden")
            for t in role.targets.values()
            if isinstance(t.custom, dict) and "golden" in t.custom
        }
        for path in [p for p in role.targets if "/golden/" in p and p not in wanted]:
            del role.targets[path]

    def resign_due(self) -> list[str]:
        """What the schedule calls: a new timestamp always; any other online role
        re-signed when it nears expiry or when it is signed by a key root no longer
        names (after an online-key rotation). Returns the roles re-signed."""
        resigned: list[str] = []

        def change(snapshot: Metadata[Snapshot] | None) -> _Change:
            resigned.clear()
            if snapshot is None:
                resigned.extend([Targets.type, Snapshot.type, Timestamp.type])
                return {Targets.type: self._new_top_level_targets()}
            keyid = self._online.public_key.keyid
            now = self._clock()
            due: dict[str, Metadata[Targets]] = {}
            rotated = False
            for name in [Targets.type, *self._delegated(snapshot)]:
                md = self._role(snapshot, name)
                lifetime = self.lifetimes.targets if name == Targets.type else self.lifetimes.model
                if keyid not in md.signatures:
                    rotated = True
                if keyid not in md.signatures or _due(md.signed, now, lifetime, self.lifetimes):
                    due[name] = md
            if rotated:
                top = due.setdefault(Targets.type, self._role(snapshot, Targets.type))
                self._delegate_to(top.signed, self._online.public_key)
            if (
                due
                or keyid not in snapshot.signatures
                or _due(snapshot.signed, now, self.lifetimes.snapshot, self.lifetimes)
            ):
                resigned.extend([*due, Snapshot.type, Timestamp.type])
                return due
            return None

        self._transaction(change)
        if not resigned:
            snapshot = self._snapshot()
            assert snapshot is not None
            data = self._store.bytes.get(f"{METADATA}{snapshot.signed.version}.snapshot.json")
            assert data is not None
            self._publish_newest(snapshot.signed.version, data)
            resigned.append(Timestamp.type)
        return resigned

    def _delegated(self, snapshot: Metadata[Snapshot]) -> list[str]:
        delegations = self._role(snapshot, Targets.type).signed.delegations
        return sorted(delegations.roles or {}) if delegations else []

    @staticmethod
    def _delegate_to(top: Targets, key: Key) -> None:
        """Every model role delegated to `key` alone: the retired online key signs nothing."""
        delegations = top.delegations
        if delegations is None or delegations.roles is None:
            return
        delegations.keys = {key.keyid: key}
        for role in delegations.roles.values():
            role.keyids = [key.keyid]


def _due(signed: Signed, now: datetime, lifetime: timedelta, lifetimes: Lifetimes) -> bool:
    return signed.expires - now < lifetime * lifetimes.renew_at


def _pointer_bytes(pointer: RolloutPointer) -> bytes:
    import json

    return json.dumps(pointer.to_json(), sort_keys=True, separators=(",", ":")).encode()


# -- the offline side: root ------------------------------------------------------------


@dataclass(frozen=True)
class RootSignatures:
    """How far a pending root is from trusted: it needs a threshold of the keys of
    the root before it AND of its own (a rotation proves both old and new agree)."""

    version: int
    old_signed: int
    old_needed: int
    new_signed: int
    new_needed: int

    @property
    def complete(self) -> bool:
        return self.old_signed >= self.old_needed and self.new_signed >= self.new_needed


class RootCeremony:
    """Root changes, made by people holding root key files; never by a function."""

    def __init__(
        self,
        store: ByteStore,
        *,
        lifetimes: Lifetimes | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = _Store(store)
        self.lifetimes = lifetimes or Lifetimes()
        self._clock = clock

    def init(self, root_keys: Sequence[Signer], threshold: int, online_key: Key) -> Metadata[Root]:
        """Root v1: the root keys with their threshold, the online key for every other
        role. Every root key present signs it, so devices can ship it as their anchor."""
        if self._store.root_versions():
            raise TrustError("the store already has a root; rotate keys instead of init")
        if not 1 <= threshold <= len(root_keys):
            raise TrustError(f"threshold {threshold} needs between 1 and {len(root_keys)} keys")
        root = Root(expires=self._clock() + self.lifetimes.root, consistent_snapshot=True)
        for signer in root_keys:
            root.add_key(signer.public_key, Root.type)
        root.roles[Root.type].threshold = threshold
        for role in ONLINE_ROLES:
            root.add_key(online_key, role)
        md = Metadata(root)
        for signer in root_keys:
            md.sign(signer, append=True)
        self._store.write(md)
        return md

    def trusted(self) -> Metadata[Root]:
        return self._store.root()

    def pending(self) -> Metadata[Root] | None:
        current = self._store.root().signed.version
        versions = [v for v in self._store.root_versions(PENDING) if v > current]
        return self._store.load(f"{PENDING}{versions[-1]}.root.json", Root) if versions else None

    def _propose(self, change: Callable[[Root], None]) -> Metadata[Root]:
        if self.pending() is not None:
            raise TrustError("a root change is already pending; sign it or let it be replaced")
        current = self._store.root()
        root = Root.from_dict(current.signed.to_dict())
        root.version += 1
        root.expires = self._clock() + self.lifetimes.root
        change(root)
        md = Metadata(root)
        self._store.bytes.put(f"{PENDING}{root.version}.root.json", md.to_bytes(_SERIALIZER))
        return md

    def replace_root_key(self, old_keyid: str, new_key: Key) -> Metadata[Root]:
        def change(root: Root) -> None:
            if old_keyid not in root.roles[Root.type].keyids:
                raise TrustError(f"{old_keyid} is not a root key")
            root.revoke_key(old_keyid, Root.type)
            root.add_key(new_key, Root.type)

        return self._propose(change)

    def replace_online_key(self, new_key: Key) -> Metadata[Root]:
        def change(root: Root) -> None:
            for role in ONLINE_ROLES:
                for keyid in list(root.roles[role].keyids):
                    root.revoke_key(keyid, role)
                root.add_key(new_key, role)

        return self._propose(change)

    def status(self, md: Metadata[Root]) -> RootSignatures:
        previous = self._store.load(f"{METADATA}{md.signed.version - 1}.root.json", Root)
        old = previous.signed.get_verification_result(Root.type, md.signed_bytes, md.signatures)
        new = md.signed.get_verification_result(Root.type, md.signed_bytes, md.signatures)
        return RootSignatures(
            version=md.signed.version,
            old_signed=len(old.signed),
            old_needed=previous.signed.roles[Root.type].threshold,
            new_signed=len(new.signed),
            new_needed=md.signed.roles[Root.type].threshold,
        )

    def sign_pending(self, signer: Signer) -> RootSignatures:
        """Add one key's signature; once old and new thresholds are met, the pending
        root is published as the trusted one (and the next device refresh walks to it)."""
        md = self.pending()
        if md is None:
            raise TrustError("no pending root to sign")
        keyid = signer.public_key.keyid
        previous = self._store.load(f"{METADATA}{md.signed.version - 1}.root.json", Root)
        if keyid not in previous.signed.roles[Root.type].keyids + md.signed.roles[Root.type].keyids:
            raise TrustError(
                f"key {keyid} is not a root key of v{md.signed.version - 1} or v{md.signed.version}"
            )
        md.sign(signer, append=True)
        self._store.bytes.put(f"{PENDING}{md.signed.version}.root.json", md.to_bytes(_SERIALIZER))
        status = self.status(md)
        if status.complete:
            try:
                previous.verify_delegate(Root.type, md)
                md.verify_delegate(Root.type, md)
            except UnsignedMetadataError as exc:
                raise TrustError(f"root v{md.signed.version} does not verify: {exc}") from exc
            self._store.write(md)
        return status

    def publish_signed_root(self, md: Metadata[Root]) -> None:
        """Publish a root that must already carry both thresholds (refused otherwise)."""
        previous = self._store.load(f"{METADATA}{md.signed.version - 1}.root.json", Root)
        try:
            previous.verify_delegate(Root.type, md)
            md.verify_delegate(Root.type, md)
        except UnsignedMetadataError as exc:
            raise TrustError(
                f"root v{md.signed.version} lacks the signatures to be trusted: {exc}"
            ) from exc
        self._store.write(md)


def _pinned(version: int, data: bytes) -> MetaFile:
    """A listing that names the file's exact bytes, not only its version and length.

    A device takes the timestamp from the CDN and may take everything it names from a
    nudge: with the hash, a carried snapshot or role must be the very file the fresh
    timestamp commits to, so metadata signed by keys a newer root revoked cannot stand
    in for it, whatever root the device still trusts (its root probe is skipped when
    nudged, `edge.trust.CdnFetcher`)."""
    return MetaFile(version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()})
