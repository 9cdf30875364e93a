"""`edgeloop recipe`: the Greengrass v2 recipe of the device agent, for one deployed stack.

The component installs the edgeloop-agent wheel (packaging/agent/pyproject.toml) from
the stack's artifact bucket (its ArtifactBucket output) under `greengrass/`, with the
interpreter the images need as the wheel's extra, so a platform team renders, uploads
and registers it without editing anything:

    make wheels
    edgeloop recipe --stack NAME --upload build/wheels/edgeloop_agent-0.1.0-py3-none-any.whl \
      > recipe.yaml
    aws greengrassv2 create-component-version --inline-recipe fileb://recipe.yaml
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

from edgeloop import __version__
from edgeloop.cli.errors import CliError
from edgeloop.cli.stack import ARTIFACT_BUCKET, add_stack_option, resolve

TEMPLATE = "greengrass-recipe.yaml"
# The device's distribution and its wheel's file name (pure Python: one wheel for all).
AGENT_DISTRIBUTION = "edgeloop-agent"
# edgeloop-agent's extras, one per model interpreter (packaging/agent/pyproject.toml).
INTERPRETERS = ("litert", "tflite214")
DEFAULT_PREFIX = "greengrass/"


def agent_wheel(version: str = __version__) -> str:
    return f"{AGENT_DISTRIBUTION.replace('-', '_')}-{version}-py3-none-any.whl"


def template() -> str:
    return files("edgeloop.cli").joinpath(TEMPLATE).read_text(encoding="utf-8")


def render(bucket: str, prefix: str = DEFAULT_PREFIX, interpreter: str = INTERPRETERS[0]) -> str:
    """The recipe whose artifact is s3://BUCKET/PREFIX<wheel> and whose default
    interpreter extra is `interpreter`."""
    if interpreter not in INTERPRETERS:
        raise CliError(f"interpreter {interpreter!r}: choose one of {', '.join(INTERPRETERS)}")
    wheel = agent_wheel()
    return Template(template()).substitute(
        version=__version__,
        wheel=wheel,
        interpreter=interpreter,
        artifact_uri=f"s3://{bucket}/{artifact_key(prefix)}",
    )


def artifact_key(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}{agent_wheel()}"


def _recipe(args: argparse.Namespace) -> int:
    bucket = resolve(
        args,
        option="bucket",
        output=ARTIFACT_BUCKET,
        env="EDGELOOP_ARTIFACT_BUCKET",
        what="artifact bucket (where the component's wheel is)",
    )
    text = render(bucket, args.prefix, args.interpreter)
    if args.upload:
        wheel = Path(args.upload)
        if wheel.name != agent_wheel():
            raise CliError(
                f"--upload {wheel}: the recipe installs {agent_wheel()} (make wheels "
                "builds it in build/wheels/)"
            )
        if not wheel.is_file():
            raise CliError(f"--upload {wheel}: no such file (make wheels)")
        import boto3

        from edgeloop.cli.aws import aws_errors

        with aws_errors(f"s3://{bucket}/{artifact_key(args.prefix)}"):
            boto3.client("s3", endpoint_url=args.endpoint_url).upload_file(
                str(wheel), bucket, artifact_key(args.prefix)
            )
        print(f"uploaded {wheel} to s3://{bucket}/{artifact_key(args.prefix)}", file=sys.stderr)
    sys.stdout.write(text)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "recipe",
        help="the device agent's Greengrass v2 recipe for a deployed stack",
        description="Print the com.edgeloop.Agent component recipe, its artifact the "
        f"{agent_wheel()} wheel in the stack's artifact bucket. --upload puts the wheel "
        "there first. AWS settings come from the usual environment.",
    )
    add_stack_option(p)
    p.add_argument(
        "--bucket",
        default=None,
        help="the artifact bucket (default: the stack's ArtifactBucket output, else "
        "$EDGELOOP_ARTIFACT_BUCKET)",
    )
    p.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        help="key prefix of the wheel in the bucket (default: %(default)s)",
    )
    p.add_argument(
        "--interpreter",
        choices=INTERPRETERS,
        default=INTERPRETERS[0],
        help="the default model interpreter: litert (LiteRT), or tflite214 (tflite-runtime "
        "2.14, for images that keep NumPy < 2); a deployment may override it "
        "(default: %(default)s)",
    )
    p.add_argument("--upload", default=None, metavar="WHEEL", help="upload this wheel first")
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="AWS endpoint to use instead of AWS's own (e.g. the local cloud's moto server)",
    )
    p.set_defaults(run=_recipe)
