"""moto's server as the local AWS, with the same resources the CDK stack creates."""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from functions.common.fleet import TTL_ATTRIBUTE, fleet_table_spec
from functions.common.registry import registry_table_spec

REGION = "eu-west-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": REGION,
}
# Lambda's max receives before the DLQ, as in the stack.
MAX_RECEIVES = 5


@dataclass(frozen=True)
class Resources:
    data_bucket: str
    artifact_bucket: str
    registry_bucket: str
    registry_table: str
    fleet_table: str
    idempotency_table: str
    queue_url: str
    queue_arn: str
    dead_letter_url: str
    signing_key_id: str
    # The thing group of named canaries, as the stack's IoT wiring creates it.
    canary_group: str
    # The registry table's stream, which carries counted outcomes to the schedule function.
    registry_stream_arn: str
    # Written by the presence rule alone (no function has its name); "" where no
    # rule writes presence (the in-process cloud of the fleet benchmark).
    presence_table: str = ""
    # Provisioning by claim: the allow-list the hook reads, the thing group of admitted
    # devices that are not named canaries, the provisioning template and the claim
    # certificate's policy; "" where the cloud has no provisioning (the in-process one).
    admission_table: str = ""
    fleet_group: str = ""
    provisioning_template: str = ""
    claim_policy: str = ""

    def function_env(self) -> dict[str, str]:
        """The environment the stack gives its functions."""
        return {
            "DATA_BUCKET": self.data_bucket,
            "ARTIFACT_BUCKET": self.artifact_bucket,
            "REGISTRY_BUCKET": self.registry_bucket,
            "REGISTRY_TABLE": self.registry_table,
            "FLEET_TABLE": self.fleet_table,
            "IDEMPOTENCY_TABLE": self.idempotency_table,
            "SIGNING_KEY_ID": self.signing_key_id,
            "CANARY_GROUP": self.canary_group,
            **({"ADMISSION_TABLE": self.admission_table} if self.admission_table else {}),
            **({"FLEET_GROUP": self.fleet_group} if self.fleet_group else {}),
        }


def provision(
    client: Callable[[str], Any], prefix: str = "edgeloop", visibility_timeout: int = 30
) -> Resources:
    """Buckets, tables (the registry's stream, the fleet's TTL), the uploads queue with its
    DLQ, S3 → SQS notifications, the KMS key."""
    suffix = uuid.uuid4().hex[:8]
    s3, ddb, sqs, kms = (client(s) for s in ("s3", "dynamodb", "sqs", "kms"))
    buckets = {kind: f"{prefix}-{kind}-{suffix}" for kind in ("data", "artifacts", "registry")}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    tables = {kind: f"{prefix}-{kind}-{suffix}" for kind in ("registry", "fleet", "idempotency")}
    registry = ddb.create_table(**registry_table_spec(tables["registry"]))["TableDescription"]
    ddb.create_table(**fleet_table_spec(tables["fleet"]))
    ddb.update_time_to_live(
        TableName=tables["fleet"],
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
    ddb.create_table(
        TableName=tables["idempotency"],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dlq_url = sqs.create_queue(QueueName=f"{prefix}-uploads-dlq-{suffix}")["QueueUrl"]
    dlq_arn = _queue_arn(sqs, dlq_url)
    queue_url = sqs.create_queue(
        QueueName=f"{prefix}-uploads-{suffix}",
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": (
                f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "{MAX_RECEIVES}"}}'
            ),
        },
    )["QueueUrl"]
    queue_arn = _queue_arn(sqs, queue_url)
    s3.put_bucket_notification_configuration(
        Bucket=buckets["data"],
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "data/"}]}},
                }
            ]
        },
    )
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    canary_group = f"{prefix}-canary-{suffix}"
    client("iot").create_thing_group(thingGroupName=canary_group)
    return Resources(
        data_bucket=buckets["data"],
        artifact_bucket=buckets["artifacts"],
        registry_bucket=buckets["registry"],
        registry_table=tables["registry"],
        fleet_table=tables["fleet"],
        idempotency_table=tables["idempotency"],
        queue_url=queue_url,
        queue_arn=queue_arn,
        dead_letter_url=dlq_url,
        signing_key_id=key,
        canary_group=canary_group,
        registry_stream_arn=registry["LatestStreamArn"],
    )


