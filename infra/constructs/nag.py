"""cdk-nag suppressions, each with the reason it is acceptable."""

from __future__ import annotations

from collections.abc import Sequence

from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import IConstruct

AppliesTo = str | RegexAppliesTo


def suppress(
    construct: IConstruct, rule: str, reason: str, applies_to: Sequence[AppliesTo] = ()
) -> None:
    NagSuppressions.add_resource_suppressions(
        construct,
        [NagPackSuppression(id=rule, reason=reason, applies_to=list(applies_to) or None)],
        apply_to_children=True,
    )


def matching(pattern: str) -> RegexAppliesTo:
    return RegexAppliesTo(regex=f"/{pattern}/g")


# The wildcards our least-privilege grants still contain, and why each is the narrowest.
SCOPED_WILDCARDS: tuple[tuple[AppliesTo, str], ...] = (
    ("Resource::*", "X-Ray tracing and iot:DescribeEndpoint accept no narrower resource"),
    (
        matching(
            r"^Resource::<.*\.Arn>\/(data|reference|quarantine|models\/tuf|models\/tuf\/targets|registry)\/\*$"
        ),
        "object access is limited to one key prefix of one bucket",
    ),
    (matching(r"^Resource::<.*\.Arn>\/index\/\*$"), "the fleet table's own indexes"),
    (
        matching(r"^Resource::arn:<AWS::Partition>:iot:.+:topic\/edgeloop\/.*$"),
        "publishing is limited to edgeloop's nudge or per-thing answer topics",
    ),
    (
        matching(r"^Resource::arn:<AWS::Partition>:iot:.+:thing\/\*$"),
        "reading a device's enrolment: any thing may send a request, and which one is only "
        "known from the topic at run time; the actions are read-only (DescribeThing, "
        "ListThingGroupsForThing, and the provisioning hook's ListThingPrincipals)",
    ),
    (
        matching(r"^Resource::arn:<AWS::Partition>:iot:.+:cert\/\*$"),
        "the provisioning hook asks whether a serial's thing still holds an active "
        "certificate: which certificates are attached is only known at run time; the "
        "action is read-only (DescribeCertificate)",
    ),
)


def suppress_scoped_wildcards(construct: IConstruct) -> None:
    for applies_to, reason in SCOPED_WILDCARDS:
        suppress(construct, "AwsSolutions-IAM5", reason, [applies_to])
