"""Rolling a model back: an earlier version's weights shipped as a new, higher version.

Devices refuse versions at or below the one they run, so going back means going
forward with old bytes, canary ring first like any release.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeloop.contract import time_ordered_id
from edgeloop.factory.config import ModelConfig
from functions.common.registry import Registry
from functions.common.releases import ReleaseWriter


class RollbackRefused(ValueError):
    """The rollback cannot be carried out as asked; the message says why."""


@dataclass(frozen=True)
class RollbackRequest:
    model: str
    to_version: int
    # Ship the weights of a version whose rollout was aborted anyway: the operator
    # says so in the request, knowing why it was aborted.
    despite_abort: bool = False

    @staticmethod
    def from_event(event: Any) -> RollbackRequest:
        """The operator's payload: {"model": str, "to_version": positive int} and,
        to re-ship an aborted version on purpose, "despite_abort": true."""
        if not isinstance(event, dict):
            raise RollbackRefused('the payload must be {"model": ..., "to_version": ...}')
        unknown = sorted(set(event) - {"model", "to_version", "despite_abort"})
        if unknown:
            raise RollbackRefused(
                f"unknown fields {', '.join(unknown)}; only model, to_version, despite_abort"
            )
        despite_abort = event.get("despite_abort", False)
        if not isinstance(despite_abort, bool):
            raise RollbackRefused("despite_abort must be true or false")
        model = event.get("model")
        if not isinstance(model, str) or not model:
            raise RollbackRefused("model must be the name of a model")
        to_version = event.get("to_version")
        if isinstance(to_version, bool) or not isinstance(to_version, int) or to_version < 1:
            raise RollbackRefused("to_version must be a positive integer (a published version)")
        return RollbackRequest(model, to_version, despite_abort)


def roll_back(
    request: RollbackRequest,
    configs: Mapping[str, ModelConfig],
    registry: Registry,
    releases: ReleaseWriter,
    announce: Callable[[str, int], bool],
) -> int:
    """Publish `request.to_version`'s weights as the next version and announce it. Returns it."""
    config = configs.get(request.model)
    if config is None:
        raise RollbackRefused(f"model {request.model!r} has no config in this deployment")
    if registry.version(request.model, request.to_version) is None:
        raise RollbackRefused(
            f"{request.model} has no version {request.to_version} to roll back to"
        )
    aborted = registry.aborted(request.model, request.to_version)
    if aborted is not None and not request.despite_abort:
        raise RollbackRefused(
            f"{request.model} v{request.to_version}'s rollout was aborted "
            f"({aborted.get('reason', 'no reason recorded')}); re-shipping it would undo "
            'that. To ship it anyway, add "despite_abort": true to the request'
        )
    publication = releases.rollback(config, request.to_version, time_ordered_id())
    version = publication.manifest.version
    announce(request.model, version)
    return version
