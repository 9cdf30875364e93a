"""AWS errors as one line that says what to set, for every command that talks to AWS."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edgeloop.cli.errors import EXIT_FAILED, CliError


@contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Turn botocore's exceptions inside the block into a CliError naming the fix.

    `what` names the resource the command reads (e.g. "fleet table edgeloop-fleet"),
    so "not found" says which one.
    """
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    try:
        yield
    except NoRegionError as exc:
        raise CliError(
            "no AWS region: set AWS_DEFAULT_REGION (or region in ~/.aws/config, or AWS_PROFILE)",
            "aws_no_region",
            EXIT_FAILED,
        ) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise CliError(
            "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (see `aws configure`)",
            "aws_no_credentials",
            EXIT_FAILED,
        ) from exc
    except EndpointConnectionError as exc:
        raise CliError(
            f"cannot reach the AWS endpoint {exc.kwargs.get('endpoint_url', '')}: check "
            "--endpoint-url (for `edgeloop local up`, is it still running?) or the network",
            "aws_unreachable",
            EXIT_FAILED,
        ) from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", exc))
        if code == "ResourceNotFoundException":
            raise CliError(
                f"{what} does not exist in this account and region: check the name "
                "(a stack output) and AWS_DEFAULT_REGION",
                "aws_not_found",
                EXIT_FAILED,
            ) from exc
        if code in (
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "ExpiredTokenException",
            "InvalidClientTokenId",
            "AccessDeniedException",
        ):
            raise CliError(
                f"AWS refused the credentials ({code}: {message}): set AWS_PROFILE or "
                "fresh AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN",
                "aws_denied",
                EXIT_FAILED,
            ) from exc
        raise CliError(
            f"AWS error reading {what}: {code}: {message}", "aws_error", EXIT_FAILED
        ) from exc
