"""Fixtures shared by every tier."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import settings

from edgeloop.contract import (
    ArtifactRef,
    DeltaRef,
    HealthCheck,
    Manifest,
    TensorSpec,
    sha256_hex,
)

# CI keeps fuzzing cheap; `make fuzz` selects the long profile.
settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def make_manifest(version: int = 3, n_features: int = 8, model: str = "vibration") -> Manifest:
    artifact = b"model-bytes-v%d" % version
    return Manifest.new(
        model=model,
        version=version,
        input=TensorSpec(shape=(-1, n_features), names=tuple(f"f{i}" for i in range(n_features))),
        output=TensorSpec(shape=(-1,), names=("score",)),
        artifact=ArtifactRef(
            path=f"models/{model}/{version}/model.tflite",
            sha256=sha256_hex(artifact),
            size=len(artifact),
        ),
        now=NOW,
        deltas=(
            DeltaRef(
                from_version=version - 1,
                from_sha256=sha256_hex(b"old"),
                codec="bsdiff4",
                path=f"models/{model}/{version}/from-{version - 1}.bsdiff4",
                sha256=sha256_hex(b"patch"),
                size=5,
            ),
        ),
        metrics={"silhouette": 0.61},
        decision_threshold=2.5,
        health_checks=(
            HealthCheck(inputs=((0.0,) * n_features,), expected=((1.25,),), tolerance=1e-4),
        ),
        stats={"score_mean": 1.0, "score_p99": 2.4},
    )


@pytest.fixture
def manifest() -> Manifest:
    return make_manifest()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on a loopback port: the local AWS, spoken to over HTTP."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
}


# Shared rigs: the local AWS (moto's server) with the stack's resources, and the
# agent's update rig (CDN stand-in, a TUF repository of real releases, store, interpreter).
from tests.support_aws import cloud  # noqa: E402, F401
from tests.support_infra import synthesized_template  # noqa: E402, F401
from tests.support_rig import rig  # noqa: E402, F401
from tests.support_world import world  # noqa: E402, F401
