"""Monitoring: alarms on what needs a person, and one dashboard of the loop."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

NAMESPACE = "edgeloop"


def loop_metric(name: str, statistic: str = "Sum") -> cw.Metric:
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": "edgeloop"},
        statistic=statistic,
        period=Duration.minutes(5),
    )


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        dead_letters: sqs.IQueue,
        functions: dict[str, lambda_.IFunction],
        refused_promotions_alarm_at: int = 5,
    ) -> None:
        super().__init__(scope, id)
        self.alarms: list[cw.Alarm] = [
            cw.Alarm(
                self,
                "DeadLetters",
                alarm_description="Uploads that keep failing sit in the dead-letter queue",
                metric=dead_letters.metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(5)
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            cw.Alarm(
                self,
                "RefusedPromotions",
                alarm_description="Many retrains are refused by the gate: check data or config",
                metric=loop_metric("RefusedPromotions").with_(period=Duration.hours(1)),
                threshold=refused_promotions_alarm_at,
                evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        ]
        for name, function in functions.items():
            self.alarms.append(
                cw.Alarm(
                    self,
                    f"{name}Errors",
                    alarm_description=f"The {name} function is failing",
                    metric=function.metric_errors(period=Duration.minutes(5)),
                    threshold=1,
                    evaluation_periods=1,
                    comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                    treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
                )
            )
        dashboard = cw.Dashboard(self, "Dashboard")
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Training runs",
                left=[
                    loop_metric(m)
                    for m in ("RetrainRuns", "Promotions", "RefusedPromotions", "FailedRuns")
                ],
            ),
            cw.GraphWidget(
                title="Bytes shipped",
                left=[
                    loop_metric("FullArtifactBytes", "Average"),
                    loop_metric("PatchBytes", "Average"),
                ],
            ),
            cw.GraphWidget(
                title="Uploads",
                left=[
                    loop_metric(m)
                    for m in (
                        "UploadUrlsGranted",
                        "UploadUrlsRefused",
                        "DuplicateUploads",
                        "QuarantinedBatches",
                    )
                ],
            ),
            cw.GraphWidget(
                title="Fleet",
                left=[
                    loop_metric(m)
                    for m in (
                        "StatusRecorded",
                        "StatusIgnored",
                        "RolloutAll",
                        "RolloutAborted",
                        "RolloutStalled",
                    )
                ],
            ),
            cw.AlarmStatusWidget(title="Alarms", alarms=self.alarms),
        )
