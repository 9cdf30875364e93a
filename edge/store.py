"""The device's model store: crash-safe, with the previous model kept for rollback.

    {state}/versions/{v}/model.tflite, manifest.json   complete versions only
    {state}/state.json                                 which version runs, which came before
    {state}/state.prev.json                            the state it replaced (both checksummed)
    {state}/staging/{sha256}.part                      downloads in progress (resumable)

A version directory is written under a temporary name, fsynced and renamed,
so it exists whole or not at all. Then state.json is replaced atomically.
Whatever instant the power goes, a restart finds state.json pointing at a
complete version: the old one or the new one, never a partial file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeloop.contract import (
    ContractError,
    EncodingError,
    Manifest,
    check_blob,
    format_time,
    parse_time,
)

log = logging.getLogger(__name__)

STATE = "state.json"
PREVIOUS_STATE = "state.prev.json"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass(frozen=True)
class Installed:
    version: int
    model: bytes
    manifest: Manifest
    manifest_raw: bytes


class StateDamaged(ValueError):
    """A state file that does not read back as what the store wrote (torn, edited, zeroed)."""


@dataclass
class StoreState:
    current: int | None = None
    previous: int | None = None
    # Versions that failed after a swap; not tried again while the pointer names them.
    refused: list[int] = field(default_factory=list)
    # The newest created_at of a manifest this device installed: proof that the
    # time is at least that, whatever a clock without a battery says at boot.
    clock_floor: datetime | None = None
    # The version being loaded and checked in this process right now. Found set at
    # boot, it means that version killed the agent: it is refused, not retried.
    attempting: int | None = None

    def _body(self) -> dict[str, Any]:
        floor = format_time(self.clock_floor) if self.clock_floor is not None else None
        return {
            "current": self.current,
            "previous": self.previous,
            "refused": self.refused,
            "clock_floor": floor,
            "attempting": self.attempting,
        }

    def to_bytes(self) -> bytes:
        body = self._body()
        # The checksum tells a file the store wrote from one the disk or a hand changed.
        return json.dumps({**body, "sha256": _digest(body)}, sort_keys=True).encode()

    @staticmethod
    def from_bytes(raw: bytes) -> StoreState:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise StateDamaged(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise StateDamaged("not a JSON object")
        digest = doc.pop("sha256", None)
        # A state file from before checksums has none; it is read as it always was.
        if digest is not None and digest != _digest(doc):
            raise StateDamaged("its checksum does not match its contents")
        try:
            floor = doc.get("clock_floor")
            refused = doc.get("refused", [])
            if not isinstance(refused, list):
                raise StateDamaged("refused is not a list")
            return StoreState(
                _version(doc.get("current")),
                _version(doc.get("previous")),
                [v for v in (_version(r) for r in refused) if v is not None],
                parse_time(floor) if isinstance(floor, str) else None,
                _version(doc.get("attempting")),
            )
        except EncodingError as exc:
            raise StateDamaged(f"clock_floor: {exc}") from exc

    def but(self, **changes: Any) -> StoreState:
        return replace(self, **changes)


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _version(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StateDamaged(f"{value!r:.40} is not a version")
    return value


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "versions"
        self.staging = root / "staging"
        for d in (self.root, self.versions, self.staging):
            d.mkdir(parents=True, exist_ok=True)
        self.state = self._read_state()
        self._refuse_what_killed_the_last_run()

    def _read_state(self) -> StoreState:
        """state.json, else the copy of the state it replaced, else what the disk proves.

        Every write keeps the state it replaces as state.prev.json, both with a
        checksum. Neither readable (a torn disk, an edit), the store fails safe
        rather than empty: the clock floor is at least the newest version it
        holds was created, the complete versions on disk are kept, and the loss
        of the refusals is logged, never silent.
        """
        damaged: list[str] = []
        for name in (STATE, PREVIOUS_STATE):
            path = self.root / name
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                damaged.append(f"{name}: {exc.strerror}")
                continue
            try:
                state = StoreState.from_bytes(raw)
            except StateDamaged as exc:
                damaged.append(f"{name}: {exc}")
                continue
            if damaged:
                log.error(
                    "event=state_damaged fell_back_to=%s damaged=%r; the last change before "
                    "the damage (a refusal, a raised clock floor) may be lost",
                    name,
                    "; ".join(damaged),
                )
                return state.but(clock_floor=self._proven_floor(state.clock_floor))
            return state
        if not damaged:
            return StoreState()  # a new device
        held = sorted(self._held_versions(), reverse=True)
        state = StoreState(
            current=held[0] if held else None,
            previous=held[1] if len(held) > 1 else None,
            clock_floor=self._proven_floor(None),
        )
        log.error(
            "event=state_lost damaged=%r; running v%s from what the disk holds, clock floor %s; "
            "the versions this device refused before are forgotten and may be tried again",
            "; ".join(damaged),
            state.current,
            format_time(state.clock_floor) if state.clock_floor else "none",
        )
        return state

    def _held_versions(self) -> list[int]:
        return [int(d.name) for d in self.versions.iterdir() if d.name.isdigit()]

    def _proven_floor(self, floor: datetime | None) -> datetime | None:
        """At least `floor`, and at least the creation of every version the disk holds."""
        for version in self._held_versions():
            installed = self._load(version)
            if installed is not None and (floor is None or installed.manifest.created > floor):
                floor = installed.manifest.created
        return floor

    def _refuse_what_killed_the_last_run(self) -> None:
        crashed = self.state.attempting
        if crashed is None:
            return
        if crashed == self.state.current:
            self.rollback(crashed)  # it crashed at boot: back to the one before
        else:
            self.refuse(crashed)
        self._write_state(self.state.but(attempting=None))

    def attempt(self, version: int) -> None:
        """Persist that `version` is about to run in this process for the first time."""
        self._write_state(self.state.but(attempting=version))

    def attempt_over(self) -> None:
        """The attempted version loaded and ran (or was refused) without killing the agent."""
        if self.state.attempting is not None:
            self._write_state(self.state.but(attempting=None))

    def _write_state(self, state: StoreState) -> None:
        # The state being replaced is kept first: whatever happens to state.json
        # next, a verified copy one change older remains.
        write_atomic(self.root / PREVIOUS_STATE, self.state.to_bytes())
        write_atomic(self.root / STATE, state.to_bytes())
        self.state = state

    def _load(self, version: int | None) -> Installed | None:
        if version is None:
            return None
        folder = self.versions / str(version)
        try:
            raw = (folder / "manifest.json").read_bytes()
            manifest = Manifest.from_json(json.loads(raw))
            model = (folder / "model.tflite").read_bytes()
            check_blob(
                model,
                size=manifest.artifact.size,
                sha256=manifest.artifact.sha256,
                what=f"stored model v{version}",
            )
        except (OSError, ValueError, ContractError):
            return None
        return Installed(version, model, manifest, raw)

    def current(self) -> Installed | None:
        """The model to run: the current version if intact, else the previous one."""
        installed = self._load(self.state.current)
        if installed is None and self.state.previous is not None:
            installed = self._load(self.state.previous)
            if installed is not None:
                self._write_state(self.state.but(current=installed.version, previous=None))
        return installed

    def previous(self) -> Installed | None:
        return self._load(self.state.previous)

    def stage(self, version: int, model: bytes, manifest_raw: bytes) -> None:
        """Write a complete version directory. Fails (disk full) before any swap."""
        final = self.versions / str(version)
        if final.exists():
            shutil.rmtree(final)
        tmp = self.versions / f".{version}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            for name, data in (("model.tflite", model), ("manifest.json", manifest_raw)):
                with open(tmp / name, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            fsync_dir(tmp)
            os.replace(tmp, final)
            fsync_dir(self.versions)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def commit(self, version: int, trusted_created_at: datetime | None = None) -> None:
        """Make a staged version current; the one it replaces becomes previous.

        `trusted_created_at`, the manifest's creation time, raises the clock's floor.
        """
        floor = self.state.clock_floor
        if trusted_created_at is not None and (floor is None or trusted_created_at > floor):
            floor = trusted_created_at
        # The same number with other bytes (a new cloud's history) replaces it in place.
        previous = self.state.current if self.state.current != version else self.state.previous
        self._write_state(self.state.but(current=version, previous=previous, clock_floor=floor))
        self.prune()

    def rollback(self, refused_version: int) -> None:
        """Go back to the previous version and never retry the refused one."""
        refused = sorted({*self.state.refused, refused_version})[-32:]
        self._write_state(
            self.state.but(current=self.state.previous, previous=None, refused=refused)
        )
        self.prune()

    def refuse(self, version: int) -> None:
        refused = sorted({*self.state.refused, version})[-32:]
        self._write_state(self.state.but(refused=refused))

    def prune(self) -> None:
        keep = {str(v) for v in (self.state.current, self.state.previous) if v is not None}
        for entry in self.versions.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    def clear_staging(self) -> None:
        for entry in self.staging.iterdir():
            entry.unlink(missing_ok=True)
