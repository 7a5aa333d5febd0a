# Config validation (schema defaults + cross-checks) and the input helpers of every rule.
import json

from regmix import sources
from regmix.config import (
    ConfigError,
    candidate_names,
    candidate_settings,
    code_files,
    large_launcher,
    mixture_ids,
    proxy_packs,
    rule_resources,
    stage_settings,
    validate_config,
)

_validated = validate_config(config)
config.clear()
config.update(_validated)

R = config["results_dir"]
DOMAINS = config["domains"]
SPLITS = ["train", "valid"]
MIX_IDS = mixture_ids(config)
PACKS = proxy_packs(config)
CANDIDATES = candidate_names(config)


wildcard_constraints:
    domain="|".join(DOMAINS),
    split="train|valid",
    candidate="|".join(CANDIDATES),


def settings(stage):
    """The config values one stage reads, as a JSON param (a change reruns the stage)."""
    return json.dumps(stage_settings(config, stage), sort_keys=True)


def source_files(split):
    return [path for domain in DOMAINS for path in sources.input_files(config, domain, split)]


def token_files():
    """Every domain's tokens and sidecars, both splits: what a trainer reads."""
    return expand(f"{R}/data/{{domain}}/{{split}}.{{ext}}", domain=DOMAINS, split=SPLITS, ext=["bin", "json"])


def final_outputs():
    return [
        f"{R}/summary.md",
        f"{R}/summary.csv",
        f"{R}/regmix.duckdb",
        *FIGURES,
    ]
