"""Typed refusals of the wire contract.

Every refusal says what was wrong and what to do about it, because the person
reading it is usually looking at a device log far from the cloud side.
"""

from __future__ import annotations


class ContractError(Exception):
    """Base of every refusal raised while checking a manifest or an artifact."""


class MalformedManifest(ContractError):
    """The bytes are not a manifest: bad JSON, a missing field, a wrong type."""


class InputSpecMismatch(ContractError):
    """The model expects input this device does not produce."""


class SizeMismatch(ContractError):
    """An artifact or patch is not the size the manifest declares."""


class HashMismatch(ContractError):
    """An artifact or patch does not have the SHA-256 the manifest declares."""


class PatchBaseMismatch(ContractError):
    """A patch was made for a different base model than the one installed."""


class PatchCorrupt(ContractError):
    """A patch cannot be decoded with its codec."""
