"""IoT rule → presign: answer a device's upload request on its own response topic.

The rule is `{stack}_upload_requests`,
`SELECT *, topic(3) AS topic_thing FROM 'edgeloop/things/+/upload/request'`, reached by name
(Basic Ingest) or on the plain topic; either way the thing name comes from the topic the
device was allowed to publish on.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from edgeloop.contract import ThingTopics, UploadAnswer
from functions.common.clients import client
from functions.common.env import PresignEnv, cached_env
from functions.common.observability import logger, metrics, tracer
from functions.common.rules import split_rule_event
from functions.common.wiring import grant_counter, identity, publisher
from functions.presign.logic import PresignRefused, presign, refusal


@logger.inject_lambda_context(correlation_id_path="request_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    env = cached_env(PresignEnv)
    thing, payload = split_rule_event(event)
    try:
        answer: UploadAnswer = presign(
            env, client("s3"), thing, payload, identity=identity(), grants=grant_counter()
        )
        metrics.add_metric(name="UploadUrlsGranted", unit=MetricUnit.Count, value=1)
    except PresignRefused as exc:
        logger.warning("upload request refused", extra={"thing": thing, "code": exc.code})
        metrics.add_metric(name="UploadUrlsRefused", unit=MetricUnit.Count, value=1)
        answer = refusal(payload, exc)
        if exc.code == "bad_thing":
            return answer.to_json()  # no topic of its own to answer on
    publisher().publish(ThingTopics(thing).upload_response, answer.to_bytes())
    return answer.to_json()
