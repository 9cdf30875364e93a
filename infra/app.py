"""The CDK app (`cdk.json` runs `python -m infra.app`).

Synthesizes without Docker or AWS credentials.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

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


def synth_template(outdir: Path) -> Path:
    """Synthesize the stack and keep its template where the local cloud and the
    packaged-function tests read it (`build/lambda/edgeloop.template.json`)."""
    with tempfile.TemporaryDirectory(prefix="edgeloop-synth-") as cdk_out:
        app = build_app(cdk_out)
        stack_name = app.node.children[0].node.id
        app.synth()
        outdir.mkdir(parents=True, exist_ok=True)
        target = outdir / f"{stack_name}.template.json"
        shutil.copyfile(Path(cdk_out) / f"{stack_name}.template.json", target)
    return target


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--template-into":
        print(synth_template(Path(sys.argv[2])))
    else:
        build_app().synth()
