"""The wire contract shared by the cloud functions and the device agent.

Split by reason to change:
- `encoding`: canonical JSON, SHA-256, UTC times, time-ordered ids;
- `reader`: the one strict reader every message and config goes through;
- message types, each parsed beside where it is serialised: `status`,
  `uploads`, `events`, `nudge`, and the MQTT `topics`;
- `manifest`: a version as the device keeps it (assembled from verified targets);
- `trust_targets`: what the fleet's TUF repository's target names and custom
  metadata mean (the rollout pointer, patches, a version's spec); python-tuf
  signs and verifies, the contract only says what the verified fields mean;
- `acceptance`: what a device checks of a version and the bytes it fetches.

No scikit-learn, boto3 or pydantic import anywhere in this package.
"""

from edgeloop.contract.acceptance import check_blob, check_input
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
    PatchBaseMismatch,
    PatchCorrupt,
    SizeMismatch,
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
    TensorSpec,
    WindowSpec,
    parse_manifest,
)
from edgeloop.contract.nudge import IOT_MESSAGE_UNIT, CarriedFile, MalformedNudge, Nudge
from edgeloop.contract.reader import Fields
from edgeloop.contract.stages import StagePlan, band_of, basis_points
from edgeloop.contract.status import Health, StatusRejected, StatusReport, Step
from edgeloop.contract.topics import (
    DEFAULT_STACK,
    INGEST_PREFIX,
    IngestTopic,
    RuleNames,
    ThingTopics,
    announcement,
    check_stack_name,
    ingest_topic,
    parse_ingest,
    thing_of,
)
from edgeloop.contract.uploads import (
    UploadAnswer,
    UploadGrant,
    UploadMessageInvalid,
    UploadRefusal,
    UploadRequest,
    new_batch_id,
    parse_upload_answer,
)

__all__ = [
    "CODECS",
    "DEFAULT_STACK",
    "FULL_ENCODINGS",
    "INGEST_PREFIX",
    "IOT_MESSAGE_UNIT",
    "AlarmEvent",
    "AlarmKind",
    "ArtifactRef",
    "CarriedFile",
    "CompressedRef",
    "ContractError",
    "DeltaRef",
    "EncodingError",
    "Fields",
    "HashMismatch",
    "Health",
    "HealthCheck",
    "IngestTopic",
    "InputSpecMismatch",
    "MalformedManifest",
    "MalformedNudge",
    "Manifest",
    "Nudge",
    "PatchBaseMismatch",
    "PatchCorrupt",
    "RuleNames",
    "SizeMismatch",
    "StagePlan",
    "StatusRejected",
    "StatusReport",
    "Step",
    "TensorSpec",
    "ThingTopics",
    "UploadAnswer",
    "UploadGrant",
    "UploadMessageInvalid",
    "UploadRefusal",
    "UploadRequest",
    "WindowSpec",
    "announcement",
    "band_of",
    "basis_points",
    "canonical_json",
    "check_blob",
    "check_input",
    "check_stack_name",
    "format_time",
    "ingest_topic",
    "new_batch_id",
    "parse_ingest",
    "parse_manifest",
    "parse_time",
    "parse_upload_answer",
    "sha256_hex",
    "thing_of",
    "time_ordered_id",
    "utc_now",
]
