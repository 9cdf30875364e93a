"""The device's model store: crash-safe, with the previous model kept for rollback.

    {state}/versions/{v}/model.tflite, manifest.json   complete versions only
    {state}/state.json                                 which version runs, which came before
    {state}/staging/{sha256}.part                      downloads in progress (resumable)

A version directory is written under a temporary name, fsynced and renamed,
so it exists whole or not at all. Then state.json is replaced atomically.
Whatever instant the power goes, a restart finds state.json pointing at a
complete version: the old one or the new one, never a partial file.
"""

from __future__ import annotations

import json
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

    def to_bytes(self) -> bytes:
        floor = format_time(self.clock_floor) if self.clock_floor is not None else None
        return json.dumps(
            {
                "current": self.current,
                "previous": self.previous,
                "refused": self.refused,
                "clock_floor": floor,
                "attempting": self.attempting,
            },
            sort_keys=True,
        ).encode()

    def but(self, **changes: Any) -> StoreState:
        return replace(self, **changes)


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
        path = self.root / "state.json"
        if not path.exists():
            return StoreState()
        try:
            doc: dict[str, Any] = json.loads(path.read_bytes())
            floor = doc.get("clock_floor")
            return StoreState(
                doc.get("current"),
                doc.get("previous"),
                list(doc.get("refused", [])),
                parse_time(floor) if floor else None,
                doc.get("attempting"),
            )
        except (ValueError, TypeError, EncodingError):
            # state.json is only ever replaced whole; unreadable means the disk
            # lost it. Start without a model rather than guess.
            return StoreState()

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
        write_atomic(self.root / "state.json", state.to_bytes())
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
        self._write_state(
            self.state.but(current=version, previous=self.state.current, clock_floor=floor)
        )
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
