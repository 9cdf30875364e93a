"""moto's server with IAM authorization on: every request is checked against its caller's policy.

Run as its own process (`python -m edgeloop.local.moto_iam --port N`): moto keeps
its authorization switch and request count in module globals, so a server with
IAM on must not share an interpreter with one that has it off.

moto's IAM mode checks a request that carries an `Authorization` header. A
presigned request (a device's upload grant) carries its credential in the query
string or the POST form instead, and moto's IAM mode answers it with a server
error. AWS authorizes such a request as the principal that signed it, so this
module adds exactly that to moto and nothing else: the signer's access key is
looked up, and its policies are evaluated for the action on the object's ARN (a
POST's key is in its form, so the object, not the bucket, is the resource). The
signature itself is not recomputed here; moto checks a presigned URL's expiry
and signed headers as it always does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3

OPERATOR = "edgeloop-operator"
ADMIN_STATEMENTS: list[dict[str, Any]] = [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
# moto evaluates the resource of S3 and SQS requests; for every other service it
# asks whether the action is allowed on "*". A statement scoped to a table or a key
# would then never match, so for those services an Allow keeps its actions and loses
# its resources here. Their resources are asserted on the template instead
# (tests/infrastructure).
RESOURCE_CHECKED = ("s3", "sqs")
# Where moto names the action it checks differently from IAM, each IAM action also
# grants moto's name for it:
# - IAM names the IoT data plane's actions `iot:`; moto names them after the signing
#   service, `iotdata:`, and has no retained variant of Publish;
# - AWS authorizes a DynamoDB transaction item by item, as the item actions it holds;
#   moto checks the operation's own name. A role allowed any write action may send a
#   transaction here; which writes it holds is the role's item actions' business;
# - S3 authorizes ListObjectsV2 as s3:ListBucket; moto checks s3:ListObjectsV2.
MOTO_NAMES = {
    "iot:Publish": "iotdata:Publish",
    "iot:RetainPublish": "iotdata:Publish",
    "dynamodb:PutItem": "dynamodb:TransactWriteItems",
    "dynamodb:UpdateItem": "dynamodb:TransactWriteItems",
    "dynamodb:DeleteItem": "dynamodb:TransactWriteItems",
    "dynamodb:ConditionCheckItem": "dynamodb:TransactWriteItems",
    "dynamodb:GetItem": "dynamodb:TransactGetItems",
    "s3:ListBucket": "s3:ListObjectsV2",
}


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str

    def as_env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def as_kwargs(self) -> dict[str, str]:
        return {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }


def for_moto(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statements as moto can evaluate them (see RESOURCE_CHECKED)."""
    out: list[dict[str, Any]] = []
    for statement in statements:
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else list(actions)
        actions += sorted({MOTO_NAMES[a] for a in actions if a in MOTO_NAMES} - set(actions))
        checked = [a for a in actions if a.split(":", 1)[0] in RESOURCE_CHECKED]
        unchecked = [a for a in actions if a not in checked]
        if checked:
            out.append({**statement, "Action": checked})
        if unchecked:
            widened = statement["Effect"] == "Allow"
            out.append(
                {
                    **statement,
                    "Action": unchecked,
                    "Resource": "*" if widened else statement["Resource"],
                }
            )
    return out


def create_principal(
    iam: Any, name: str, statements: list[dict[str, Any]], managed: tuple[str, ...] = ()
) -> Credentials:
    """An IAM user that stands for a role: the role's statements and AWS managed
    policies (moto carries AWS's documents for them), its own access key.

    Lambda runs a function with its role's temporary credentials; moto's IAM mode
    evaluates a user's policies the same way, without STS in the path.
    """
    iam.create_user(UserName=name)
    for arn in managed:
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
    if statements:
        iam.put_user_policy(
            UserName=name,
            PolicyName="role",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": for_moto(statements)}),
        )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def enable_authorization(endpoint: str) -> None:
    """From now on every request to this server is authorized against IAM."""
    import requests

    answer = requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
    answer.raise_for_status()


def operator(endpoint: str, region: str) -> Credentials:
    """The platform team's principal: allowed everything, made before authorization is on."""
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    return create_principal(iam, OPERATOR, ADMIN_STATEMENTS)


def _presigned_credential(handler: Any) -> str | None:
    """The access key id a presigned request was signed with by SigV4, or None.

    A SigV2 presigned request (`AWSAccessKeyId`, `Signature`) is refused, as S3
    refuses it on buckets created since SigV2's deprecation: moto accepts it, so a
    grant signed the legacy way would pass every local test and fail in AWS.
    """
    query = parse_qs(urlparse(handler.uri).query)
    for source in (query, handler.querystring):
        for name in ("X-Amz-Credential", "x-amz-credential"):
            if name in source:
                return str(source[name][0]).split("/", 1)[0]
    return None


def _authorize_presigned(handler: Any, resource: str) -> None:
    from moto.iam.access_control import (
        CreateAccessKeyFailure,
        IAMPolicy,
        IAMUserAccessKey,
        PermissionResult,
    )
    from moto.s3.exceptions import S3AccessDeniedError, S3InvalidAccessKeyIdError

    key_id = _presigned_credential(handler)
    if key_id is None:
        raise S3AccessDeniedError()
    try:
        principal = IAMUserAccessKey(handler.current_account, "aws", key_id, headers={})
    except CreateAccessKeyFailure:
        raise S3InvalidAccessKeyIdError() from None
    if handler.method == "POST" and "key" in handler.querystring:
        # A POST names the bucket in its URL and the object in its form.
        resource = f"{resource}/{handler.querystring['key'][0]}"
    # moto names the S3 action it is authorizing in `data` (a form POST is PutObject).
    action = f"s3:{handler.data.get('Action') or handler._get_action()}"
    permitted = False
    for policy in principal.collect_policies():
        result = IAMPolicy(policy).is_action_permitted(action, resource)
        if result == PermissionResult.DENIED:
            raise S3AccessDeniedError()
        permitted = permitted or result == PermissionResult.PERMITTED
    if not permitted:
        raise S3AccessDeniedError()


