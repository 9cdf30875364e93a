"""SQS (S3 ObjectCreated notifications) → retrain, with partial batch failures.

Register each record's uploads once (idempotent on bucket, key and eTag), run
one retrain per model the batch fed, hand back the records that must come again.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.common.observability import logger, metrics, tracer
from functions.retrain.logic import records_to_retry
from functions.retrain.report import report_duplicates, report_failed_records, report_runs
from functions.retrain.wiring import retrain_service


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    service = retrain_service()
    service.idempotency.register_lambda_context(context)
    models_of: dict[str, set[str]] = {}

    def record_handler(record: SQSRecord) -> list[str]:
        uploads = service.register_record(record.body)
        report_duplicates(uploads.duplicates)
        models_of[record.message_id] = uploads.models
        return sorted(uploads.models)

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    with processor(records=event["Records"], handler=record_handler, lambda_context=context):
        processor.process()
    failed = {str(f["itemIdentifier"]) for f in processor.response()["batchItemFailures"]}
    report_failed_records(len(failed))
    outcomes, failures = service.retrainer.retrain_each(set().union(*models_of.values()))
    report_runs(outcomes, failures)
    failed = records_to_retry(models_of, set(failures), failed)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in sorted(failed)]}
