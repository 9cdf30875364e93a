"""Binary patches between model versions, applied the same way on both sides.

Two codecs:
- `bsdiff4`: the BSDIFF40 format, which the classic `bspatch` tool applies too.
- `zstd`: zstd "patch-from", the old model as a raw-content dictionary with a
  window large enough to reach all of it. Much faster to make than bsdiff on
  large models, and usually as small.
"""

from __future__ import annotations

from dataclasses import dataclass

import bsdiff4
import zstandard

from edgeloop.contract.errors import PatchBaseMismatch, PatchCorrupt
from edgeloop.contract.manifest import CODECS, check_blob, sha256_hex

ZSTD_LEVEL = 19
# Models are small; refusing anything larger bounds decompression memory on a device.
MAX_MODEL_BYTES = 256 * 1024 * 1024


def _window_log(*sizes: int) -> int:
    needed = max(1, sum(sizes))
    return max(zstandard.WINDOWLOG_MIN, min(zstandard.WINDOWLOG_MAX, needed.bit_length()))


def compress_full(data: bytes) -> bytes:
    """The full artifact as zstd, the yardstick every patch must beat."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(data)


def decompress_full(data: bytes, max_size: int = MAX_MODEL_BYTES) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=max_size)
    except zstandard.ZstdError as exc:
        raise PatchCorrupt(f"compressed artifact cannot be decoded: {exc}") from exc


def make_patch(old: bytes, new: bytes, codec: str) -> bytes:
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
            out = decompressor.decompress(patch, max_output_size=max_size)
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
