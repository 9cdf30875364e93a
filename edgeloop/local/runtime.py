"""The whole cloud side on one machine: `with LocalRuntime(...) as cloud:`."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from edgeloop.contract import DEFAULT_STACK, RuleNames
from edgeloop.local.aws import REGION, MotoServer, Resources, init_trust
from edgeloop.local.broker import BrokerTls, EmbeddedBroker, Mosquitto
from edgeloop.local.cdn import BucketOrigin, LocalCdn
from edgeloop.local.certificates import CLAIM_IDENTITY, KeyPair, LocalCa
from edgeloop.local.packaged import LambdaBuild, PackagedStack
from edgeloop.local.provisioning import LocalProvisioning
from edgeloop.local.router import EventRouter, Rule, RuleAction
from functions.common.admission import AdmissionTable
from functions.common.fleet import FleetTable
from functions.common.identity import enroll


def put_item(dynamodb: Any, table: str) -> RuleAction:
    """A DynamoDBv2 rule action: each selected field an attribute of one PutItem, made
    with the rule's role."""
    serializer = TypeSerializer()

    def put(selected: dict[str, Any]) -> None:
        dynamodb.put_item(
            TableName=table, Item={k: serializer.serialize(v) for k, v in selected.items()}
        )

    return put


def handoff_above(memory_bytes: int) -> dict[str, str]:
    """The retrain function's setting that hands every run estimated above `memory_bytes`
    to a training job (1: every run), for LocalRuntime's `env`."""
    if memory_bytes < 1:
        raise ValueError(f"the hand-off limit must be a positive number of bytes: {memory_bytes}")
    return {"HANDOFF_MEMORY_BYTES": str(memory_bytes)}


