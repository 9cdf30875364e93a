"""The local cloud hands a run to a training job and a device verifies what it shipped.

The runtime runs as deployed (packaged functions, their roles enforced, moto), with
the hand-off forced by a 1 KiB memory limit: an upload's S3 notification reaches the
retrain function, which starts a job; the local SageMaker runs the entry point as a
process over a temporary /opt/ml and delivers the job's state change to the
completion function, which publishes and starts the rollout; a device then
verifies and downloads the version through the CDN stand-in.
"""

from __future__ import annotations

from pathlib import Path

from edge.download import HttpFetcher
from edge.trust import SignedRepository, TrustLimits
from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
from edgeloop.local.runtime import LocalRuntime
from functions.common.registry import Registry
from tests.support_aws import DIGITS_TOML, digit_batches
from tests.support_world import wait_for


def test_a_run_handed_to_a_local_training_job_reaches_a_device(tmp_path: Path) -> None:
    with LocalRuntime({"digits": DIGITS_TOML}, env={"HANDOFF_MEMORY_BYTES": "1024"}) as cloud:
        cloud.enroll("pump-7", "digits")
        s3, registry = (
            cloud.client("s3"),
            Registry(cloud.client("dynamodb"), cloud.resources.registry_table),
        )
        for i, data in enumerate(digit_batches(40, 0, 30)):
            s3.put_object(
                Bucket=cloud.resources.data_bucket,
                Key=f"data/digits/pump-{7 + i % 3}/{i:04d}.npz",
                Body=data,
            )

        def shipped() -> bool:
            # The rollout starts last, once the run is recorded.
            rollout = registry.rollout("digits")
            return rollout is not None and rollout["version"] == 1

        wait_for(shipped, timeout=180, what="a version shipped through a training job")
        (run,) = registry.runs("digits")
        assert run["decision"] == "promoted"
        assert str(run["job"]).startswith("el-digits-")
        assert cloud.router.errors == []

        device = SignedRepository(
            HttpFetcher(cloud.cdn.base_url + REPOSITORY_PREFIX, timeout=5.0, retries=1),
            cloud.trust_root,
            tmp_path / "pump-7",
            limits=TrustLimits(min_refresh_seconds=0.0),
        )
        # The schedule moves the rollout past its stages without devices to pump-7's.
        wait_for(
            lambda: device.refresh("digits", "pump-7", None).version == 1,
            timeout=60,
            what="pump-7 to be offered v1",
        )
        offer = device.refresh("digits", "pump-7", None)
        assert offer.model is not None
        assert len(device.download(offer.model)) == offer.model.length
