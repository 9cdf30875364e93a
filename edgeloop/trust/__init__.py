"""The fleet's TUF repository, cloud side: the store, the keys, the signing.

A layer beside edgeloop.factory: it imports only edgeloop.contract and the
libraries (python-tuf, securesystemslib), and the device never imports it.
"""

from edgeloop.trust.keys import KeyFileError, KmsSigner, generate_root_key, load_root_key
from edgeloop.trust.repository import (
    ROOT_METADATA_KEYS,
    Lifetimes,
    NotInitialised,
    OnlineKeyNotTrusted,
    PatchRelease,
    RootCeremony,
    RootSignatures,
    TrustError,
    TrustRepository,
    VersionRelease,
)
from edgeloop.trust.store import ByteStore, DirectoryStore, S3Store

__all__ = [
    "ROOT_METADATA_KEYS",
    "ByteStore",
    "DirectoryStore",
    "KeyFileError",
    "KmsSigner",
    "Lifetimes",
    "NotInitialised",
    "OnlineKeyNotTrusted",
    "PatchRelease",
    "RootCeremony",
    "RootSignatures",
    "S3Store",
    "TrustError",
    "TrustRepository",
    "VersionRelease",
    "generate_root_key",
    "load_root_key",
]
