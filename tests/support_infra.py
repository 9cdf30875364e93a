"""The stack synthesized once per test session (no Docker, no credentials)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def synthesized_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from infra.app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    app = build_app(str(outdir))
    stack_name = app.node.children[0].node.id
    app.synth()
    template: dict[str, Any] = json.loads(
        (Path(outdir) / f"{stack_name}.template.json").read_text()
    )
    return template
