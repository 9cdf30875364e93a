"""`edgeloop release make | show`: training runs as a TUF repository on disk, laid out
like the CDN, and what a device would verify of it.

`make` signs a promoted run into OUT exactly as the cloud publishes into its
artifact bucket: the repository under `OUT/models/tuf/` (the model, its zstd
form, patches from earlier versions, its spec and golden inputs, and a rollout
pointer offering it to every device), with a local root (three unencrypted
root keys, two of which sign root) and a local online key under `OUT/keys/`
made on first use, and `OUT/root.json`, the trust anchor an agent ships with.
The cloud's own copies (what later patches start from) go to `OUT/registry/`,
as in its registry bucket. `python -m http.server -d OUT` serves OUT as an
agent's `artifacts.base_url`. A fleet's root is made offline with `edgeloop
trust init`, never like this.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from edgeloop.cli.errors import EXIT_FAILED, CliError, emit
from edgeloop.contract import Manifest, parse_manifest

DEFAULT_BASES = 2
ROOT_KEYS, ROOT_THRESHOLD = 3, 2


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


def registry_dir(out: Path, model: str) -> Path:
    return out / "registry" / model / "versions"


def released(out: Path, model: str) -> dict[int, Manifest]:
    """The versions of `model` released under OUT, from the registry copies."""
    found = {}
    for path in sorted(registry_dir(out, model).glob("*/manifest.json")):
        manifest = parse_manifest(path.read_bytes())
        found[manifest.version] = manifest
    return found


def _local_keys(out: Path) -> tuple[Any, list[Any]]:
    """The local online key and root keys under OUT/keys, made on first use."""
    from securesystemslib.signer import CryptoSigner

    from edgeloop.trust import generate_root_key, load_root_key

    keys = out / "keys"
    root_files = [keys / f"root-{i}.pem" for i in range(ROOT_KEYS)]
    online_file = keys / "online.pem"
    if not online_file.exists():
        for path in root_files:
            generate_root_key(path, None)
        generate_root_key(online_file, None)
    online: CryptoSigner = load_root_key(online_file, None)
    return online, [load_root_key(p, None) for p in root_files]


def _make(args: argparse.Namespace) -> int:
    from edgeloop.contract.trust_targets import REPOSITORY_PREFIX, RolloutPointer
    from edgeloop.factory.config import parse_config
    from edgeloop.factory.deltas import plan_deltas
    from edgeloop.factory.release import build_release
    from edgeloop.trust import (
        DirectoryStore,
        Lifetimes,
        RootCeremony,
        TrustRepository,
        VersionRelease,
    )

    run = Path(args.run_dir)
    record = _run_record(run)
    config = parse_config(record["config"], str(run / "run.json"))
    model = config.model.name
    out = Path(args.out)
    earlier = released(out, model)
    version = args.version or (max(earlier) + 1 if earlier else 1)
    if version in earlier:
        raise CliError(
            f"{out}: {model} v{version} is already released; versions are immutable", "exists"
        )
    if earlier and version < max(earlier):
        raise CliError(f"--version {version} must be above every released one ({max(earlier)})")
    tflite = (run / "model.tflite").read_bytes()
    for v in sorted(earlier, reverse=True):
        # A version is its bytes: the same run released twice would be two numbers
        # for one model, and a rollout between them would change nothing.
        if (registry_dir(out, model) / str(v) / "model.tflite").read_bytes() == tflite:
            raise CliError(
                f"{run} is already released as {model} v{v} in {out}: the same model bytes; "
                "train a new run to release a new version",
                "exists",
            )
    bases = {
        v: (registry_dir(out, model) / str(v) / "model.tflite").read_bytes()
        for v in sorted(earlier)[-args.bases :]
        if args.bases > 0
    }
    plan = plan_deltas(tflite, bases)
    manifest, files = build_release(config, version, tflite, plan, record)

    store = DirectoryStore(out / REPOSITORY_PREFIX)
    online, root_keys = _local_keys(out)
    # No schedule re-signs a release on disk: its signatures last --valid-days.
    days = timedelta(days=args.valid_days)
    lifetimes = Lifetimes(root=days, targets=days, model=days, snapshot=days, timestamp=days)
    if not store.get("tuf/metadata/1.root.json"):
        root = RootCeremony(store, lifetimes=lifetimes).init(
            root_keys, ROOT_THRESHOLD, online.public_key
        )
        (out / "root.json").write_bytes(root.to_bytes())
    repo = TrustRepository(store, online, lifetimes=lifetimes)
    version_dir = registry_dir(out, model) / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.tflite").write_bytes(tflite)
    (version_dir / "manifest.json").write_bytes(manifest.to_bytes())
    repo.publish(VersionRelease.of(manifest, files))
    previous = max(earlier) if earlier else None
    repo.set_pointer(RolloutPointer(model, offered=version, previous=previous, percent=100))
    summary = {
        "model": model,
        "version": version,
        "repository": str(out / REPOSITORY_PREFIX / "tuf"),
        "root": str(out / "root.json"),
        "bases": sorted(bases),
        "patches": [
            {"from_version": d.from_version, "codec": d.codec, "size": d.size}
            for d in manifest.deltas
        ],
        "dropped": [{"from_version": v, "reason": r} for v, r in plan.dropped],
        "size": len(tflite),
        "compressed_size": plan.compressed_full_size,
    }
    if args.json:
        emit(summary)
        return 0
    print(f"released {model} v{version} in {summary['repository']}, offered to every device")
    print(f"  model.tflite {len(tflite)} B, compressed (zstd) {plan.compressed_full_size} B")
    for d in manifest.deltas:
        share = d.size / max(1, plan.compressed_full_size)
        print(
            f"  patch from v{d.from_version}: {d.codec}, {d.size} B "
            f"({share:.0%} of the compressed model)"
        )
    for v, reason in plan.dropped:
        print(f"  no patch from v{v}: {reason}")
    print(f"  devices trust {out / 'root.json'} (local root keys in {out / 'keys'})")
    return 0


@contextmanager
def _verified(root: Path) -> Iterator[Any]:
    """An ngclient Updater that has refreshed from the directory as a device would."""
    from tuf.ngclient import FetcherInterface, Updater

    from edgeloop.contract.trust_targets import REPOSITORY_PREFIX

    base = root / REPOSITORY_PREFIX

    class DirectoryFetcher(FetcherInterface):
        def _fetch(self, url: str) -> Iterator[bytes]:
            from tuf.api.exceptions import DownloadHTTPError

            path = base / url.removeprefix("file:///")
            if not path.is_file():
                raise DownloadHTTPError(f"{url}: not found", 404)
            yield path.read_bytes()

    anchor = root / "root.json"
    if not anchor.is_file():
        raise CliError(f"{root}: no root.json (make a release with `edgeloop release make`)")
    with tempfile.TemporaryDirectory(prefix="edgeloop-show-") as scratch:
        updater = Updater(
            metadata_dir=scratch,
            metadata_base_url="file:///tuf/metadata/",
            target_base_url="file:///tuf/targets/",
            fetcher=DirectoryFetcher(),
            bootstrap=anchor.read_bytes(),
        )
        updater.refresh()
        yield updater


def _describe(root: Path, model: str, updater: Any) -> dict[str, Any]:
    from edgeloop.contract.trust_targets import (
        PatchInfo,
        RolloutPointer,
        VersionSpec,
        pointer_path,
    )

    pointer = updater.get_targetinfo(pointer_path(model))
    versions: list[dict[str, Any]] = []
    for v, manifest in sorted(released(root, model).items()):
        full = updater.get_targetinfo(manifest.artifact.path)
        if full is None:
            versions.append({"version": v, "signed": False})
            continue
        spec_target = updater.get_targetinfo(full.custom["spec"]) if full.custom else None
        spec = None
        if spec_target is not None:
            data = (root / "models/tuf/targets" / spec_target.get_prefixed_paths()[0]).read_bytes()
            spec_target.verify_length_and_hashes(data)
            spec = VersionSpec.from_bytes(data)
        patches = []
        for d in manifest.deltas:
            target = updater.get_targetinfo(d.path)
            if target is not None:
                info = PatchInfo.from_json(target.custom)
                patches.append(
                    {"from_version": info.base_version, "codec": info.codec, "size": target.length}
                )
        compressed = manifest.artifact.compressed
        packed = updater.get_targetinfo(compressed.path) if compressed else None
        versions.append(
            {
                "version": v,
                "signed": True,
                "size": full.length,
                "sha256": full.hashes["sha256"],
                "compressed_size": packed.length if packed else None,
                "patches": patches,
                "created_at": spec.created_at if spec else None,
                "input": spec.input.to_json() if spec else None,
                "metrics": dict(spec.metrics) if spec else {},
                "decision_threshold": spec.decision_threshold if spec else None,
                "health_check_rows": len(spec.expected) if spec else 0,
            }
        )
    return {
        "model": model,
        "rollout": RolloutPointer.from_json(pointer.custom).to_json() if pointer else None,
        "versions": versions,
    }


def _show(args: argparse.Namespace) -> int:
    from tuf.api.exceptions import DownloadError, RepositoryError

    root = Path(args.release)
    if not root.is_dir():
        raise CliError(f"{root}: no such release directory")
    models = sorted(p.name for p in (root / "registry").glob("*") if p.is_dir())
    if not models:
        raise CliError(f"{root}: no release below it (make one with `edgeloop release make`)")
    try:
        with _verified(root) as updater:
            docs = [_describe(root, m, updater) for m in models]
    except (RepositoryError, DownloadError) as exc:
        raise CliError(
            f"{root}: the signed metadata does not verify from root.json: "
            f"{type(exc).__name__}: {exc}",
            "refused",
            EXIT_FAILED,
        ) from exc
    if args.json:
        emit({"release": str(root), "verified": True, "models": docs})
        return 0
    print(f"{root}: signed metadata verified from {root / 'root.json'}, as a device does")
    for d in docs:
        pointer = d["rollout"]
        offered = f"v{pointer['offered']} to {pointer['percent']}%" if pointer else "nothing"
        print(f"{d['model']}: the rollout offers {offered}")
        for v in d["versions"]:
            if not v["signed"]:
                print(f"  v{v['version']}: no longer signed (pruned or withdrawn)")
                continue
            print(f"  v{v['version']} (created {v['created_at']})")
            print(
                f"    model.tflite {v['size']} B, sha256 {v['sha256'][:16]}…, "
                f"compressed {v['compressed_size']} B"
            )
            for p in v["patches"]:
                share = p["size"] / max(1, v["compressed_size"] or v["size"])
                print(
                    f"    patch from v{p['from_version']}: {p['codec']} {p['size']} B "
                    f"({share:.0%} of the compressed model)"
                )
            metrics = ", ".join(f"{k} {x:.4f}" for k, x in v["metrics"].items())
            print(f"    metrics: {metrics or '-'}; health check: {v['health_check_rows']} rows")
    return 0


def register(sub: Any, json_help: str) -> None:
    p = sub.add_parser(
        "release",
        help="turn a training run into a TUF repository on disk laid out like the CDN; show one",
        description="make: sign a promoted run into OUT/models/tuf/ with patches from earlier "
        "versions and a pointer offering it; show: verify a release as a device would and "
        "print its versions.",
    )
    rel = p.add_subparsers(dest="release_command", required=True, metavar="ACTION")
    m = rel.add_parser(
        "make",
        help="sign a promoted `edgeloop train --out` run into the release OUT",
        description="Writes OUT/models/tuf/ (metadata and targets), OUT/registry/ (the copies "
        "later patches start from) and, the first time, OUT/keys/ (a local root and online "
        "key, unencrypted: for trying, never for a fleet) and OUT/root.json (the trust anchor "
        "for `[trust] root`). Serve OUT as the CDN base URL.",
    )
    m.add_argument(
        "run_dir", metavar="RUN", help="the --out directory of a promoted `edgeloop train`"
    )
    m.add_argument("-o", "--out", required=True, help="the release root (the CDN base directory)")
    m.add_argument(
        "--bases",
        type=int,
        default=DEFAULT_BASES,
        help="how many earlier versions under OUT get a patch (default: %(default)s)",
    )
    m.add_argument(
        "--version", type=int, default=None, help="version number (default: one above the newest)"
    )
    m.add_argument(
        "--valid-days",
        type=int,
        default=30,
        help="days the signatures last; no schedule re-signs a release on disk "
        "(default: %(default)s)",
    )
    m.add_argument("--json", action="store_true", help=json_help)
    m.set_defaults(run=_make)

    s = rel.add_parser(
        "show", help="verify a release from its root.json as a device would, print its versions"
    )
    s.add_argument("release", help="a release root (the -o of `edgeloop release make`)")
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(run=_show)
