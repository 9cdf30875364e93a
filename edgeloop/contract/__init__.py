"""The wire contract shared by the cloud functions and the device agent.

Split by reason to change:
- `encoding`: canonical JSON, SHA-256, UTC times, time-ordered ids;
- `reader`: the one strict reader every message and config goes through;
- message types, each parsed beside where it is serialised: `manifest`,
  `status`, `uploads`, and the MQTT `topics`;
- `acceptance`: what a device checks of a manifest and the bytes it fetches;
- `verify`: the device's signature check against its pinned keys;
- `signers`: the cloud's signers (local PEM, AWS KMS), never imported by a
  device and so not re-exported here.

No scikit-learn, boto3 or pydantic import anywhere in this package.
"""

from edgeloop.contract.acceptance import check_blob, check_fresh, check_input, check_newer
from edgeloop.contract.encoding import (
    EncodingError,
    canonical_json,
    format_time,
    parse_time,
    sha256_hex,
    time_ordered_id,
    utc_now,
)
from edgeloop.contract.errors import (
    ContractError,
    HashMismatch,
    InputSpecMismatch,
    MalformedManifest,
    ManifestExpired,
    PatchBaseMismatch,
    PatchCorrupt,
    SignatureInvalid,
    SizeMismatch,
    UnknownKey,
    VersionNotNewer,
)
from edgeloop.contract.events import AlarmEvent, AlarmKind
from edgeloop.contract.manifest import (
    CODECS,
    FULL_ENCODINGS,
    ArtifactRef,
    CompressedRef,
    DeltaRef,
    HealthCheck,
    Manifest,
    Signature,
    TensorSpec,
    parse_manifest,
)
from edgeloop.contract.reader import Fields
from edgeloop.contract.stages import StagePlan, band_of, basis_points
from edgeloop.contract.status import Health, StatusRejected, StatusReport, Step
from edgeloop.contract.topics import ThingTopics, announcement, thing_of
from edgeloop.contract.uploads import (
    UploadAnswer,
    UploadGrant,
    UploadMessageInvalid,
    UploadRefusal,
    UploadRequest,
    new_batch_id,
    parse_upload_answer,
)
from edgeloop.contract.verify import (
    ALGORITHM,
    TrustedKeys,
    accept_manifest,
    key_id_of,
    load_public_key,
    public_key_pem,
)

__all__ = [
    "ALGORITHM",
    "CODECS",
    "FULL_ENCODINGS",
    "AlarmEvent",
    "AlarmKind",
    "ArtifactRef",
    "CompressedRef",
    "ContractError",
    "DeltaRef",
    "EncodingError",
    "Fields",
    "HashMismatch",
    "Health",
    "HealthCheck",
    "InputSpecMismatch",
    "MalformedManifest",
    "Manifest",
    "ManifestExpired",
    "PatchBaseMismatch",
    "PatchCorrupt",
    "Signature",
    "SignatureInvalid",
    "SizeMismatch",
    "StagePlan",
    "StatusRejected",
    "StatusReport",
    "Step",
    "TensorSpec",
    "ThingTopics",
    "TrustedKeys",
    "UnknownKey",
    "UploadAnswer",
    "UploadGrant",
    "UploadMessageInvalid",
    "UploadRefusal",
    "UploadRequest",
    "VersionNotNewer",
    "accept_manifest",
    "announcement",
    "band_of",
    "basis_points",
    "canonical_json",
    "check_blob",
    "check_fresh",
    "check_input",
    "check_newer",
    "format_time",
    "key_id_of",
    "load_public_key",
    "new_batch_id",
    "parse_manifest",
    "parse_time",
    "parse_upload_answer",
    "public_key_pem",
    "sha256_hex",
    "thing_of",
    "time_ordered_id",
    "utc_now",
]