def _install_presigned_authorization() -> None:
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequest

    check_signature = IAMRequest.check_signature

    def check_signature_unless_iot(self: Any) -> None:
        # moto recomputes the signature of an IoT REST call from the wrong canonical
        # request (the query string and the x-amzn-principal header are lost) and
        # refuses DescribeThing, UpdateCertificate, AttachThingPrincipal and the
        # like; the caller's key and its policy are still checked.
        if self._service != "iot":
            check_signature(self)

    IAMRequest.check_signature = check_signature_unless_iot  # type: ignore[method-assign]

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        enforcing = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
        if enforcing and "Authorization" not in self.headers:
            _authorize_presigned(self, resource)
            return
        original(self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authorize  # type: ignore[method-assign]


# The services the local cloud uses, whose state a restart keeps.
# How often a serving moto writes its state (when it changed): what a cloud killed
# outright, rather than stopped, may lose.
SAVE_EVERY_SECONDS = 30.0
PERSISTED = (
    "s3",
    "dynamodb",
    "dynamodbstreams",
    "sqs",
    "kms",
    "iam",
    "iot",
    "iot-data",
    "sagemaker",
    "sts",
)


def private_key_from_der(der: bytes) -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_der_private_key(der, None)


def _picklable() -> dict[type, Any]:
    """How the two kinds of object in moto's state that pickle refuses are carried: a
    KMS key's private key (as its DER bytes) and a queue's lock (a new one)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    def private_key(key: Any) -> tuple[Any, tuple[bytes]]:
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # By its importable name: run as `-m`, this module is also `__main__`.
        from edgeloop.local.moto_iam import private_key_from_der

        return private_key_from_der, (der,)

    reducers: dict[type, Any] = {
        type(threading.RLock()): lambda _: (threading.RLock, ()),
        type(threading.Lock()): lambda _: (threading.Lock, ()),
    }
    for key in (
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(65537, 2048),
        ed25519.Ed25519PrivateKey.generate(),
    ):
        reducers[type(key)] = private_key
    return reducers


def save_state(path: Path, unless: str | None = None) -> str:
    """Every persisted service's backends, written whole (atomically) to `path`, unless
    their pickle's SHA-256 is `unless` (the last written: nothing changed). Returns
    that digest. While moto serves, a request may change a backend under the pickler: the
    save is tried again, and a request in flight at that instant may be half in it
    (the save at stop is exact)."""
    import copyreg
    import io
    import pickle

    from moto.backends import get_backend

    for attempt in range(5):
        state = {name: dict(get_backend(name)) for name in PERSISTED}  # type: ignore[call-overload]
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = {**copyreg.dispatch_table, **_picklable()}
        try:
            pickler.dump(state)
            break
        except RuntimeError:  # "dictionary changed size during iteration"
            if attempt == 4:
                raise
            time.sleep(0.05)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    if digest != unless:
        staged = path.with_suffix(".new")
        staged.write_bytes(data)
        staged.replace(path)
    return digest


def load_state(path: Path) -> None:
    """Put the backends `save_state` wrote back into moto, before it serves a request."""
    import pickle

    from moto.backends import get_backend

    # Our own file, in the cloud's own directory: trusted as the cloud itself is.
    state = pickle.loads(path.read_bytes())
    for name, accounts in state.items():
        backends = get_backend(name)
        backends.clear()
        backends.update(accounts)


def serve(
    port: int,
    host: str = "127.0.0.1",
    state: Path | None = None,
    save_every: float = SAVE_EVERY_SECONDS,
) -> None:
    """Serve until SIGTERM; with `state`, start from that file if it exists, write it
    every `save_every` seconds while something changed (a cloud killed outright loses
    at most that long), and write it back on the way out, so the local cloud's AWS
    outlives the process."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    _install_presigned_authorization()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if state is not None and state.is_file():
        load_state(state)
        # The principals are in the state already: every request is authorized from
        # the first (the bootstrap's unauthorized requests happened in the first run).
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    written = None
    if state is not None and state.is_file():
        written = hashlib.sha256(state.read_bytes()).hexdigest()
    while not stopped.wait(save_every if state is not None else None):
        assert state is not None
        try:
            written = save_state(state, unless=written)
        except Exception:
            # A failed periodic save leaves the last good file; the stop's save is next.
            logging.getLogger(__name__).exception("event=state_save_failed path=%s", state)
    server.stop()
    if state is not None:
        save_state(state, unless=written)


def main() -> None:
    # AWS managed policies (a provisioning role's AWSIoTThingsRegistration) exist in
    # moto's IAM only when it is told to load them.
    os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--state", type=Path, default=None, help="keep moto's state in this file across runs"
    )
    parser.add_argument(
        "--save-every",
        type=float,
        default=SAVE_EVERY_SECONDS,
        help="with --state: seconds between saves while serving (a kill loses at most this)",
    )
    args = parser.parse_args()
    serve(args.port, args.host, args.state, args.save_every)


if __name__ == "__main__":
    main()
