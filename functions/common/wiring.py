"""The composition root of the functions: every shared part built once per cold start.

Handlers ask this module for what they use and never build a part themselves,
so two functions that share a part (the rollout state machine, the release
writer) build it the same way, and `reset_cold_start()` forgets all of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from functions.common.clients import client, iot_data_client
from functions.common.cold_start import cold_start
from functions.common.env import IdentityEnv, PresignEnv, ReleaseEnv, RolloutEnv, cached_env
from functions.common.fleet import FleetTable
from functions.common.grants import GrantCounter
from functions.common.identity import (
    FleetIdentity,
    RecordedIdentity,
    ThingRegistryIdentity,
    UnknownDevice,
)
from functions.common.mqtt_publisher import MqttPublisher
from functions.common.publisher import IotDataPublisher, Publisher
from functions.common.registry import Registry
from functions.common.storage import ObjectStore, S3ObjectStore

if TYPE_CHECKING:
    from edgeloop.factory.config import RolloutSection
    from edgeloop.trust import TrustRepository
    from functions.common.releases import ReleaseWriter
    from functions.common.rollouts import Rollouts


@cold_start
def publisher() -> Publisher:
    """The IoT data plane in AWS; a plain MQTT broker when EDGELOOP_MQTT_URL is set."""
    url = os.environ.get("EDGELOOP_MQTT_URL")
    return MqttPublisher(url) if url else IotDataPublisher(iot_data_client())


@cold_start
def object_store() -> ObjectStore:
    return S3ObjectStore(client("s3"))


@cold_start
def registry(table: str) -> Registry:
    return Registry(client("dynamodb"), table)


@cold_start
def fleet(table: str) -> FleetTable:
    return FleetTable(client("dynamodb"), table)


@cold_start
def identity() -> FleetIdentity:
    """Who a device is: the thing registry's answer, kept in the device's fleet item;
    shared by presign and status."""
    env = cached_env(IdentityEnv)
    return RecordedIdentity(
        fleet(env.fleet_table),
        ThingRegistryIdentity(client("iot"), env.canary_group),
        timedelta(hours=env.identity_ttl_hours),
    )


@cold_start
def grant_counter() -> GrantCounter:
    env = cached_env(PresignEnv)
    return GrantCounter(
        client("dynamodb"), env.fleet_table, env.grants_per_window, env.grant_window_seconds
    )


# The parts below are imported when first built: the rollout state machine, the
# release writer and the trust repository bring in NumPy and python-tuf, which
# presign, the busiest function, never uses and should not load at every cold start.


@cold_start
def trust_repository() -> TrustRepository:
    """The fleet's TUF repository in the artifact bucket, signed online with the KMS key.

    Fails at construction when the bucket holds no root yet (`edgeloop trust init`
    was not run) or when root does not name this key for the online roles.
    """
    from edgeloop.contract.trust_targets import REPOSITORY_PREFIX
    from edgeloop.trust import KmsSigner, S3Store, TrustRepository

    env = cached_env(RolloutEnv)
    return TrustRepository(
        S3Store(client("s3"), env.artifact_bucket, REPOSITORY_PREFIX),
        KmsSigner.of_key(client("kms"), env.signing_key_id),
    )


@cold_start
def rollouts() -> Rollouts:
    from functions.common.identity import named_canaries
    from functions.common.model_configs import load_model_configs
    from functions.common.rollouts import Rollouts

    env = cached_env(RolloutEnv)
    configs = load_model_configs(env.model_config_dir)
    who = identity()

    def canaries(model: str) -> list[str]:
        found = []
        for thing in named_canaries(client("iot"), env.canary_group):
            with contextlib.suppress(UnknownDevice):
                if who.of(thing).model == model:
                    found.append(thing)
        return found

    def settings(model: str) -> RolloutSection:
        config = configs.get(model)
        return config.rollout if config is not None else RolloutSection()

    return Rollouts(
        registry=registry(env.registry_table),
        fleet=fleet(env.fleet_table),
        publisher=publisher(),
        trust=trust_repository,
        canaries=canaries,
        settings=settings,
    )


@cold_start
def release_writer() -> ReleaseWriter:
    from functions.common.releases import ReleaseWriter

    env = cached_env(ReleaseEnv)
    return ReleaseWriter(
        store=object_store(),
        registry=registry(env.registry_table),
        trust=trust_repository,
        registry_bucket=env.registry_bucket,
        delta_bases=env.delta_bases,
    )


def rollout_starter() -> Callable[[str, int], bool]:
    """Starts a new version's rollout (what retrain and rollback do last)."""
    return rollouts().start
