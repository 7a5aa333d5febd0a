"""What a command reads from `--settings`: the JSON parser and the typed settings of a stage.

The one route for config: the workflow validates the config (regmix.config), builds each
stage's settings JSON (`regmix.config.stage_settings`, the `settings(stage)` helper of
rules/common.smk) and passes it as `--settings`; a command parses it here, once, into a
frozen object. This module imports nothing of regmix, so a command that reads its
settings does not depend on the validator's code.

This package holds the parser and the shared helpers; each group of stages has its typed
settings in a submodule (`regmix.settings.train` for the training stages, ...). A command
imports its own submodule.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the value."""


def parse_settings(text: str) -> dict:
    """A command's `--settings` JSON (a stage's settings), or a ConfigError naming it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--settings is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ConfigError("--settings must be a JSON object")
    return value


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build_section(cls, values: dict, where: str, optional: tuple[str, ...] = ()):
    """`cls(**values)` keeping only its fields; a ConfigError naming `where` for missing ones."""
    names = field_names(cls)
    missing = [n for n in names if n not in values and n not in optional]
    if missing:
        raise ConfigError(f"settings key {where!r}: missing {missing} (expected regmix.config.stage_settings)")
    return cls(**{n: values[n] for n in names if n in values})


# where a stage's settings JSON comes from, for the message that names a missing key
_ORIGINS = {
    "validation_set": "regmix.config.validation_set_settings(config, name)",
    "import_swarm": "regmix.config.swarm_settings(config, name)",
}


def require_keys(settings: Mapping[str, Any], keys: Iterable[str], stage: str) -> None:
    """A ConfigError naming the first of `keys` missing from `stage`'s settings JSON."""
    origin = _ORIGINS.get(stage, f"regmix.config.stage_settings(config, {stage!r})")
    for key in keys:
        if key not in settings:
            raise ConfigError(f"settings: missing key {key!r} (expected {origin})")


def require_section(settings: Mapping[str, Any], key: str, stage: str) -> dict:
    """`settings[key]`, which must be a mapping; a ConfigError naming the key otherwise."""
    require_keys(settings, (key,), stage)
    value = settings[key]
    if not isinstance(value, dict):
        raise ConfigError(f"settings key {key!r} of stage {stage!r}: must be a mapping, got {value!r}")
    return value
