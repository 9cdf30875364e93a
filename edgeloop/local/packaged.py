"""The deployed shape on one machine: the template's resources, roles and packaged functions.

`PackagedStack` reads what `make lambda-task-local` leaves in `build/lambda/` (the
task tree built from the functions' lock, and the synthesized template), creates
the template's resources in a moto server that runs with IAM authorization on,
makes one IAM principal per function role holding exactly that role's statements,
and hosts every image function as a `PackagedFunction`. The local cloud, the demo
and the test tier call the functions only through it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3

from edgeloop.local.aws import Resources
from edgeloop.local.lambda_host import PackagedFunction, image_environment
from edgeloop.local.moto_iam import Credentials, create_principal, enable_authorization, operator
from edgeloop.local.stack_template import LocalStack, StackTemplate, TemplateError
from edgeloop.local.training_jobs import LocalTrainingJobs
from functions.common.presence import PRESENCE_TOPICS

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_ENV = "EDGELOOP_LAMBDA_BUILD"


@dataclass(frozen=True)
class LambdaBuild:
    """What `make lambda-task-local` builds: the task tree and the template it deploys with."""

    root: Path

    @classmethod
    def find(cls) -> LambdaBuild:
        root = Path(os.environ.get(BUILD_ENV) or REPO_ROOT / "build" / "lambda")
        build = cls(root)
        for path in (build.task_root, build.template):
            if not path.exists():
                raise TemplateError(
                    f"{path} is missing: build the functions as they ship with "
                    f"`make lambda-task-local` (or point {BUILD_ENV} at such a build)"
                )
        return build

    @property
    def task_root(self) -> Path:
        return self.root / "task-local"

    @property
    def template(self) -> Path:
        return self.root / "edgeloop.template.json"

    @property
    def dockerfile(self) -> Path:
        return (
            self.task_root / "Dockerfile"
            if (self.task_root / "Dockerfile").exists()
            else (REPO_ROOT / "infra" / "lambda" / "Dockerfile")
        )


@dataclass(frozen=True)
class StackResources:
    """The names the operator's tools and the stand-ins need, read from the functions' env."""

    names: dict[str, str]
    queue_url: str
    queue_arn: str

    def __getitem__(self, key: str) -> str:
        return self.names[key]


class PackagedStack:
    def __init__(
        self,
        build: LambdaBuild,
        endpoint: str,
        region: str,
        prefix: str,
        workdir: Path,
        extra_env: Mapping[str, str] | None = None,
        queue_visibility: int | None = None,
        role_edit: Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
        deployment: Path | None = None,
    ) -> None:
        """`role_edit(function, statements)` may change a role before it is enforced:
        the tests use it to prove that a missing statement is an AccessDenied.

        With `deployment`, a file that records what was created (the physical names and
        the principals' keys, as CloudFormation keeps a stack's): when it exists, the
        stack is already in moto (a persisted local cloud started again) and is only
        attached to; otherwise it is created and the file written."""
        self.endpoint = endpoint
        self.region = region
        self.template = StackTemplate.load(build.template)
        recorded = (
            json.loads(deployment.read_text(encoding="utf-8"))
            if deployment is not None and deployment.is_file()
            else None
        )
        self.operator: Credentials
        if recorded is None:
            self.operator = operator(endpoint, region)
            self.stack = LocalStack(self.template, prefix, region).create(
                self.client, queue_visibility
            )
        else:
            prefix = recorded["prefix"]
            self.operator = Credentials(**recorded["operator"])
            self.stack = LocalStack(self.template, prefix, region)
            self.stack.attach(recorded["refs"], recorded["arns"])
        self.prefix = prefix
        # Whether this start continued a stack an earlier run created.
        self.attached = recorded is not None
        image_env = image_environment(build.dockerfile, build.task_root)
        iam = self.client("iam")
        self.functions: dict[str, PackagedFunction] = {}
        self.credentials: dict[str, Credentials] = {}
        saved: dict[str, Credentials] = (
            {k: Credentials(**v) for k, v in recorded["principals"].items()} if recorded else {}
        )

        def principal(
            key: str,
            name: str,
            statements: list[dict[str, Any]],
            managed: tuple[str, ...] = (),
        ) -> Credentials:
            return saved.get(key) or create_principal(iam, name, statements, managed)

        for name, spec in self.stack.functions().items():
            statements = role_edit(name, spec.statements) if role_edit else spec.statements
            credentials = principal(name, f"{prefix}-{name}", statements)
            self.credentials[name] = credentials
            self.functions[name] = PackagedFunction(
                spec,
                task_root=build.task_root,
                workdir=workdir,
                region=region,
                credentials=credentials.as_env(),
                extra_env={"AWS_ENDPOINT_URL": endpoint, **(extra_env or {})},
                image_env=image_env,
            )
        # The rules that write to DynamoDB act as their roles, as IoT Core assumes them.
        self.dynamodb_rules = self.stack.dynamodb_rules()
        self.rule_credentials: dict[str, Credentials] = {
            rule.name: principal(
                f"rule:{rule.name}", f"{prefix}-rule-{rule.name}"[:64], rule.statements
            )
            for rule in self.dynamodb_rules
        }
        self.training = self._training_jobs(build, prefix, workdir, saved.get("training_job"))
        # IoT Core provisions devices as the template's provisioning role.
        self.provisioning = self.stack.provisioning()
        if self.provisioning is not None:
            self.credentials["provisioning"] = principal(
                "provisioning",
                f"{prefix}-provisioning",
                self.provisioning.statements,
                self.provisioning.managed,
            )
        if recorded is None:
            enable_authorization(endpoint)
            if deployment is not None:
                self._record(deployment)
        retrain = self.stack.functions()["retrain"]
        queue_arn = self.stack.event_source(retrain.logical_id)
        self.resources = StackResources(
            names={
                k: v
                for spec in self.stack.functions().values()
                for k, v in spec.environment.items()
            },
            queue_url=self.stack.queue_url(queue_arn),
            queue_arn=queue_arn,
        )

    def _record(self, deployment: Path) -> None:
        """What a later start attaches to: the names made and the principals' keys
        (local throwaway keys for this moto only, kept owner-readable)."""
        principals = {
            **{k: asdict(v) for k, v in self.credentials.items()},
            **{f"rule:{k}": asdict(v) for k, v in self.rule_credentials.items()},
        }
        doc = {
            "prefix": self.prefix,
            "operator": asdict(self.operator),
            "principals": principals,
            "refs": self.stack.refs,
            "arns": self.stack.arns,
        }
        fd = os.open(deployment, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)

    def _training_jobs(
        self,
        build: LambdaBuild,
        prefix: str,
        workdir: Path,
        saved: Credentials | None = None,
    ) -> LocalTrainingJobs | None:
        """SageMaker's stand-in, acting with the training jobs' role (the one the template
        gives the retrain function to pass), when the template has one."""
        arn = self.stack.functions()["retrain"].environment.get("TRAINING_ROLE_ARN")
        role = self.stack.role_with_arn(arn) if arn else None
        if role is None:
            return None
        credentials = saved or create_principal(
            self.client("iam"), f"{prefix}-training-job", self.stack.role_statements(role)
        )
        self.credentials["training_job"] = credentials
        s3 = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region, **credentials.as_kwargs()
        )
        return LocalTrainingJobs(
            s3,
            self.client("sagemaker"),
            self.region,
            task_root=build.task_root,
            env={"TMPDIR": str(workdir)},
        )

    def training_pending(self) -> bool:
        """Whether a job was started that has not run here yet."""
        return self.training is not None and bool(self.training.pending())

    def finish_training_jobs(self) -> list[Any]:
        """Run every training job started since the last call, each to its end, and deliver
        its state change to the completion function, as the stack's rule does; the
        completion function's answers, in the jobs' order."""
        if self.training is None:
            return []
        done = self.functions["training_done"]
        return [done(self.training.run(name)) for name in self.training.pending()]

    def names(self) -> Resources:
        """The stack's resources by role, as the operator's tools and the stand-ins ask."""
        names = self.resources
        dead_letters = json.loads(
            self.client("sqs").get_queue_attributes(
                QueueUrl=names.queue_url, AttributeNames=["RedrivePolicy"]
            )["Attributes"]["RedrivePolicy"]
        )["deadLetterTargetArn"]
        return Resources(
            data_bucket=names["DATA_BUCKET"],
            artifact_bucket=names["ARTIFACT_BUCKET"],
            registry_bucket=names["REGISTRY_BUCKET"],
            registry_table=names["REGISTRY_TABLE"],
            fleet_table=names["FLEET_TABLE"],
            idempotency_table=names["IDEMPOTENCY_TABLE"],
            queue_url=names.queue_url,
            queue_arn=names.queue_arn,
            dead_letter_url=self.stack.queue_url(dead_letters),
            signing_key_id=names["SIGNING_KEY_ID"],
            canary_group=names["CANARY_GROUP"],
            registry_stream_arn=self.stack.event_source(
                self.stack.functions()["evaluate_rollouts"].logical_id
            ),
            presence_table=next(
                (r.table for r in self.dynamodb_rules if r.topic_filter == PRESENCE_TOPICS), ""
            ),
            admission_table=self.stack.output("AdmissionTable") or "",
            fleet_group=self.stack.output("FleetGroup") or "",
            provisioning_template=self.stack.output("ProvisioningTemplateName") or "",
            claim_policy=self.stack.output("ClaimPolicyName") or "",
        )

    def client(
        self, service: str, as_function: str | None = None, as_rule: str | None = None
    ) -> Any:
        """A client as the operator, as a function's role, or as a topic rule's role."""
        credentials = (
            self.credentials[as_function]
            if as_function
            else self.rule_credentials[as_rule]
            if as_rule
            else self.operator
        )
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            **credentials.as_kwargs(),
        )

    def close(self) -> None:
        for function in self.functions.values():
            function.close()
