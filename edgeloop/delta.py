"""Binary patches between model versions, applied the same way on both sides.

Three codecs:
- `bsdiff4`: the BSDIFF40 format, which the classic `bspatch` tool applies too.
- `zstd`: zstd "patch-from", the old model as a raw-content dictionary with a
  window large enough to reach all of it. Much faster to make than bsdiff on
  large models, and usually as small.
- `wdiff`: for two models with the same tensor layout (a warm-started retrain
  exported by edgeloop keeps every tensor at the same offset). Each element is
  XORed with, or subtracted from, the old one at its offset; the result's byte
  planes are shuffled (all first bytes, then all second bytes, ...) and zstd
  compresses that. A float32 weight nudged by training keeps its sign,
  exponent and top mantissa bits, so its XOR starts with zero bytes; an int8
  weight quantized on the old scale moves by -1, 0 or +1. Shuffling puts those
  zeros side by side, where bsdiff and zstd see only changed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import bsdiff4
import numpy as np
import zstandard

from edgeloop.contract import CODECS, PatchBaseMismatch, PatchCorrupt, check_blob, sha256_hex

ZSTD_LEVEL = 19
# Models are small; refusing anything larger bounds decompression memory on a device.
MAX_MODEL_BYTES = 256 * 1024 * 1024


def _window_log(*sizes: int) -> int:
    needed = max(1, sum(sizes))
    return max(zstandard.WINDOWLOG_MIN, min(zstandard.WINDOWLOG_MAX, needed.bit_length()))


def compress_full(data: bytes) -> bytes:
    """The full artifact as zstd, the yardstick every patch must beat."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(data)


def _zstd_decompress(
    data: bytes, max_size: int, what: str, decompressor: zstandard.ZstdDecompressor | None = None
) -> bytes:
    """Decompress one zstd frame of at most `max_size` bytes.

    `max_output_size` only bounds frames that do not declare their size; a
    frame that declares one gets that much memory up front. So the declared
    size is checked first: a forged header must not make a device allocate
    gigabytes.
    """
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise PatchCorrupt(f"{what} is not a zstd frame: {exc}") from exc
    if declared > max_size:
        raise PatchCorrupt(f"{what} declares {declared} bytes, over the {max_size}-byte cap")
    try:
        out: bytes = (decompressor or zstandard.ZstdDecompressor()).decompress(
            data, max_output_size=max_size
        )
    except zstandard.ZstdError as exc:
        raise PatchCorrupt(f"{what} cannot be decoded: {exc}") from exc
    if len(out) > max_size:
        raise PatchCorrupt(f"{what} produces {len(out)} bytes, over the {max_size}-byte cap")
    return out


def decompress_full(data: bytes, max_size: int = MAX_MODEL_BYTES) -> bytes:
    return _zstd_decompress(data, max_size, "compressed artifact")


# wdiff header: magic, operation, element width, size of the result (= size of the base).
_WDIFF_MAGIC = b"ELWD"
_WDIFF_HEADER = 10
_WDIFF_OPS = {"xor": 0, "sub": 1}
_WDIFF_WIDTHS = (1, 2, 4)
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32}
# Tried in turn; the smallest wins. xor/4 suits float32 tensors, sub/1 int8 ones.
WDIFF_VARIANTS = (("xor", 4), ("sub", 1), ("sub", 4))


class LayoutChanged(ValueError):
    """wdiff needs the old and new model to be the same size; use bsdiff4 or zstd."""


def _elements(data: bytes, width: int) -> np.ndarray:
    padded = data + bytes(-len(data) % width)
    return np.frombuffer(padded, dtype=np.dtype(_UINT[width]).newbyteorder("<"))


def _wdiff_planes(old: bytes, new: bytes, op: str, width: int) -> bytes:
    a, b = _elements(old, width), _elements(new, width)
    diff = (b ^ a) if op == "xor" else (b - a)
    planes: bytes = diff.view(np.uint8).reshape(-1, width).T.tobytes()
    return planes


def _wdiff(old: bytes, new: bytes) -> bytes:
    if len(old) != len(new):
        raise LayoutChanged(
            f"wdiff needs models of equal size (old {len(old)} B, new {len(new)} B): "
            "the tensor layout changed; ship a bsdiff4 or zstd patch instead"
        )
    candidates = {v: _wdiff_planes(old, new, *v) for v in WDIFF_VARIANTS}
    # Pick the variant with a fast zstd level, then compress only the winner at
    # the high one: trying every variant at level 19 triples the cost on large models.
    quick = zstandard.ZstdCompressor(level=3)
    (op, width), planes = min(candidates.items(), key=lambda kv: len(quick.compress(kv[1])))
    header = _WDIFF_MAGIC + bytes([_WDIFF_OPS[op], width]) + len(new).to_bytes(4, "little")
    level = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
    return header + level.compress(planes)


