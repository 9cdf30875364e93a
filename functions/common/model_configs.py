"""The model configs shipped with the functions, loaded once per cold start."""

from __future__ import annotations

from pathlib import Path

from edgeloop.factory.config import ModelConfig, load_config
from functions.common.cold_start import cold_start


class UnknownModel(KeyError):
    """A request named a model this deployment does not train."""


@cold_start
def load_model_configs(directory: Path) -> dict[str, ModelConfig]:
    configs = {}
    for path in sorted(Path(directory).glob("*.toml")):
        config = load_config(path)
        configs[config.model.name] = config
    if not configs:
        raise FileNotFoundError(f"no model configs (*.toml) in {directory}")
    return configs


def model_config(directory: Path, name: str) -> ModelConfig:
    configs = load_model_configs(directory)
    if name not in configs:
        raise UnknownModel(f"model {name!r} is not one of {', '.join(sorted(configs))}")
    return configs[name]
