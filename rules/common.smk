# Config validation (schema defaults + cross-checks) and the input helpers of every rule.
import copy
import json
import os

from regmix import sources
from regmix.config import (
    ConfigError,
    candidate_names,
    candidate_settings,
    code_files as _code_files,
    large_launcher,
    min_valid_tokens,
    mixture_ids,
    proxy_packs,
    rule_resources,
    stage_settings,
    offline_environment,
    validate_config,
)

# A --configfile describes a whole study: it replaces the demo config instead of being
# merged into it (the demo's named mixtures must not leak into the paper's study).
_raw = copy.deepcopy(workflow.config_settings.overwrite_config) if workflow.overwrite_configfiles else config
_validated = validate_config(_raw)
config.clear()
config.update(_validated)

# A missing local image is an error now, not at the first job (regmix.container).
from regmix.container import check_image
from snakemake.settings.types import DeploymentMethod

check_image(config["container"], DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method)

for _name, _value in offline_environment(config).items():
    os.environ.setdefault(_name, _value)

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


# Track the package next to the Snakefile (the checkout being run), so that editing a
# stage's module reruns that stage and what depends on it, and nothing upstream.
_PACKAGE_DIR = os.path.join(workflow.basedir, "regmix")


def code_files(stage):
    return _code_files(stage, _PACKAGE_DIR if os.path.isdir(_PACKAGE_DIR) else None)


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


def candidate_inputs(wildcards):
    """The chosen mixture is an input of the `regmix` candidate only."""
    inputs = {
        "prior": f"{R}/data/prior.yaml",
        "counts": f"{R}/data/token_counts.json",
        "code": code_files("candidates"),
    }
    if wildcards.candidate == "regmix":
        inputs["chosen"] = f"{R}/chosen/regmix.yaml"
    return inputs
