"""The whole cloud side on one machine: `with LocalRuntime(...) as cloud:`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from edgeloop.contract import DEFAULT_STACK, RuleNames
from edgeloop.local.aws import REGION, MotoServer, Resources, init_trust, resign_due
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


LOOPBACK = ("127.0.0.1", "localhost")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host == "::1"


def state_dir_problem(state_dir: Path) -> str | None:
    """Why a local cloud cannot continue from `state_dir`, in one line, or None."""
    if (state_dir / "stack.json").is_file() and not (state_dir / "aws.state").is_file():
        return (
            f"{state_dir} records a local cloud whose AWS state was never saved (it was "
            f"killed before its first save): remove {state_dir} to start anew"
        )
    return None


def lan_address() -> str:
    """This machine's address on its network: the one its default route leaves from
    (a UDP socket's connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address: str = probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"
    return address


def _ports(state_dir: Path | None, broker_port: int | None) -> dict[str, int]:
    """The ports of moto, the broker (devices' and the cloud's listeners) and the CDN:
    chosen free on the first start and kept in `state_dir`, so the URLs in agent.toml
    are the same on every start; `broker_port` sets the devices' listener."""
    from edgeloop.local.broker import free_port

    path = None if state_dir is None else state_dir / "ports.json"
    kept: dict[str, int] = (
        json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else {}
    )
    ports = {name: kept.get(name) or free_port() for name in ("aws", "broker", "cloud", "cdn")}
    if broker_port is not None:
        ports["broker"] = broker_port
    if path is not None and ports != kept:
        path.write_text(json.dumps(ports, indent=2, sort_keys=True) + "\n")
    return ports


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

    With `state_dir`, the cloud persists there and a runtime started again on the same
    directory continues where the last one stopped: moto's state (written when it stops),
    the stack's names and principals, the root keys and root, the CA, the broker's
    persistence and the ports. `host` is where devices reach the broker and the CDN
    (loopback by default); any other host needs `identity` (TLS with client
    certificates), and the broker's certificate names it.
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
        state_dir: Path | None = None,
        host: str = "127.0.0.1",
        broker_port: int | None = None,
    ) -> None:
        build = build or LambdaBuild.find()
        if not is_loopback(host) and not identity:
            raise ValueError(
                f"host {host}: devices on the network need the broker's TLS with client "
                "certificates (identity, with mosquitto installed)"
            )
        self.state_dir = state_dir
        if state_dir is not None:
            state_dir.mkdir(parents=True, exist_ok=True)
            problem = state_dir_problem(state_dir)
            if problem is not None:
                raise ValueError(problem)
        ports = _ports(state_dir, broker_port)
        # Where devices reach this machine: the host itself, or (listening on every
        # address) its address on the network.
        self.host = lan_address() if host in ("0.0.0.0", "::") else host
        lan = not is_loopback(self.host)
        self.workdir = Path(tempfile.mkdtemp(prefix="edgeloop-local-"))
        self.config_dir = self.workdir / "models"
        self.config_dir.mkdir()
        for name, text in model_configs.items():
            (self.config_dir / f"{name}.toml").write_text(text)
        self._saved_env = dict(os.environ)
        # moto runs in its own process whatever `moto_process` says: IAM mode is a
        # process-wide switch.
        del moto_process
        self.aws = MotoServer(
            iam=True,
            port=ports["aws"] if state_dir is not None else None,
            state=state_dir / "aws.state" if state_dir is not None else None,
            # Devices upload to it by presigned URL, as to S3: on the network too.
            host="0.0.0.0" if lan else "127.0.0.1",
        )
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
            self.ca = LocalCa(ca_dir or (state_dir or self.workdir) / "ca")
            # One server certificate per host it must name (kept with the CA).
            server = self.ca.key_pair(
                "broker" if is_loopback(self.host) else f"broker-{self.host}",
                self.host if not is_loopback(self.host) else "localhost",
                hosts=tuple(dict.fromkeys((*LOOPBACK, self.host))),
                server=True,
            )
            self.claim = self.ca.key_pair("claim", CLAIM_IDENTITY)
            self.broker = Mosquitto(
                BrokerTls(self.ca.cert_path, server.cert, server.key),
                (state_dir or self.workdir) / "broker",
                host=host,
                port=ports["broker"] if state_dir is not None or broker_port else None,
                cloud_port=ports["cloud"] if state_dir is not None else None,
            )
            cloud_url = self.broker.cloud_url
        elif broker_url is None:
            self.broker = EmbeddedBroker(
                ports["broker"] if state_dir is not None or broker_port else None
            )
            cloud_url = self.broker.url
        else:
            cloud_url = broker_url
        # Where devices connect; the cloud's own services use `cloud_url`.
        self.broker_url = broker_url or self.broker.url  # type: ignore[union-attr]
        if isinstance(self.broker, Mosquitto):
            self.broker_url = f"mqtts://{self.host}:{self.broker.port}"
        self.stack = PackagedStack(
            build,
            self.aws.endpoint,
            REGION,
            f"edgeloop-{uuid.uuid4().hex[:6]}",
            self.workdir,
            deployment=state_dir / "stack.json" if state_dir is not None else None,
            extra_env={
                "MODEL_CONFIG_DIR": str(self.config_dir),
                "EDGELOOP_MQTT_URL": cloud_url,
                # The upload grants the functions presign must name an address devices
                # on the network reach.
                **(
                    {"AWS_ENDPOINT_URL_S3": self.aws.endpoint.replace("127.0.0.1", self.host)}
                    if lan
                    else {}
                ),
                **(env or {}),
            },
            queue_visibility=visibility_timeout,
        )
        self.aws.credentials = self.stack.operator.as_kwargs()
        self.resources: Resources = self.stack.names()
        # A fleet's root is made offline (`edgeloop trust init`); a local cloud's here,
        # once per state directory.
        keys = (state_dir or self.workdir) / "root-keys"
        anchor = keys / "root.json"
        if anchor.is_file():
            self.trust_root = anchor.read_bytes()
            resign_due(self.aws.client, self.resources)
        else:
            self.trust_root = init_trust(self.aws.client, self.resources, keys)
            anchor.write_bytes(self.trust_root)
        self.artifacts = BucketOrigin(self.aws.client("s3"), self.resources.artifact_bucket)
        self.cdn = LocalCdn(
            self.artifacts,
            host="0.0.0.0" if host in ("0.0.0.0", "::") else host,
            port=ports["cdn"] if state_dir is not None else 0,
            advertised=self.host,
        )
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
        if not self.aws.stop() and self.state_dir is not None:
            print(
                f"warning: the local AWS did not save its state; see {self.aws.log} (the last "
                "saved state is kept)",
                file=sys.stderr,
            )
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
