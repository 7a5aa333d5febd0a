# Config validation (schema defaults + cross-checks), the results layout, and the input
# helpers of every rule.
import copy
import json
import os
import shlex

from regmix import sources, tracking
from regmix.cluster import large_launcher, offline_environment, rule_resources
from regmix.config import (
    ConfigError,
    candidate_names,
    candidate_settings,
    min_valid_tokens,
    mixture_ids,
    proxy_packs,
    stage_settings,
    swarm_names,
    swarm_settings,
    target_slugs,
    validate_config,
    validation_set_names,
    validation_set_settings,
)
from regmix.layout import Layout

# A --configfile describes a whole study: it replaces the demo config instead of being
# merged into it (the demo's named mixtures must not leak into the paper's study).
_raw = (
    copy.deepcopy(workflow.config_settings.overwrite_config)
    if workflow.overwrite_configfiles
    else config
)
_validated = validate_config(_raw)
config.clear()
config.update(_validated)

# A missing local image is an error now, not at the first job (regmix.container).
from regmix.container import check_image
from snakemake.settings.types import DeploymentMethod

check_image(
    config["container"],
    DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method,
)

for _name, _value in offline_environment(config).items():
    os.environ.setdefault(_name, _value)

# every output path comes from here (regmix/layout.py)
L = Layout(config["results_dir"])
CONTAINER = config["container"]
DOMAINS = config["domains"]
SPLITS = ["train", "valid"]
MIX_IDS = mixture_ids(config)
PACKS = proxy_packs(config)
CANDIDATES = candidate_names(config)
# validation-only sets: tokenized and scored, never trained on
VALIDATION_SETS = validation_set_names(config)
SWARMS = swarm_names(config)  # regression.extra_swarms
# regression.targets, fitted next to the main target
TARGET_SLUGS = target_slugs(config)


wildcard_constraints:
    domain="|".join(DOMAINS),
    # (?!) matches nothing: without sets, the set rules match no file
    vset="|".join(VALIDATION_SETS) or "(?!)",
    split="train|valid",
    candidate="|".join(CANDIDATES),
    swarm="|".join(SWARMS) or "(?!)",


# Track the package next to the Snakefile (the checkout being run), so that editing a
# module reruns the stages whose command imports it and what depends on them.
_PACKAGE_DIR = os.path.join(workflow.basedir, "regmix")


def code_files(stage):
    return tracking.code_files(
        stage, _PACKAGE_DIR if os.path.isdir(_PACKAGE_DIR) else None
    )


def settings(stage, candidate=None):
    """The config values one stage reads, as a JSON param (a change reruns the stage);
    a candidate's own settings when `candidate` is given."""
    values = (
        candidate_settings(config, candidate)
        if candidate
        else stage_settings(config, stage)
    )
    return json.dumps(values, sort_keys=True)


def set_settings(name):
    """One validation-only set's settings (regmix.config.validation_set_settings) as a JSON
    param: adding or changing a set rebuilds and retokenizes that set only."""
    return json.dumps(validation_set_settings(config, name), sort_keys=True)


def option(flag, value):
    """`flag value`, shell-quoted, or nothing when there is no value."""
    return f"{flag} {shlex.quote(str(value))}" if value else ""


def source_files(split):
    return [
        path
        for domain in DOMAINS
        for path in sources.input_files(config, domain, split)
    ]


def token_files():
    """Every domain's tokens and sidecars, both splits, and every validation-only set's:
    what a trainer reads."""
    data = L.data
    return [
        f(d, s) for d in DOMAINS for s in SPLITS for f in (data.tokens, data.sidecar)
    ] + [f(n, "valid") for n in VALIDATION_SETS for f in (data.tokens, data.sidecar)]


def final_outputs():
    return [L.summary_md, L.summary_csv, L.database, *FIGURES]


def candidate_inputs(wildcards):
    """The chosen mixture is an input of the `regmix` candidate only."""
    inputs = {
        "prior": L.prior,
        "counts": L.token_counts,
        "code": code_files("candidates"),
    }
    if wildcards.candidate == "regmix":
        inputs["chosen"] = L.chosen
    return inputs
