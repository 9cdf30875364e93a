"""The whole cloud side on one machine: `with LocalRuntime(...) as cloud:`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeloop.local.aws import CREDENTIALS, MotoServer, Resources, init_trust
from edgeloop.local.broker import EmbeddedBroker
from edgeloop.local.cdn import BucketOrigin, LocalCdn
from edgeloop.local.router import EventRouter, Handler
from functions.common.cold_start import reset_cold_start
from functions.common.fleet import FleetTable
from functions.common.identity import enroll


def _without_metrics(handler: Handler) -> Handler:
    """Powertools keeps disabled metrics in memory and prints them once a metric has 100
    values; locally nobody reads them, so they are dropped after each invocation."""
    from functions.common.observability import metrics

    def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            return handler(event, context)
        finally:
            metrics.clear_metrics()

    return invoke


class LocalRuntime:
    def __init__(
        self,
        model_configs: dict[str, str],
        broker_url: str | None = None,
        env: dict[str, str] | None = None,
        batching_window: float = 1.0,
        schedule_seconds: float = 1.0,
        status_rule: bool = True,
        batch_size: int = 100,
        moto_process: bool = False,
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="edgeloop-local-"))
        self.config_dir = self.workdir / "models"
        self.config_dir.mkdir()
        for name, text in model_configs.items():
            (self.config_dir / f"{name}.toml").write_text(text)
        self._saved_env = dict(os.environ)
        self.aws = MotoServer(own_process=moto_process)
        self.resources: Resources = self.aws.provision(visibility_timeout=20)
        self.broker = None if broker_url else EmbeddedBroker()
        self.broker_url = broker_url or self.broker.url  # type: ignore[union-attr]
        # A fleet's root is made offline (`edgeloop trust init`); a local cloud's here.
        self.trust_root = init_trust(self.aws.client, self.resources, self.workdir / "root-keys")
        self.artifacts = BucketOrigin(self.aws.client("s3"), self.resources.artifact_bucket)
        self.cdn = LocalCdn(self.artifacts)
        os.environ.update(
            {
                **CREDENTIALS,
                "AWS_ENDPOINT_URL": self.aws.endpoint,
                **self.resources.function_env(),
                "MODEL_CONFIG_DIR": str(self.config_dir),
                "EDGELOOP_MQTT_URL": self.broker_url,
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "ERROR",
                **(env or {}),
            }
        )
        reset_cold_start()
        from functions.evaluate_rollouts.handler import handler as evaluate_rollouts
        from functions.presign.handler import handler as presign
        from functions.retrain.handler import handler as retrain
        from functions.status.handler import handler as status

        self.router = EventRouter(
            self.aws.client("sqs"),
            self.resources.queue_url,
            self.resources.queue_arn,
            self.broker_url,
            {
                name: _without_metrics(handler)
                for name, handler in (
                    ("retrain", retrain),
                    ("presign", presign),
                    ("status", status),
                    ("evaluate_rollouts", evaluate_rollouts),
                )
            },
            batching_window=batching_window,
            batch_size=batch_size,
            schedule_seconds=schedule_seconds,
            status_rule=status_rule,
            # Counted outcomes reach the schedule function by the registry's stream.
            streams=self.aws.client("dynamodbstreams"),
            registry_stream_arn=self.resources.registry_stream_arn,
        )
        self.router.start()

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

    def client(self, service: str) -> Any:
        return self.aws.client(service)

    def close(self) -> None:
        self.router.stop()
        self.cdn.stop()
        if self.broker is not None:
            self.broker.close()
        self.aws.stop()
        reset_cold_start()
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
