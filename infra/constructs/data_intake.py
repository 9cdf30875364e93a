"""Data intake: the bucket devices upload into, and the queue its notifications feed."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs.nag import suppress
from infra.constructs.storage import private_bucket

# Retrain's timeout is 15 minutes; SQS must not redeliver a message while a
# run may still hold it (AWS asks for at least 6x the function timeout).
RETRAIN_TIMEOUT = Duration.minutes(15)
QUEUE_VISIBILITY = Duration.minutes(15 * 6)
MAX_RECEIVES = 5


class DataIntake(Construct):
    def __init__(self, scope: Construct, id: str, *, access_logs: s3.IBucket) -> None:
        super().__init__(scope, id)
        self.bucket = private_bucket(
            self,
            "DataBucket",
            access_logs=access_logs,
            log_prefix="data-bucket/",
            lifecycle_rules=[
                # Raw uploads are training material for a while, then they go.
                s3.LifecycleRule(
                    id="expire-raw-data", prefix="data/", expiration=Duration.days(180)
                ),
                s3.LifecycleRule(
                    id="expire-quarantine", prefix="quarantine/", expiration=Duration.days(30)
                ),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
            ],
        )
        suppress(
            self.bucket,
            "AwsSolutions-S1",
            "server access logs are on; this finding is about the log bucket's own logging",
        )
        self.dead_letters = sqs.Queue(
            self,
            "UploadsDLQ",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        suppress(self.dead_letters, "AwsSolutions-SQS3", "this queue is the dead-letter queue")
        self.queue = sqs.Queue(
            self,
            "UploadsQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=QUEUE_VISIBILITY,
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letters, max_receive_count=MAX_RECEIVES
            ),
        )
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(self.queue),
            s3.NotificationKeyFilter(prefix="data/"),
        )
