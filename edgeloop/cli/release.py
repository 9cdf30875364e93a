"""`edgeloop release make | show`: a training run as a signed release, laid out like the CDN.

`make` writes, under OUT, exactly what the cloud publishes under its artifact
bucket: `models/{model}/{version}/` with model.tflite, model.tflite.zst, a
patch from each base version and the signed manifest.json, plus
`models/{model}/latest.json`. OUT can then be served as the CDN base URL
(`python -m http.server -d OUT`), and `edgeloop verify` / `edgeloop-agent
verify` can be tried on a real manifest.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from edgeloop.cli.errors import EXIT_FAILED, CliError, emit
from edgeloop.contract import ContractError, Manifest, TrustedKeys, public_key_pem

DEFAULT_BASES = 3


@dataclass(frozen=True)
class Version:
    """One published version directory, `models/{model}/{version}/`."""

    directory: Path
    manifest: Manifest
    raw: bytes

    @property
    def model_bytes(self) -> bytes:
        return (self.directory / "model.tflite").read_bytes()


def read_version(directory: Path) -> Version:
    path = directory / "manifest.json"
    try:
        raw = path.read_bytes()
        manifest = Manifest.from_json(json.loads(raw))
    except FileNotFoundError as exc:
        raise CliError(f"{directory}: no manifest.json (not a release version directory)") from exc
    except ValueError as exc:
        raise CliError(f"{path}: not a manifest ({exc})", "malformed") from exc
    return Version(directory, manifest, raw)


def versions_under(root: Path) -> list[Version]:
    """Every version below `root`: a release root, a model directory or a version directory."""
    if (root / "manifest.json").is_file():
        return [read_version(root)]
    found = [read_version(p.parent) for p in sorted(root.glob("**/manifest.json"))]
    return sorted(found, key=lambda v: (v.manifest.model, v.manifest.version))


def _run_record(run: Path) -> dict[str, Any]:
    path = run / "run.json"
    if not path.is_file():
        raise CliError(f"{run}: no run.json (pass the --out directory of `edgeloop train`)")
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    decision = (record.get("gate") or {}).get("decision")
    if decision != "promoted" or not (run / "model.tflite").is_file():
        reason = (record.get("gate") or {}).get("reason") or record.get("reason", "")
        raise CliError(
            f"{run}: the run was not promoted ({reason}); only promoted models are released",
            "not_promoted",
            EXIT_FAILED,
        )
    return record


def _make(args: argparse.Namespace) -> int:
    from edgeloop.contract.signers import LocalSigner, sign_manifest
    from edgeloop.factory.config import parse_config
    from edgeloop.factory.deltas import plan_deltas
    from edgeloop.factory.release import (
        build_manifest,
        compressed_file,
        delta_files,
        manifest_key,
        version_prefix,
    )

    run = Path(args.run_dir)
    record = _run_record(run)
    config = parse_config(record["config"], str(run / "run.json"))
    model = config.model.name
    try:
        signer = LocalSigner.from_pem(Path(args.key).read_bytes())
    except FileNotFoundError as exc:
        raise CliError(f"--key {args.key}: no such file (make one with `edgeloop keygen`)") from exc
    out = Path(args.out)
    earlier = [v for v in versions_under(out / "models" / model) if v.manifest.model == model]
    given = [v for b in args.base for v in versions_under(Path(b))]
    if any(v.manifest.model != model for v in given):
        raise CliError(f"--base: every base must be a release of {model!r}")
    bases = {v.manifest.version: v for v in (given or earlier[-args.bases :])}
    known = [v.manifest.version for v in [*earlier, *given]]
    version = args.version or (max(known) + 1 if known else 1)
    if version in [v.manifest.version for v in earlier]:
        raise CliError(
            f"{out}: {model} v{version} is already released; versions are immutable", "exists"
        )
    if any(b >= version for b in bases):
        raise CliError(f"--version {version} must be above every base ({sorted(bases)})")

    tflite = (run / "model.tflite").read_bytes()
    plan = plan_deltas(tflite, {v: b.model_bytes for v, b in bases.items()})
    files: dict[str, bytes] = {version_prefix(model, version) + "model.tflite": tflite}
    deltas = []
    for ref, data in delta_files(model, version, plan):
        files[ref.path] = data
        deltas.append(ref)
    compressed, compressed_data = compressed_file(model, version, plan)
    files[compressed.path] = compressed_data
    manifest = build_manifest(
        config,
        version,
        tflite,
        deltas,
        record,
        timedelta(days=args.valid_days),
        compressed=compressed,
    )
    signed = sign_manifest(manifest, signer)
    files[manifest_key(model, version)] = signed.to_bytes()
    latest = {"version": version, "manifest": manifest_key(model, version)}
    files[f"models/{model}/latest.json"] = json.dumps(latest).encode()
    for key, data in files.items():
        target = out / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (out / "manifest-public.pem").write_bytes(public_key_pem(signer.public_key()))
    directory = out / version_prefix(model, version)
    summary = {
        "model": model,
        "version": version,
        "directory": str(directory),
        "manifest": str(directory / "manifest.json"),
        "public_key": str(out / "manifest-public.pem"),
        "key_id": signer.key_id,
        "bases": sorted(bases),
        "patches": [
            {"from_version": d.from_version, "codec": d.codec, "size": d.size} for d in deltas
        ],
        "dropped": [{"from_version": v, "reason": r} for v, r in plan.dropped],
        "size": len(tflite),
        "compressed_size": plan.compressed_full_size,
    }
    if args.json:
        emit(summary)
        return 0
    print(f"released {model} v{version} in {directory}")
    print(f"  model.tflite {len(tflite)} B, model.tflite.zst {plan.compressed_full_size} B")
    for d in deltas:
        share = d.size / max(1, plan.compressed_full_size)
        print(
            f"  patch from v{d.from_version}: {d.codec}, {d.size} B "
            f"({share:.0%} of the compressed model)"
        )
    for v, reason in plan.dropped:
        print(f"  no patch from v{v}: {reason}")
    print(f"  manifest.json signed by {signer.key_id}; devices pin {out / 'manifest-public.pem'}")
    return 0


def _describe(v: Version, trusted: TrustedKeys | None) -> dict[str, Any]:
    m = v.manifest
    verified: bool | str = "no key given"
    if trusted is not None:
        try:
            trusted.verify(v.raw)
            verified = True
        except ContractError as exc:
            verified = f"{type(exc).__name__}: {exc}"
    compressed = m.artifact.compressed
    return {
        "model": m.model,
        "version": m.version,
        "directory": str(v.directory),
        "created_at": m.created_at,
        "expires_at": m.expires_at,
        "input": m.input.to_json(),
        "output": m.output.to_json(),
        "artifact": m.artifact.to_json(),
        "compressed_size": compressed.size if compressed else None,
        "patches": [d.to_json() for d in m.deltas],
        "metrics": dict(m.metrics),
        "decision_threshold": m.decision_threshold,
        "health_check_rows": sum(len(h.inputs) for h in m.health_checks),
        "key_id": m.signature.key_id if m.signature else None,
        "verified": verified,
    }


def _show(args: argparse.Namespace) -> int:
    root = Path(args.release)
    if not root.exists():
        raise CliError(f"{root}: no such release directory")
    found = versions_under(root)
    if not found:
        raise CliError(f"{root}: no manifest.json below it (make one with `edgeloop release make`)")
    keys = list(args.key or [])
    for candidate in (
        root / "manifest-public.pem",
        *(p / "manifest-public.pem" for p in root.parents),
    ):
        if not keys and candidate.is_file():
            keys = [str(candidate)]
    trusted = TrustedKeys.from_pem(*(Path(k).read_bytes() for k in keys)) if keys else None
    docs = [_describe(v, trusted) for v in found]
    if args.json:
        emit({"release": str(root), "keys": keys, "versions": docs})
        return 0
    for d in docs:
        compressed = d["compressed_size"]
        print(f"{d['model']} v{d['version']}  ({d['directory']})")
        print(f"  created {d['created_at']}, expires {d['expires_at']}")
        names = ", ".join(d["input"]["names"][:8]) or "unnamed"
        if len(d["input"]["names"]) > 8:
            names += ", …"
        names = f"{d['input']['shape'][-1]} features ({names})"
        print(f"  input: {names}")
        outputs = ", ".join(d["output"]["names"])
        print(
            f"  output: {outputs}"
            + (
                f" (alarm above {d['decision_threshold']:.4f})"
                if d["decision_threshold"] is not None
                else ""
            )
        )
        print(
            f"  model.tflite {d['artifact']['size']} B, sha256 {d['artifact']['sha256'][:16]}…, "
            f"compressed (model.tflite.zst) {compressed} B"
        )
        for p in d["patches"]:
            share = p["size"] / max(1, compressed or d["artifact"]["size"])
            print(
                f"  patch from v{p['from_version']}: {p['codec']} {p['size']} B "
                f"({share:.0%} of the compressed model)"
            )
        if not d["patches"]:
            print("  no patches (a device fetches the compressed model)")
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in d["metrics"].items())
        print(f"  metrics: {metrics or '-'}; health check: {d['health_check_rows']} golden rows")
        verdict = "verified" if d["verified"] is True else f"not verified ({d['verified']})"
        print(f"  signature: key {d['key_id']}, {verdict}")
    return 0 if trusted is None or all(d["verified"] is True for d in docs) else EXIT_FAILED


def register(sub: Any, json_help: str) -> None:
    p = sub.add_parser(
        "release",
        help="turn a training run into a signed release laid out like the CDN, and show one",
        description="make: sign a promoted run as models/{model}/{version}/ under OUT, with "
        "patches from earlier versions; show: print a release and check its signatures.",
    )
    rel = p.add_subparsers(dest="release_command", required=True, metavar="ACTION")
    m = rel.add_parser(
        "make",
        help="sign a promoted `edgeloop train --out` run as a release under OUT",
        description="Writes OUT/models/{model}/{version}/ (model.tflite, model.tflite.zst, "
        "from-N.{codec} patches, signed manifest.json), OUT/models/{model}/latest.json and "
        "OUT/manifest-public.pem. Serve OUT as the CDN base URL.",
    )
    m.add_argument(
        "run_dir", metavar="RUN", help="the --out directory of a promoted `edgeloop train`"
    )
    m.add_argument("--key", required=True, help="PEM private key from `edgeloop keygen`")
    m.add_argument("-o", "--out", required=True, help="the release root (the CDN base directory)")
    m.add_argument(
        "--base",
        action="append",
        default=[],
        help="an earlier release (version directory or root) to make a patch from; repeatable "
        "(default: the last --bases versions already under OUT)",
    )
    m.add_argument(
        "--bases",
        type=int,
        default=DEFAULT_BASES,
        help="how many earlier versions under OUT get a patch when no --base is given "
        "(default: %(default)s)",
    )
    m.add_argument(
        "--version", type=int, default=None, help="version number (default: one above the newest)"
    )
    m.add_argument(
        "--valid-days",
        type=int,
        default=30,
        help="days until the manifest expires and devices refuse it (default: %(default)s)",
    )
    m.add_argument("--json", action="store_true", help=json_help)
    m.set_defaults(run=_make)

    s = rel.add_parser("show", help="print a release's versions, patches and signature check")
    s.add_argument("release", help="a release root, model directory or version directory")
    s.add_argument(
        "--key",
        action="append",
        help="PEM public key to verify with, repeatable (default: manifest-public.pem in the "
        "release root)",
    )
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(run=_show)
