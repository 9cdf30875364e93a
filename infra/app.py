"""The CDK app (`cdk.json` runs `python -m infra.app`).

Synthesizes without Docker or AWS credentials.
"""

from __future__ import annotations

import os

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.stack import EdgeloopStack


def build_app(outdir: str | None = None, context: dict[str, str] | None = None) -> cdk.App:
    """The app; `context` as `cdk synth -c key=value` would give it (`stack_name`)."""
    app = cdk.App(outdir=outdir, context=context)
    EdgeloopStack(
        app,
        app.node.try_get_context("stack_name") or "edgeloop",
        env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION"),
        ),
        description="edgeloop: continuous machine learning at the edge",
    )
    cdk.Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app


if __name__ == "__main__":
    build_app().synth()