class LocalRuntime:
    """The cloud as it deploys, on one machine.

    The functions run from the packaged task tree with the environment and role
    the synthesized template gives each (`edgeloop.local.packaged`), against moto
    with IAM authorization on. What differs from AWS: the model configs come from
    `model_configs` (an image bakes them in), the functions publish to the local
    broker instead of the IoT data plane, and the uploads queue redelivers after
    `visibility_timeout` seconds instead of the stack's 90 minutes.

    With `identity`, the broker is the local IoT Core (`edgeloop.local.provisioning`):
    mosquitto with client certificates from a local CA, devices onboard themselves
    with `claim`, and each is held to its own topics. Without it, an anonymous
    broker where any client may use any topic, for tests that enrol devices by hand.
    """

    def __init__(
        self,
        model_configs: dict[str, str],
        broker_url: str | None = None,
        env: dict[str, str] | None = None,
        batching_window: float = 1.0,
        schedule_seconds: float = 1.0,
        status_rule: bool = True,
        batch_size: int = 100,
        identity: bool = False,
        ca_dir: Path | None = None,
        moto_process: bool = False,
        build: LambdaBuild | None = None,
        visibility_timeout: int = 20,
    ) -> None:
        build = build or LambdaBuild.find()
        self.workdir = Path(tempfile.mkdtemp(prefix="edgeloop-local-"))
        self.config_dir = self.workdir / "models"
        self.config_dir.mkdir()
        for name, text in model_configs.items():
            (self.config_dir / f"{name}.toml").write_text(text)
        self._saved_env = dict(os.environ)
        # moto runs in its own process whatever `moto_process` says: IAM mode is a
        # process-wide switch.
        del moto_process
        self.aws = MotoServer(iam=True)
        if identity and (broker_url is not None or shutil.which("mosquitto") is None):
            raise ValueError(
                "identity is enforced by the local mosquitto this runtime starts: "
                "install mosquitto, and give no broker_url"
            )
        self.identity = identity
        self.ca: LocalCa | None = None
        self.claim: KeyPair | None = None
        self.broker: Mosquitto | EmbeddedBroker | None = None
        if identity:
            # The local IoT Core: client certificates from the local CA, and each
            # identity held to its own topics by the broker.
            self.ca = LocalCa(ca_dir or self.workdir / "ca")
            server = self.ca.key_pair(
                "broker", "localhost", hosts=("127.0.0.1", "localhost"), server=True
            )
            self.claim = self.ca.key_pair("claim", CLAIM_IDENTITY)
            self.broker = Mosquitto(
                BrokerTls(self.ca.cert_path, server.cert, server.key), self.workdir / "broker"
            )
            cloud_url = self.broker.cloud_url
        elif broker_url is None:
            self.broker = EmbeddedBroker()
            cloud_url = self.broker.url
        else:
            cloud_url = broker_url
        # Where devices connect; the cloud's own services use `cloud_url`.
        self.broker_url = broker_url or self.broker.url  # type: ignore[union-attr]
        self.stack = PackagedStack(
            build,
            self.aws.endpoint,
            REGION,
            f"edgeloop-{uuid.uuid4().hex[:6]}",
            self.workdir,
            extra_env={
                "MODEL_CONFIG_DIR": str(self.config_dir),
                "EDGELOOP_MQTT_URL": cloud_url,
                **(env or {}),
            },
            queue_visibility=visibility_timeout,
        )
        self.aws.credentials = self.stack.operator.as_kwargs()
        self.resources: Resources = self.stack.names()
        # A fleet's root is made offline (`edgeloop trust init`); a local cloud's here.
        self.trust_root = init_trust(self.aws.client, self.resources, self.workdir / "root-keys")
        self.artifacts = BucketOrigin(self.aws.client("s3"), self.resources.artifact_bucket)
        self.cdn = LocalCdn(self.artifacts)
        # What runs in this process (the operator's tools, the demo's report) acts as
        # the platform team.
        os.environ.update(
            {
                **self.stack.operator.as_env(),
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ENDPOINT_URL": self.aws.endpoint,
            }
        )
        functions = self.stack.functions
        self.router = EventRouter(
            self.aws.client("sqs"),
            self.resources.queue_url,
            self.resources.queue_arn,
            cloud_url,
            {
                name: functions[name]
                for name in ("retrain", "presign", "status", "evaluate_rollouts")
            },
            batching_window=batching_window,
            batch_size=batch_size,
            schedule_seconds=schedule_seconds,
            status_rule=status_rule,
            # Counted outcomes reach the schedule function by the registry's stream.
            streams=self.aws.client("dynamodbstreams"),
            registry_stream_arn=self.resources.registry_stream_arn,
            template_rules=[
                Rule(
                    spec.name,
                    spec.topic_filter,
                    put_item(self.stack.client("dynamodb", as_rule=spec.name), spec.table),
                    spec.select,
                )
                for spec in self.stack.dynamodb_rules
            ],
            # Runs handed to SageMaker run here as processes, and end through the
            # packaged completion function.
            training_jobs=self.stack,
        )
        self.router.start()
        self.provisioning: LocalProvisioning | None = None
        spec = self.stack.provisioning
        if isinstance(self.broker, Mosquitto) and self.ca is not None and spec is not None:
            fleet = FleetTable(self.aws.client("dynamodb"), self.resources.fleet_table)
            self.provisioning = LocalProvisioning(
                self.broker,
                self.ca,
                self.aws.client("iot"),
                self.stack.client("iot", as_function="provisioning"),
                spec.name,
                spec.body,
                functions[spec.hook],
                RuleNames(DEFAULT_STACK),
                spec.policy_document,
                # A re-provisioned device may have a new model: its next report looks again.
                on_registered=fleet.forget_identity,
            )

    def enroll(self, thing: str, model: str, canary: bool = False) -> None:
        """Register a device in the local thing registry, as the platform team does in
        IoT Core: its model, and whether it is a named canary. The identity the fleet
        table kept for it is forgotten, so the change applies to its next report."""
        enroll(
            self.aws.client("iot"),
            thing,
            model,
            self.resources.canary_group if canary else None,
        )
        FleetTable(self.aws.client("dynamodb"), self.resources.fleet_table).forget_identity(thing)

    def admissions(self) -> AdmissionTable:
        """The fleet's allow-list, as the platform team edits it (`edgeloop fleet allow`)."""
        return AdmissionTable(self.aws.client("dynamodb"), self.resources.admission_table)

    def provisioning_refusals(self) -> list[str]:
        """Why each refused RegisterThing was refused, as the cloud's side says it."""
        return [] if self.provisioning is None else list(self.provisioning.refusals)

    def client(self, service: str) -> Any:
        return self.aws.client(service)

    def close(self) -> None:
        if self.provisioning is not None:
            self.provisioning.close()
        self.router.stop()
        self.stack.close()
        self.cdn.stop()
        if self.broker is not None:
            self.broker.close()
        self.aws.stop()
        os.environ.clear()
        os.environ.update(self._saved_env)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