def init_trust(client: Callable[[str], Any], resources: Resources, keys_dir: Path) -> bytes:
    """What the platform team does offline with `edgeloop trust init`, done here with
    three throwaway root keys in `keys_dir` (two sign root) and the online roles on the
    KMS key; then the first timestamp. Returns root v1, the anchor devices ship with."""
    from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
    from edgeloop.trust import KmsSigner, RootCeremony, S3Store, TrustRepository
    from edgeloop.trust.keys import generate_root_key

    store = S3Store(client("s3"), resources.artifact_bucket, REPOSITORY_PREFIX)
    online = KmsSigner.of_key(client("kms"), resources.signing_key_id)
    keys = [generate_root_key(keys_dir / f"root-{i}.pem", None) for i in range(3)]
    root = RootCeremony(store).init(keys, 2, online.public_key)
    TrustRepository(store, online).resign_due()
    return root.to_bytes()


def resign_due(client: Callable[[str], Any], resources: Resources) -> None:
    """A persisted cloud started again: a fresh timestamp (and whatever else expired while
    it was stopped), signed by the online key, before any device asks."""
    from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
    from edgeloop.trust import KmsSigner, S3Store, TrustRepository

    store = S3Store(client("s3"), resources.artifact_bucket, REPOSITORY_PREFIX)
    TrustRepository(store, KmsSigner.of_key(client("kms"), resources.signing_key_id)).resign_due()


def _queue_arn(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    arn: str = attributes["QueueArn"]
    return arn


class MotoServer:
    """moto in server mode on a loopback port.

    In this process by default (quick to start). With `own_process`, moto runs
    as its own process, so it does not share an interpreter lock with the
    functions and stand-ins beside it: a thousand devices uploading at once
    made in-process moto answer after its clients' 60 s timeout.
    """

    def __init__(
        self,
        own_process: bool = False,
        iam: bool = False,
        port: int | None = None,
        state: Path | None = None,
        host: str = "127.0.0.1",
        save_every: float | None = None,
    ) -> None:
        """With `iam`, moto authorizes every request against IAM (its own process, as
        `edgeloop.local.moto_iam` explains); `credentials` must then be set to a
        principal's before `client()` is used. With `state` (IAM mode), moto starts from
        that file when it exists and writes its state there every `save_every` seconds
        (default `moto_iam.SAVE_EVERY_SECONDS`) and when it stops; `host` is the
        address it listens on (IAM mode; the cloud itself always reaches it on loopback)."""
        self._server: Any = None
        self._process: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None
        self.credentials = {
            "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        }
        if own_process or iam:
            from edgeloop.local.broker import dying_with_parent, free_port, wait_listening

            port = port or free_port()
            command = (
                [
                    "edgeloop.local.moto_iam",
                    "--port",
                    str(port),
                    "--host",
                    host,
                    *(["--state", str(state)] if state is not None else []),
                    *(["--save-every", str(save_every)] if save_every is not None else []),
                ]
                if iam
                else ["moto.server", "-H", "127.0.0.1", "-p", str(port)]
            )
            # With a state file, moto's own errors (one saving it) are kept beside it.
            self.log = state.with_suffix(".log") if state is not None else None
            self._process = subprocess.Popen(
                dying_with_parent([sys.executable, "-m", *command]),
                stdout=subprocess.DEVNULL,
                stderr=self.log.open("ab") if self.log is not None else subprocess.DEVNULL,
            )
            wait_listening(port, timeout=60.0)
            self.endpoint = f"http://127.0.0.1:{port}"
            return
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            **self.credentials,
        )

    def provision(self, prefix: str = "edgeloop", visibility_timeout: int = 30) -> Resources:
        return provision(self.client, prefix, visibility_timeout)

    def stop(self) -> bool:
        """Stop moto; False when it did not exit cleanly (with a state file: its state
        may not have been saved, and `log` says why)."""
        if self._process is not None:
            self._process.terminate()
            # Writing a persisted state takes a moment when the cloud has data.
            return self._process.wait(120) == 0
        self._server.stop()
        return True