def _wdiff_apply(old: bytes, patch: bytes, max_size: int) -> bytes:
    if len(patch) < _WDIFF_HEADER or patch[:4] != _WDIFF_MAGIC:
        raise PatchCorrupt("not a wdiff patch (bad magic or a header shorter than 10 bytes)")
    ops = {v: k for k, v in _WDIFF_OPS.items()}
    op, width = ops.get(patch[4]), patch[5]
    size = int.from_bytes(patch[6:10], "little")
    if op is None or width not in _WDIFF_WIDTHS:
        raise PatchCorrupt(f"wdiff patch names operation {patch[4]} and width {width}; unknown")
    if size != len(old) or size > max_size:
        raise PatchCorrupt(
            f"wdiff patch makes {size} B from a {len(old)} B base (cap {max_size} B); "
            "it was made for another model"
        )
    padded = size + (-size % width)
    planes = _zstd_decompress(patch[_WDIFF_HEADER:], padded, "wdiff patch")
    if len(planes) != padded:
        raise PatchCorrupt(f"wdiff patch holds {len(planes)} B of differences, not {padded}")
    element = np.dtype(_UINT[width]).newbyteorder("<")
    diff = np.frombuffer(
        np.frombuffer(planes, dtype=np.uint8).reshape(width, -1).T.tobytes(), dtype=element
    )
    base = _elements(old, width)
    out = (base ^ diff) if op == "xor" else (base + diff)
    return out.tobytes()[:size]


def make_patch(old: bytes, new: bytes, codec: str) -> bytes:
    """The patch from `old` to `new`; wdiff raises LayoutChanged when the sizes differ."""
    if codec == "wdiff":
        return _wdiff(old, new)
    if codec == "bsdiff4":
        return bytes(bsdiff4.diff(old, new))
    if codec == "zstd":
        params = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL,
            source_size=len(new),
            window_log=_window_log(len(old), len(new)),
            enable_ldm=True,
            write_content_size=True,
        )
        dictionary = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        return zstandard.ZstdCompressor(compression_params=params, dict_data=dictionary).compress(
            new
        )
    raise ValueError(f"unknown patch codec {codec!r}; use one of {', '.join(CODECS)}")


def _bsdiff_new_size(patch: bytes) -> int:
    """The result size a BSDIFF40 header declares (sign-magnitude little-endian)."""
    if len(patch) < 32 or patch[:8] != b"BSDIFF40":
        raise PatchCorrupt("not a BSDIFF40 patch (bad magic or a header shorter than 32 bytes)")
    raw = bytearray(patch[24:32])
    negative = bool(raw[7] & 0x80)
    raw[7] &= 0x7F
    size = int.from_bytes(raw, "little")
    return -size if negative else size


def apply_patch(old: bytes, patch: bytes, codec: str, max_size: int = MAX_MODEL_BYTES) -> bytes:
    """Apply a patch; corrupt input raises PatchCorrupt, never anything else."""
    try:
        if codec == "bsdiff4":
            # bsdiff4 allocates the declared size up front: a forged header must
            # not make a device allocate gigabytes.
            declared = _bsdiff_new_size(patch)
            if not 0 <= declared <= max_size:
                raise PatchCorrupt(
                    f"bsdiff4 patch declares {declared} bytes, over the {max_size} cap"
                )
            out = bytes(bsdiff4.patch(old, patch))
        elif codec == "zstd":
            dictionary = zstandard.ZstdCompressionDict(
                old, dict_type=zstandard.DICT_TYPE_RAWCONTENT
            )
            decompressor = zstandard.ZstdDecompressor(
                dict_data=dictionary, max_window_size=1 << _window_log(len(old), max_size)
            )
            out = _zstd_decompress(patch, max_size, "zstd patch", decompressor)
        elif codec == "wdiff":
            out = _wdiff_apply(old, patch, max_size)
        else:
            raise PatchCorrupt(
                f"unknown patch codec {codec!r}; this agent knows {', '.join(CODECS)}"
            )
    # bsdiff4 reports a corrupt bzip2 stream as OSError or EOFError.
    except (ValueError, OSError, EOFError, zstandard.ZstdError, MemoryError, OverflowError) as exc:
        raise PatchCorrupt(f"{codec} patch cannot be applied: {exc}") from exc
    if len(out) > max_size:
        raise PatchCorrupt(f"{codec} patch produces {len(out)} bytes, over the {max_size} cap")
    return out


@dataclass(frozen=True)
class PatchSpec:
    """What must hold before and after applying one patch."""

    codec: str
    from_sha256: str
    to_sha256: str
    to_size: int


def apply_checked(old: bytes, patch: bytes, spec: PatchSpec) -> bytes:
    """Refuse a patch for another base before touching it, and check what it makes."""
    base = sha256_hex(old)
    if base != spec.from_sha256:
        raise PatchBaseMismatch(
            f"patch is for base {spec.from_sha256[:16]}… but the installed model is "
            f"{base[:16]}…; fetch the full artifact instead"
        )
    out = apply_patch(old, patch, spec.codec, max_size=spec.to_size)
    check_blob(out, size=spec.to_size, sha256=spec.to_sha256, what=f"{spec.codec}-patched model")
    return out
