"""Patch codecs round-trip exactly, and a patch for the wrong base never gets applied."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgeloop.delta as delta
from edgeloop.contract import HashMismatch, sha256_hex
from edgeloop.contract.errors import PatchBaseMismatch, PatchCorrupt
from edgeloop.delta import PatchSpec, apply_checked, apply_patch, make_patch
from edgeloop.factory.deltas import plan_deltas

CODECS = ("bsdiff4", "zstd")


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=40, deadline=None)
@given(old=st.binary(max_size=4096), new=st.binary(max_size=4096))
def test_patches_round_trip_byte_exactly(codec: str, old: bytes, new: bytes) -> None:
    assert apply_patch(old, make_patch(old, new, codec), codec, max_size=len(new) + 1) == new


@pytest.mark.parametrize("codec", CODECS)
def test_a_small_edit_makes_a_small_patch(codec: str) -> None:
    old = os.urandom(200_000)
    new = old[:1000] + b"edited" + old[1006:150_000] + os.urandom(64) + old[150_064:]
    patch = make_patch(old, new, codec)
    assert len(patch) < 2_000
    assert apply_patch(old, patch, codec) == new


def test_classic_bspatch_applies_our_bsdiff4_patches(tmp_path: Path) -> None:
    bspatch = shutil.which("bspatch")
    assert bspatch, "bspatch is missing: `make system-deps` installs Debian's bsdiff package"
    old = os.urandom(50_000)
    new = old[:20_000] + os.urandom(100) + old[20_000:]
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "p").write_bytes(make_patch(old, new, "bsdiff4"))
    subprocess.run(
        [bspatch, str(tmp_path / "old"), str(tmp_path / "new"), str(tmp_path / "p")], check=True
    )
    assert (tmp_path / "new").read_bytes() == new


@pytest.mark.parametrize("codec", CODECS)
def test_a_patch_for_the_wrong_base_is_refused_before_it_is_applied(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, other, new = b"A" * 1000, b"B" * 1000, b"A" * 990 + b"C" * 10
    patch = make_patch(old, new, codec)

    def must_not_run(*_: object, **__: object) -> bytes:
        raise AssertionError("the patch was applied to the wrong base")

    monkeypatch.setattr(delta, "apply_patch", must_not_run)
    with pytest.raises(PatchBaseMismatch, match="fetch the full artifact"):
        apply_checked(other, patch, PatchSpec(codec, sha256_hex(old), sha256_hex(new), len(new)))


@pytest.mark.parametrize("codec", CODECS)
def test_a_patch_that_makes_the_wrong_bytes_is_refused(codec: str) -> None:
    old, new, evil = b"A" * 1000, b"A" * 990 + b"C" * 10, b"A" * 990 + b"D" * 10
    spec = PatchSpec(codec, sha256_hex(old), sha256_hex(new), len(new))
    with pytest.raises(HashMismatch):
        apply_checked(old, make_patch(old, evil, codec), spec)


@pytest.mark.parametrize("codec", CODECS)
def test_a_corrupt_patch_raises_patch_corrupt(codec: str) -> None:
    old = os.urandom(1000)
    patch = bytearray(make_patch(old, old[:500] + os.urandom(500), codec))
    patch[len(patch) // 2 :] = os.urandom(len(patch) - len(patch) // 2)
    with pytest.raises((PatchCorrupt, HashMismatch)):
        apply_checked(old, bytes(patch), PatchSpec(codec, sha256_hex(old), "0" * 64, 1000))
    with pytest.raises(PatchCorrupt):
        apply_patch(old, b"garbage", codec)


def test_a_patch_cannot_expand_past_the_declared_size() -> None:
    old, new = b"x", b"y" * 100_000
    with pytest.raises(PatchCorrupt):
        apply_patch(old, make_patch(old, new, "zstd"), "zstd", max_size=1000)


def test_unknown_codec_is_refused() -> None:
    with pytest.raises(PatchCorrupt, match="unknown patch codec"):
        apply_patch(b"", b"", "xdelta")
    with pytest.raises(ValueError, match="unknown patch codec"):
        make_patch(b"", b"", "xdelta")


def test_planner_keeps_the_smallest_patch_per_base_and_drops_useless_ones() -> None:
    v1 = os.urandom(100_000)
    v2 = v1[:50_000] + os.urandom(200) + v1[50_200:]
    v3 = v2[:70_000] + os.urandom(200) + v2[70_200:]
    unrelated = os.urandom(100_000)
    plan = plan_deltas(v3, {1: v1, 2: v2, 9: unrelated, 3: v3})
    assert [p.from_version for p in plan.patches] == [1, 2]
    for p in plan.patches:
        assert p.size < plan.compressed_full_size
        sizes = {c: len(make_patch({1: v1, 2: v2}[p.from_version], v3, c)) for c in CODECS}
        assert p.size == min(sizes.values())
    dropped = dict(plan.dropped)
    assert "not smaller than the compressed full artifact" in dropped[9]
    assert dropped[3] == "identical to the new model"
