"""`edgeloop trust`: the platform team's root key ceremony and the repository's status.

Root key files never leave the people who hold them; these commands read them
locally and write only signed metadata to the store (the artifact bucket, or a
directory with --dir). See README, "Trust: keys and the key ceremony".
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from edgeloop.cli.errors import EXIT_FAILED, CliError, emit
from edgeloop.cli.stack import ARTIFACT_BUCKET, ONLINE_KEY_ARN, add_stack_option, resolve

PASSPHRASE_ENV = "EDGELOOP_ROOT_KEY_PASSPHRASE"


def _store(args: argparse.Namespace) -> Any:
    from edgeloop.trust import DirectoryStore, S3Store

    if args.dir:
        return DirectoryStore(Path(args.dir))
    bucket = resolve(
        args,
        option="bucket",
        output=ARTIFACT_BUCKET,
        env="EDGELOOP_ARTIFACT_BUCKET",
        what="repository (the artifact bucket, or a local --dir)",
    )
    import boto3

    return S3Store(boto3.client("s3"), bucket, args.prefix)


def _passphrase(args: argparse.Namespace, confirm: bool = False) -> bytes | None:
    if getattr(args, "unencrypted", False):
        print(
            "warning: root key files are written UNENCRYPTED; fine for a demo, never for a fleet",
            file=sys.stderr,
        )
        return None
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        value = getpass.getpass("root key passphrase: ")
        if confirm and value != getpass.getpass("again: "):
            raise CliError("the passphrases differ")
    if not value:
        raise CliError(f"an empty passphrase; set {PASSPHRASE_ENV} or pass --unencrypted")
    return value.encode()


def _online_key(args: argparse.Namespace) -> Any:
    import boto3

    from edgeloop.trust import KmsSigner

    key_id = resolve(
        args,
        option="kms-key-id",
        output=ONLINE_KEY_ARN,
        env="EDGELOOP_ONLINE_KEY_ARN",
        what="online KMS key",
    )
    return KmsSigner.of_key(boto3.client("kms"), key_id).public_key


def _load_key(args: argparse.Namespace) -> Any:
    from edgeloop.trust import load_root_key
    from edgeloop.trust.keys import is_encrypted

    path = Path(args.key)
    if path.exists() and not is_encrypted(path.read_bytes()):
        print(f"warning: {path} is an unencrypted root key", file=sys.stderr)
        return load_root_key(path, None)
    return load_root_key(path, _passphrase(args))


def _trust_errors(run: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        from edgeloop.trust import KeyFileError, TrustError

        try:
            code: int = run(args)
        except (TrustError, KeyFileError) as exc:
            raise CliError(str(exc), type(exc).__name__, EXIT_FAILED) from exc
        return code

    return wrapped


def _say(args: argparse.Namespace, doc: dict[str, Any], line: str) -> int:
    emit(doc) if args.json else print(line)
    return 0


def _init(args: argparse.Namespace) -> int:
    from edgeloop.trust import RootCeremony, generate_root_key

    keys_dir = Path(args.keys)
    passphrase = _passphrase(args, confirm=True)
    signers = [
        generate_root_key(keys_dir / f"root-{i + 1}.pem", passphrase) for i in range(args.count)
    ]
    root = RootCeremony(_store(args)).init(signers, args.threshold, _online_key(args))
    ids = [s.public_key.keyid for s in signers]
    return _say(
        args,
        {"root_version": root.signed.version, "root_keys": ids, "keys_dir": str(keys_dir)},
        f"root v1: {args.threshold} of {args.count} keys in {keys_dir}; hand one file to each "
        "holder and ship tuf/metadata/1.root.json with every device",
    )


def _status_doc(ceremony: Any, pending: Any) -> dict[str, Any]:
    root = ceremony.trusted().signed
    doc: dict[str, Any] = {
        "root_version": root.version,
        "root_expires": root.expires.isoformat(),
        "root_keys": root.roles["root"].keyids,
        "threshold": root.roles["root"].threshold,
        "online_key": root.roles["timestamp"].keyids,
    }
    if pending is not None:
        s = ceremony.status(pending)
        doc["pending"] = {
            "version": s.version,
            "old_signatures": f"{s.old_signed}/{s.old_needed}",
            "new_signatures": f"{s.new_signed}/{s.new_needed}",
        }
    return doc


def _rotate_online(args: argparse.Namespace) -> int:
    from edgeloop.trust import RootCeremony

    ceremony = RootCeremony(_store(args))
    pending = ceremony.replace_online_key(_online_key(args))
    return _say(
        args,
        _status_doc(ceremony, pending),
        f"root v{pending.signed.version} pending: collect root signatures with "
        "`edgeloop trust sign-root`; then point the functions at the new KMS key",
    )


def _rotate_root(args: argparse.Namespace) -> int:
    from edgeloop.trust import RootCeremony, generate_root_key

    ceremony = RootCeremony(_store(args))
    new = generate_root_key(Path(args.new_key), _passphrase(args, confirm=True))
    pending = ceremony.replace_root_key(args.old_key_id, new.public_key)
    return _say(
        args,
        _status_doc(ceremony, pending),
        f"root v{pending.signed.version} pending: it needs signatures from the old root's "
        f"threshold and the new one's (the new key {args.new_key} included)",
    )


def _sign_root(args: argparse.Namespace) -> int:
    from edgeloop.trust import RootCeremony

    ceremony = RootCeremony(_store(args))
    status = ceremony.sign_pending(_load_key(args))
    doc = {"version": status.version, "complete": status.complete}
    line = (
        f"root v{status.version} is trusted now"
        if status.complete
        else f"root v{status.version}: old {status.old_signed}/{status.old_needed}, "
        f"new {status.new_signed}/{status.new_needed} signatures"
    )
    return _say(args, doc, line)


def _status(args: argparse.Namespace) -> int:
    from edgeloop.trust import RootCeremony

    ceremony = RootCeremony(_store(args))
    doc = _status_doc(ceremony, ceremony.pending())
    lines = [f"{k}: {v}" for k, v in doc.items()]
    return _say(args, doc, "\n".join(lines))


def register(sub: Any, json_help: str) -> None:
    trust = sub.add_parser("trust", help="root keys, key rotation and the signed repository")
    commands = trust.add_subparsers(dest="trust_command", required=True, metavar="COMMAND")

    def add(name: str, help: str, run: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = commands.add_parser(name, help=help)
        p.add_argument(
            "--bucket",
            default=None,
            help="the artifact bucket (default: the stack's ArtifactBucket output, else "
            "$EDGELOOP_ARTIFACT_BUCKET)",
        )
        add_stack_option(p)
        p.add_argument("--prefix", default="models/", help="key prefix in the bucket")
        p.add_argument("--dir", default=None, help="a local directory instead of a bucket")
        p.add_argument("--json", action="store_true", help=json_help)
        p.set_defaults(run=_trust_errors(run))
        return p

    p = add("init", "generate the offline root keys and write root v1", _init)
    p.add_argument("--keys", required=True, help="directory for the new root key files")
    p.add_argument(
        "--kms-key-id",
        default=None,
        help="the online KMS key, ECC_NIST_P256 (default: the stack's OnlineKeyArn output, "
        "else $EDGELOOP_ONLINE_KEY_ARN)",
    )
    p.add_argument("--count", type=int, default=3, help="root keys (default: %(default)s)")
    p.add_argument("--threshold", type=int, default=2, help="signatures needed (default: 2)")
    p.add_argument("--unencrypted", action="store_true", help="plain key files (demo only)")

    p = add("rotate-online-key", "propose a root naming a new online KMS key", _rotate_online)
    p.add_argument("--kms-key-id", required=True, help="the new online KMS key")

    p = add("rotate-root-key", "propose a root replacing one root key", _rotate_root)
    p.add_argument("--old-key-id", required=True, help="the root key id to retire")
    p.add_argument("--new-key", required=True, help="file for the new root key")
    p.add_argument("--unencrypted", action="store_true", help="plain key file (demo only)")

    p = add("sign-root", "sign the pending root with one local key file", _sign_root)
    p.add_argument("--key", required=True, help="a root key file")

    add("status", "the trusted root, its keys, and any pending root", _status)
