"""The local AWS saves its state while it serves: a cloud killed outright, not stopped,
comes back with what it held a save ago, credentials and all."""

from __future__ import annotations

import time
from pathlib import Path

from edgeloop.local.aws import REGION, MotoServer
from edgeloop.local.moto_iam import enable_authorization, operator
from tests.support_world import wait_for

BUCKET = "kept-across-a-kill"


def test_a_killed_local_aws_restarts_from_its_last_periodic_save(tmp_path: Path) -> None:
    state = tmp_path / "aws.state"
    aws = MotoServer(iam=True, state=state, save_every=0.2)
    try:
        admin = operator(aws.endpoint, REGION)
        aws.credentials = admin.as_kwargs()
        enable_authorization(aws.endpoint)
        aws.client("s3").create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        # The bucket's name is in the pickle once a save after its creation landed.
        wait_for(
            lambda: state.is_file() and BUCKET.encode() in state.read_bytes(),
            timeout=60,
            what="a periodic save holding the bucket",
        )
        saved_at = state.stat().st_mtime_ns
        time.sleep(1.0)  # five save periods with nothing new: nothing is rewritten
        assert state.stat().st_mtime_ns == saved_at
    finally:
        assert aws._process is not None
        aws._process.kill()  # no clean stop: no save on the way out
        aws._process.wait(30)
    again = MotoServer(iam=True, state=state)
    try:
        again.credentials = admin.as_kwargs()
        buckets = [b["Name"] for b in again.client("s3").list_buckets()["Buckets"]]
        assert BUCKET in buckets
    finally:
        again.stop()
