"""IoT Core → pre-provisioning hook: may this serial become a thing of the fleet, and as what.

The stack's provisioning template (`edgeloop.contract.provisioning`) names this
function as its hook; IoT Core creates the thing only when the answer allows it,
with the model and thing group the answer sets.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.common.admission import AdmissionTable
from functions.common.clients import client
from functions.common.env import ProvisioningHookEnv, cached_env
from functions.common.observability import logger, metrics, tracer
from functions.provisioning_hook.logic import RegistryThings, decide


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    env = cached_env(ProvisioningHookEnv)
    decision = decide(
        env,
        AdmissionTable(client("dynamodb"), env.admission_table),
        event,
        RegistryThings(client("iot")),
    )
    if decision.admitted:
        logger.info("provisioning admitted", extra=decision.log_fields())
        metrics.add_metric(name="ProvisioningAdmitted", unit=MetricUnit.Count, value=1)
    else:
        logger.warning("provisioning refused", extra=decision.log_fields())
        metrics.add_metric(name="ProvisioningRefused", unit=MetricUnit.Count, value=1)
    return decision.answer.to_json()
