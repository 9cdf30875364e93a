"""`edgeloop`: the cloud side's command line (keys, manifests, models, patches, demo)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edgeloop.cli import factory
from edgeloop.contract import ContractError, Manifest, TrustedKeys, public_key_pem
from edgeloop.contract.signers import LocalSigner, sign_manifest

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    private, public = out / "signing-key.pem", out / "manifest-public.pem"
    if private.exists() and not args.force:
        print(f"error: {private} exists; pass --force to replace it", file=sys.stderr)
        return EXIT_USAGE
    signer = LocalSigner.generate()
    private.write_bytes(signer.private_pem())
    private.chmod(0o600)
    public.write_bytes(public_key_pem(signer.public_key()))
    print(json.dumps({"key_id": signer.key_id, "private": str(private), "public": str(public)}))
    return 0


def _sign(args: argparse.Namespace) -> int:
    signer = LocalSigner.from_pem(Path(args.key).read_bytes())
    doc = json.loads(Path(args.manifest).read_text(encoding="utf-8"))
    doc.pop("signature", None)
    signed = sign_manifest(Manifest.from_json(doc), signer)
    Path(args.out).write_bytes(signed.to_bytes())
    print(json.dumps({"key_id": signer.key_id, "out": args.out}))
    return 0


def _verify(args: argparse.Namespace) -> int:
    trusted = TrustedKeys.from_pem(*(Path(k).read_bytes() for k in args.key))
    manifest = trusted.verify(Path(args.manifest).read_bytes())
    print(json.dumps({"model": manifest.model, "version": manifest.version, "verified": True}))
    return 0


def _fleet(args: argparse.Namespace) -> int:
    import boto3

    from functions.common.fleet import FleetTable

    if not args.table:
        print("error: pass --table or set EDGELOOP_FLEET_TABLE (a stack output)", file=sys.stderr)
        return EXIT_USAGE
    dynamodb = boto3.client("dynamodb", endpoint_url=args.endpoint_url)
    records = FleetTable(dynamodb, args.table).for_model(args.model)
    if args.json:
        print(json.dumps([r.to_json() for r in records], sort_keys=True))
        return 0
    columns = (
        "thing",
        "ring",
        "version",
        "health",
        "step",
        "target_version",
        "queue_depth",
        "last_seen",
    )
    docs = [r.to_json() for r in records]
    rows = [["-" if doc[c] is None else str(doc[c]) for c in columns] for doc in docs]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    for row in [list(columns), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if not rows:
        print(f"(no device has reported for model {args.model} yet)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from edgeloop.demo.live import LiveView
    from edgeloop.demo.run import DemoOptions, run_demo
    from edgeloop.demo.state import DemoFailed

    if not 1 <= args.devices <= 50:
        print("error: --devices must be between 1 and 50", file=sys.stderr)
        return EXIT_USAGE
    options = DemoOptions(
        scenario=args.scenario, devices=args.devices, out=Path(args.out), broker_url=args.broker
    )
    view = LiveView(enabled=False if args.no_live else None)
    try:
        report = run_demo(options, on_change=view.update)
    except KeyboardInterrupt:
        view.close()
        print("\nstopped: the local cloud, broker and devices were shut down", file=sys.stderr)
        return 130
    except DemoFailed as exc:
        view.close()
        print(f"demo failed: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    view.close()
    quality = ", ".join(
        f"{k} {v:.3f}" for k, v in report["quality"].items() if isinstance(v, float)
    )
    print(
        f"\n{report['scenario']}: every device on v{report['final_version']} after "
        f"{report['elapsed_seconds']} s; {quality}\n"
        f"report: {options.out}/report.md, report.json, report.png"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeloop",
        description="Cloud side of edgeloop: sign manifests, train and export models, "
        "make patches, run the local loop.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="make a local ECDSA P-256 manifest signing key (demo/tests)")
    p.add_argument("--out", default=".edgeloop/keys", help="directory for the two PEM files")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(run=_keygen)

    p = sub.add_parser("sign", help="sign a manifest JSON file with a local PEM key")
    p.add_argument("manifest")
    p.add_argument("--key", required=True, help="PEM private key from `edgeloop keygen`")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(run=_sign)

    p = sub.add_parser("verify", help="check a manifest's signature against pinned public keys")
    p.add_argument("manifest")
    p.add_argument("--key", action="append", required=True, help="PEM public key (repeatable)")
    p.set_defaults(run=_verify)

    p = sub.add_parser("fleet", help="which device runs which version, healthy or not, last seen")
    p.add_argument("--model", required=True)
    p.add_argument(
        "--table", default=os.environ.get("EDGELOOP_FLEET_TABLE"), help="fleet table name"
    )
    p.add_argument("--endpoint-url", default=None, help="AWS endpoint (moto for the local runtime)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_fleet)

    p = sub.add_parser("demo", help="the whole loop on one machine, no AWS account")
    p.add_argument("--scenario", choices=("digits", "anomaly"), default="digits")
    p.add_argument("--devices", type=int, default=5, help="simulated devices (real agents)")
    p.add_argument("--out", default="demo-report", help="where report.json, .md and .png go")
    p.add_argument("--broker", default=None, help="mqtt://host:port of another broker (mosquitto)")
    p.add_argument(
        "--no-live", action="store_true", help="plain log lines instead of the live view"
    )
    p.set_defaults(run=_demo)

    factory.register(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ContractError as exc:
        print(f"refused: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, ValueError) as exc:
        # ConfigError, NoUsableData and bad files land here with their own message.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    raise SystemExit(main())
