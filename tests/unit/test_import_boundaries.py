"""The device side never pulls in the cloud stack, and no side copies the contract."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import edgeloop.contract
from edgeloop.trust import DirectoryStore, RootCeremony
from edgeloop.trust.keys import generate_root_key

ROOT = Path(__file__).resolve().parents[2]


def _fresh_interpreter(code: str) -> str:
    """What `code` prints, run in a new interpreter: nothing imported before it."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return out.stdout.strip()


def test_device_modules_import_without_scikit_learn_or_boto3() -> None:
    code = (
        "import sys\n"
        "import edgeloop.contract, edgeloop.delta, edge.cli, edgeloop.runtime\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sklearn', 'boto3', 'botocore', 'scipy', 'aws_lambda_powertools'))\n"
        "print(','.join(bad))\n"
    )
    assert _fresh_interpreter(code) == ""


_VERIFYING = ("tuf", "securesystemslib", "cryptography", "boto3", "botocore")
# The codecs serve an update; importlib.metadata (2.3 MB with the installed
# distributions it reads) serves `--version`.
_UPDATE_ONLY = ("bsdiff4", "zstandard", "importlib.metadata")


def test_the_running_agent_leaves_out_verifying_signing_sdks_and_the_codecs(
    tmp_path: Path,
) -> None:
    """`edgeloop-agent run` imports the whole agent, yet not python-tuf and
    cryptography (verifying runs in edge.trust_child), nor boto3 (securesystemslib
    imports it for a signer nobody here uses, if it is installed, as it is here with
    the cloud extras), nor the patch codecs, which only an update needs, nor the
    distribution metadata, which only `--version` needs."""
    code = (
        "import sys\n"
        "from edge.cli import main\n"
        f"code = main(['run', '--config', {str(tmp_path / 'absent.toml')!r}])\n"
        "loaded = lambda m: sys.modules.get(m) is not None\n"
        "print(code, loaded('edge.agent'),\n"
        f"      sorted(m for m in {(*_VERIFYING, *_UPDATE_ONLY)!r} if loaded(m)))\n"
    )
    assert _fresh_interpreter(code) == "2 True []"


def test_the_verifying_child_leaves_out_signing_sdks() -> None:
    """The child verifies with python-tuf; boto3 stays out of it all the same."""
    code = (
        "import io, sys\n"
        "from edge.trust_child import serve\n"
        "try:\n"
        "    serve(io.BytesIO(b'{}\\n'), io.BytesIO())\n"
        "except KeyError:\n"
        "    pass  # no settings: it stops before it would serve\n"
        "loaded = lambda m: sys.modules.get(m) is not None\n"
        f"print(sorted(m for m in {_VERIFYING!r} if loaded(m)))\n"
    )
    assert _fresh_interpreter(code) == "['cryptography', 'securesystemslib', 'tuf']"


_AGENT_TOML = (
    '[device]\nthing = "pump-1"\nmodel = "vibration"\nn_features = 8\n'
    '[broker]\nurl = "mqtt://localhost:1883"\n[artifacts]\nbase_url = "http://cdn.local"\n'
    '[trust]\nroot = "root.json"\n[state]\ndir = "state"\n'
)


def _identity_and_provisioning_modules(config: Path) -> str:
    """The thing `run` would be for `config` (its stored identity, if it has one) and
    which of the provisioning modules that took, in a fresh interpreter."""
    return _fresh_interpreter(
        "import sys\n"
        "import edge.agent\n"
        "from edge.cli import identity_of\n"
        "from edge.config import load_agent_config\n"
        f"config = identity_of(load_agent_config({str(config)!r}), None)\n"
        "print(config.device.thing,\n"
        "      sorted(m for m in ('edge.provision', 'cryptography.x509') if m in sys.modules))\n"
    )


def _fleet_root(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "fleet")
    keys = [generate_root_key(tmp_path / "keys" / f"{i}.pem", None) for i in range(3)]
    RootCeremony(store).init(keys, 2, keys[0].public_key)
    root = store.get("tuf/metadata/1.root.json")
    assert root is not None
    (tmp_path / "root.json").write_bytes(root)


def test_an_agent_enrolled_by_hand_runs_without_the_provisioning_code(tmp_path: Path) -> None:
    """Only a device with a provisioning claim needs edge.provision and cryptography's
    X.509 builders; `run` for any other keeps them out of its resident set."""
    _fleet_root(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(_AGENT_TOML)
    assert _identity_and_provisioning_modules(config) == "pump-1 []"

    # The control: with a claim, `run` takes the identity provisioning stored.
    for name in ("ca.pem", "claim.pem", "claim.key"):
        (tmp_path / name).write_text("placeholder: nothing connects here")
    config.write_text(
        _AGENT_TOML.replace('"mqtt://localhost:1883"', '"mqtts://localhost:8883"\nca = "ca.pem"')
        + '[provisioning]\nclaim_cert = "claim.pem"\nclaim_key = "claim.key"\n'
        'template = "edgeloop-fleet"\n'
    )
    identity = tmp_path / "state" / "identity"
    identity.mkdir(parents=True)
    (identity / "identity.json").write_text(
        '{"thing": "pump-7", "model": "vibration", "certificate_id": "c0ffee"}'
    )
    assert _identity_and_provisioning_modules(config) == (
        "pump-7 ['cryptography.x509', 'edge.provision']"
    )


def test_no_package_redefines_the_contracts_public_names() -> None:
    public = set(edgeloop.contract.__all__)
    offenders = []
    for package in ("edge", "functions", "infra"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in public:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert offenders == []


def test_light_handlers_start_without_the_training_stack() -> None:
    """presign and status run on every device message, the rollout evaluation every
    minute; their cold start must not pay for importing scikit-learn."""
    code = (
        "import sys\n"
        "import functions.presign.handler, functions.status.handler\n"
        "import functions.evaluate_rollouts.handler\n"
        "heavy = ('sklearn', 'scipy')\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    assert _fresh_interpreter(code) == ""
