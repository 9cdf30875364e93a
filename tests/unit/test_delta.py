"""Patch codecs round-trip exactly, and a patch for the wrong base never gets applied."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgeloop.delta as delta
from edgeloop.contract import HashMismatch, PatchBaseMismatch, PatchCorrupt, sha256_hex
from edgeloop.delta import LayoutChanged, PatchSpec, apply_checked, apply_patch, make_patch
from edgeloop.factory.deltas import plan_deltas

CODECS = ("bsdiff4", "zstd", "wdiff")


@pytest.mark.parametrize("codec", ["bsdiff4", "zstd"])
@settings(max_examples=40, deadline=None)
@given(old=st.binary(max_size=4096), new=st.binary(max_size=4096))
def test_patches_round_trip_byte_exactly(codec: str, old: bytes, new: bytes) -> None:
    assert apply_patch(old, make_patch(old, new, codec), codec, max_size=len(new) + 1) == new


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=st.integers(0, 4096))
def test_wdiff_round_trips_models_of_equal_size(data: st.DataObject, size: int) -> None:
    old = data.draw(st.binary(min_size=size, max_size=size))
    new = data.draw(st.binary(min_size=size, max_size=size))
    assert apply_patch(old, make_patch(old, new, "wdiff"), "wdiff", max_size=size) == new


def test_wdiff_needs_the_same_layout() -> None:
    with pytest.raises(LayoutChanged, match="bsdiff4 or zstd"):
        make_patch(b"a" * 100, b"a" * 104, "wdiff")
    patch = make_patch(b"a" * 100, b"b" * 100, "wdiff")
    with pytest.raises(PatchCorrupt, match="made for another model"):
        apply_patch(b"a" * 104, patch, "wdiff")


def test_wdiff_beats_byte_codecs_on_nudged_float_weights() -> None:
    """The case it exists for: every float32 weight moved a little by training."""
    rng = np.random.default_rng(0)
    header = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    weights = rng.normal(0, 0.3, 20_000).astype(np.float32)
    nudged = (weights * (1 + rng.normal(0, 0.01, weights.size))).astype(np.float32)
    old, new = header + weights.tobytes(), header + nudged.tobytes()
    sizes = {codec: len(make_patch(old, new, codec)) for codec in CODECS}
    assert sizes["wdiff"] < 0.85 * min(sizes["bsdiff4"], sizes["zstd"]), sizes


def test_wdiff_packs_int8_steps_close_to_their_entropy() -> None:
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, 50_000).astype(np.int8)
    stepped = np.clip(q + rng.choice([-1, 0, 0, 0, 1], q.size), -127, 127).astype(np.int8)
    old, new = q.tobytes(), stepped.tobytes()
    patch = make_patch(old, new, "wdiff")
    # The steps carry 1.37 bits each (-1/0/+1 at 20/60/20%): no codec can go below that.
    entropy_bytes = q.size * -(0.6 * np.log2(0.6) + 0.4 * np.log2(0.2)) / 8
    assert len(patch) < 1.1 * entropy_bytes
    assert len(patch) < min(len(make_patch(old, new, c)) for c in ("bsdiff4", "zstd"))


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


@pytest.mark.parametrize("codec", ["zstd", "wdiff", "full"])
def test_a_frame_declaring_more_than_the_cap_is_refused_before_it_is_inflated(codec: str) -> None:
    """zstd allocates a frame's declared size up front, whatever max_output_size says."""
    huge = b"\0" * 20_000_000
    if codec == "full":
        with pytest.raises(PatchCorrupt, match="declares 20000000 bytes"):
            delta.decompress_full(delta.compress_full(huge), max_size=1000)
        return
    old = b"\0" * 20_000_000 if codec == "wdiff" else b"x"
    new = b"\1" * 20_000_000
    with pytest.raises(PatchCorrupt, match=r"declares|made for another model"):
        apply_patch(
            old if codec == "zstd" else b"\0" * 1000, make_patch(old, new, codec), codec, 1000
        )


def test_planner_leaves_bsdiff_out_for_large_models(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeloop.factory.deltas as deltas

    tried: list[str] = []
    real = make_patch

    def spy(old: bytes, new: bytes, codec: str) -> bytes:
        tried.append(codec)
        return real(old, new, codec)

    monkeypatch.setattr(deltas, "make_patch", spy)
    monkeypatch.setattr(deltas, "BSDIFF_MAX_BYTES", 50_000)
    old = os.urandom(60_000)
    plan = plan_deltas(old[:100] + b"x" + old[101:], {1: old})
    assert "bsdiff4" not in tried
    assert {"zstd", "wdiff"} <= set(tried)
    assert plan.patches
    assert plan.shipped_bytes(1) == plan.patches[0].size
    assert plan.shipped_bytes(7) == plan.compressed_full_size
