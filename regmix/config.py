"""Load, default-fill and check a pipeline config before any job runs.

The JSON schema (config/schema.yaml) fixes types, bounds and defaults; the checks below
catch what a schema cannot express (domain names across sections, weights summing to 1).
Every error names the offending key and value.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from regmix import sources

# the command side of the config route lives in regmix.settings (no validator imports there)
from regmix.settings import ConfigError, parse_settings  # noqa: F401  (re-exported)
from regmix.targets import TargetError, parse_target, target_slug

REPO_DIR = Path(__file__).resolve().parent.parent
WEIGHT_SUM_TOLERANCE = 1e-3

# Rows a regressor needs at least, whatever cv_folds says (the regression reads this too).
MIN_FIT_ROWS = 4
# Names the swarm tables use for their own columns next to the domains' (mixtures.csv:
# index; losses.csv: index, mean; choose's top-k CSV: rank, predicted; the pivots of the
# results database: mix_id, domain, candidate). Compared ignoring case: DuckDB does.
RESERVED_DOMAIN_NAMES = frozenset({"index", "mean", "rank", "predicted", "mix_id", "domain", "candidate"})
# Built-in candidates; a named mixture may not take their names (nor random_NNN).
RESERVED_CANDIDATE_NAMES = frozenset({"regmix", "prior", "uniform"})
RANDOM_CANDIDATE_PREFIX = "random_"


def config_dir() -> Path:
    """The workflow's config/ folder: $REGMIX_CONFIG_DIR, else ./config (a workflow being
    run, in a checkout or a container), else the checkout this package lives in."""
    candidates = [os.environ.get("REGMIX_CONFIG_DIR"), Path.cwd() / "config", REPO_DIR / "config"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "schema.yaml").is_file():
            return Path(candidate)
    raise FileNotFoundError("no config/schema.yaml found (set REGMIX_CONFIG_DIR to the workflow's config folder)")


def _validator_with_defaults(schema: dict):
    # imported here: the trainer reads model configs through this module on GPU nodes
    # whose image may hold no jsonschema
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
                # a $ref'd sub-schema carries its defaults one level down
                if "$ref" in sub and key in instance and isinstance(instance[key], dict):
                    resolved = validator._resolver.lookup(sub["$ref"]).contents
                    for k, s in resolved.get("properties", {}).items():
                        if "default" in s and k not in instance[key]:
                            instance[key][k] = copy.deepcopy(s["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema_)

    # jsonschema counts 8.0 as an integer and NaN/inf as numbers; a config means neither
    # (range(8.0) fails inside a job, a NaN learning rate trains nothing)
    type_checker = base.TYPE_CHECKER.redefine_many(
        {
            "integer": lambda _, value: isinstance(value, int) and not isinstance(value, bool),
            "number": lambda _, value: (
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ),
        }
    )

    def pattern(validator, pattern_, instance, schema_):
        # schema patterns are ECMA 262, where `$` ends the string; Python's `$` also matches
        # before a final newline, which let "code\n" through as a name
        strict = pattern_[:-1] + "\\Z" if pattern_.endswith("$") and not pattern_.endswith("\\$") else pattern_
        if isinstance(instance, str) and not re.search(strict, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {pattern_!r}")

    cls = jsonschema.validators.extend(
        base, {"properties": set_defaults, "pattern": pattern}, type_checker=type_checker
    )
    return cls(schema)


def _schema_message(err, name_pattern: str) -> str:
    """A jsonschema error as one line naming the key, in the user's terms."""
    where, value = _key(err.absolute_path), err.instance
    if err.validator == "additionalProperties":
        extra = sorted(map(str, set(value) - set(err.schema.get("properties", {}))))
        return f"config key '{where}': unknown key(s) {extra}"
    if err.validator == "type" and isinstance(value, float):
        expected = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        if not math.isfinite(value):
            return f"config key '{where}' = {value!r}: must be a finite number"
        if "integer" in expected:
            return f"config key '{where}' = {value!r}: must be a whole number written without a decimal point"
    if err.validator == "pattern" and err.validator_value == name_pattern:
        what = "name" if "propertyNames" in err.schema_path else "value"
        return (
            f"config key '{where}': {what} {value!r} is not a valid name: a letter, then at most 63 letters, "
            "digits or _ (names become file names, wildcards and shell words)"
        )
    return f"config key '{where}' = {value!r}: {err.message}"


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


@functools.cache
def _parsed_yaml(path: Path, mtime_ns: int) -> dict:
    return yaml.safe_load(path.read_text())


def _read_config_yaml(name: str) -> dict:
    """A file of the config folder, parsed once per process (a Snakefile asks for the
    model architectures once per rule); a copy, so callers may change it."""
    path = config_dir() / name
    return copy.deepcopy(_parsed_yaml(path, path.stat().st_mtime_ns))


def load_schema() -> dict:
    return _read_config_yaml("schema.yaml")


def load_models() -> dict:
    return _read_config_yaml("models.yaml")


def validate_config(config: dict | None) -> dict:
    """Return a validated copy of `config` with every default filled in."""
    config = copy.deepcopy(config or {})
    validator = _validator_with_defaults(load_schema())
    # defaults first (the validator fills them while it walks), then report errors
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise ConfigError(_schema_message(errors[0], validator.schema["$defs"]["name"]["pattern"]))
    _check_semantics(config)
    return config


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    from regmix import files

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = files.read_yaml(path) or {}
    except files.BadFileError as err:  # a YAML syntax error is the config's fault: exit 2
        raise ConfigError(str(err)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    raw.update(overrides or {})
    return validate_config(raw)


def check_weights(weights: Any, domains: list[str], key: str) -> dict[str, float]:
    """A mixture must name known domains with non-negative weights summing to 1."""
    if not isinstance(weights, dict) or not weights:
        raise ConfigError(f"config key '{key}': a mixture must be a non-empty mapping domain -> weight")
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ConfigError(f"config key '{key}': unknown domain(s) {unknown} (known: {domains})")
    for domain, weight in weights.items():
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"config key '{key}.{domain}' = {weight!r}: weight must be a finite number >= 0")
    total = float(sum(weights.values()))
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise ConfigError(f"config key '{key}': weights sum to {total:.6f}, not 1 (tolerance {WEIGHT_SUM_TOLERANCE})")
    return {d: float(weights.get(d, 0.0)) / total for d in domains}


def check_choose_bounds(bounds: dict | None, domains: list[str]) -> tuple[list[float], list[float]]:
    """`choose.bounds` ({domain: [lo, hi]}) as lower and upper shares in `domains` order.

    Refused, naming the key: an unknown domain, lo > hi, or bounds no mixture can meet
    (lower shares summing above 1, upper shares below 1)."""
    bounds = bounds or {}
    unknown = sorted(set(bounds) - set(domains))
    if unknown:
        raise ConfigError(f"config key 'choose.bounds': unknown domain(s) {unknown} (known: {domains})")
    for domain, pair in bounds.items():
        if len(pair) != 2 or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in pair):
            raise ConfigError(f"config key 'choose.bounds.{domain}' = {pair!r}: must be [lo, hi] with 0 <= lo, hi <= 1")
        if pair[0] > pair[1]:
            raise ConfigError(f"config key 'choose.bounds.{domain}' = {list(pair)}: lo is above hi")
    lower = [float(bounds.get(d, (0.0, 1.0))[0]) for d in domains]
    upper = [float(bounds.get(d, (0.0, 1.0))[1]) for d in domains]
    if sum(lower) > 1 + 1e-9 or sum(upper) < 1 - 1e-9:
        raise ConfigError(
            f"config key 'choose.bounds': infeasible, lower shares sum to {sum(lower):.6f} and upper shares "
            f"to {sum(upper):.6f} (a mixture needs sum lo <= 1 <= sum hi)"
        )
    return lower, upper


def _check_names(config: dict) -> None:
    """Names become file names, wildcards, table columns: none may be reserved, and no two
    may differ only in case (a case-insensitive file system, or DuckDB, would merge them)."""
    domains = config["domains"]
    for domain in domains:
        if domain.lower() in RESERVED_DOMAIN_NAMES:
            raise ConfigError(
                f"config key 'domains': {domain!r} is reserved (the tables use it for a column of their own; "
                f"reserved: {sorted(RESERVED_DOMAIN_NAMES)})"
            )
    lowered_domains = {d.lower(): d for d in domains}
    for name in config["validation_sets"]:
        if name.lower() in RESERVED_DOMAIN_NAMES:
            raise ConfigError(
                f"config key 'validation_sets.{name}': name is reserved (the tables use it for a column of their "
                f"own; reserved: {sorted(RESERVED_DOMAIN_NAMES)})"
            )
        if name.lower() in lowered_domains:
            raise ConfigError(
                f"config key 'validation_sets.{name}': name is domain {lowered_domains[name.lower()]!r}'s; a "
                "validation-only set needs a name of its own (its losses sit next to the domains')"
            )
    for name in config["large"]["named"]:
        lowered = name.lower()
        if lowered in RESERVED_CANDIDATE_NAMES or lowered.startswith(RANDOM_CANDIDATE_PREFIX):
            raise ConfigError(
                f"config key 'large.named.{name}': name is reserved for a built-in candidate "
                f"({', '.join(sorted(RESERVED_CANDIDATE_NAMES))}, {RANDOM_CANDIDATE_PREFIX}NNN)"
            )
    for key, names in (
        ("domains", domains),
        ("large.named", list(config["large"]["named"])),
        ("validation_sets", list(config["validation_sets"])),
    ):
        seen: dict[str, str] = {}
        for name in names:
            if name.lower() in seen:
                raise ConfigError(
                    f"config key '{key}': {seen[name.lower()]!r} and {name!r} differ only in case "
                    "(they would share files on a case-insensitive file system)"
                )
            seen[name.lower()] = name


def _check_feasibility(config: dict) -> None:
    """What a later stage would refuse, refused before the first job runs."""
    count, folds = config["mixtures"]["count"], config["regression"]["cv_folds"]
    if count < max(folds, MIN_FIT_ROWS):
        raise ConfigError(
            f"config key 'mixtures.count' = {count}: the regression needs at least {max(folds, MIN_FIT_ROWS)} "
            f"proxy runs (regression.cv_folds = {folds}, and never fewer than {MIN_FIT_ROWS} rows)"
        )
    mix = config["mixtures"]
    if mix["concentration_min"] > mix["concentration_max"]:
        raise ConfigError(
            f"config key 'mixtures.concentration_min' = {mix['concentration_min']}: "
            f"above mixtures.concentration_max = {mix['concentration_max']}"
        )
    if mix["concentration_steps"] == 1 and mix["concentration_min"] != mix["concentration_max"]:
        raise ConfigError(
            "config key 'mixtures.concentration_steps' = 1: one step draws only concentration_min; "
            "set concentration_max equal to it or use more steps"
        )
    block = config["large"]["resources"]
    world = max(block["gpus"], 1) * block["nodes"]
    batch, micro = config["large"]["global_batch"], config["large"]["micro_batch"]
    if batch % world or (batch // world) % min(micro, batch // world or 1):
        raise ConfigError(
            f"config key 'large.global_batch' = {batch}: must split evenly over {world} processes "
            f"(large.resources gpus x nodes) in micro-batches of large.micro_batch = {micro}"
        )


def _check_semantics(config: dict) -> None:
    domains = config["domains"]
    _check_names(config)
    _check_feasibility(config)
    models = load_models()
    for stage in ("proxy", "large"):
        name = config[stage]["model"]
        if name not in models:
            raise ConfigError(
                f"config key '{stage}.model' = {name!r}: no such model in models.yaml (known: {sorted(models)})"
            )
        if config[stage]["global_batch"] % config[stage]["micro_batch"]:
            raise ConfigError(
                f"config key '{stage}.global_batch' = {config[stage]['global_batch']}: "
                f"must be a multiple of {stage}.micro_batch = {config[stage]['micro_batch']}"
            )
        if config[stage]["warmup_steps"] >= config[stage]["steps"]:
            raise ConfigError(
                f"config key '{stage}.warmup_steps' = {config[stage]['warmup_steps']}: must be below {stage}.steps"
            )
    for name, weights in config["large"]["named"].items():
        check_weights(weights, domains, f"large.named.{name}")
    try:
        sets = list(config["validation_sets"])
        parse_target(config["regression"]["target"], domains, validation_sets=sets)
        for number, spec in enumerate(config["regression"]["targets"]):
            parse_target(spec, domains, f"regression.targets[{number}]", validation_sets=sets)
    except TargetError as err:
        raise ConfigError(str(err)) from None
    target_slugs(config)
    _check_swarm_names(config)
    limits = config["data"]["token_limit"] or {}
    unknown = sorted(set(limits) - set(domains))
    if unknown:
        raise ConfigError(f"config key 'data.token_limit': unknown domain(s) {unknown} (known: {domains})")
    tok = config["tokenizer"]
    if tok["kind"] == "pretrained" and not tok["name"]:
        raise ConfigError("config key 'tokenizer.name' = None: required when tokenizer.kind is 'pretrained'")
    check_choose_bounds(config["choose"]["bounds"], domains)
    if config["choose"]["top_k"] > config["choose"]["samples"]:
        raise ConfigError(f"config key 'choose.top_k' = {config['choose']['top_k']}: larger than choose.samples")
    if config["evaluate"]["suite"] == "lm_eval" and not config["evaluate"]["tasks"]:
        raise ConfigError("config key 'evaluate.tasks' = []: suite 'lm_eval' needs at least one task")
    # the data source checks its own keys and that its domains match `domains` exactly
    sources.check_source_config(config)
    sources.check_validation_sets(config)


def target_slugs(config: dict) -> list[str]:
    """The folder name of each `regression.targets` entry, in order; two entries with one name are refused."""
    slugs: dict[str, int] = {}
    for number, spec in enumerate(config["regression"]["targets"]):
        slug = target_slug(spec)
        if slug.lower() in slugs:
            raise ConfigError(
                f"config key 'regression.targets[{number}]' = {spec!r}: the same target (folder {slug!r}) "
                f"as regression.targets[{slugs[slug.lower()]}]"
            )
        slugs[slug.lower()] = number
    return [target_slug(spec) for spec in config["regression"]["targets"]]


def _check_swarm_names(config: dict) -> None:
    seen: dict[str, int] = {}
    for number, entry in enumerate(config["regression"]["extra_swarms"]):
        name = entry["name"].lower()
        if name in seen:
            raise ConfigError(
                f"config key 'regression.extra_swarms[{number}].name' = {entry['name']!r}: "
                f"also the name of regression.extra_swarms[{seen[name]}] (names differing only in case count as one)"
            )
        seen[name] = number


def swarm_names(config: dict) -> list[str]:
    return [entry["name"] for entry in config["regression"]["extra_swarms"]]


def swarm_settings(config: dict, name: str) -> dict:
    """What `regmix import-swarm` reads for one extra swarm: the study's domains and the entry."""
    (entry,) = [e for e in config["regression"]["extra_swarms"] if e["name"] == name]
    return {"seed": config["seed"], "domains": config["domains"], "swarm": entry}


def candidate_names(config: dict) -> list[str]:
    """Large-model candidates, in a fixed order: regmix, baselines, named, random."""
    names = ["regmix", *config["large"]["baselines"], *config["large"]["named"]]
    names += [f"{RANDOM_CANDIDATE_PREFIX}{i:03d}" for i in range(config["large"]["random_candidates"])]
    return names


def mixture_ids(config: dict) -> list[str]:
    return [f"mix_{i:04d}" for i in range(config["mixtures"]["count"])]


def proxy_packs(config: dict) -> dict[str, list[str]]:
    """Mixture ids grouped into packs trained together in one process."""
    ids, size = mixture_ids(config), config["proxy"]["pack_size"]
    return {f"pack_{p:04d}": ids[i : i + size] for p, i in enumerate(range(0, len(ids), size))}


def model_architecture(name: str) -> dict:
    models = load_models()
    if name not in models:
        raise ConfigError(f"model {name!r} not in models.yaml (known: {sorted(models)})")
    return {"name": name, **models[name]}


def large_train_tokens(config: dict) -> int:
    """Tokens one large-model run consumes (the epoch cap of synthesis and choice uses it)."""
    large = config["large"]
    return large["steps"] * large["global_batch"] * model_architecture(large["model"])["seq_len"]


def validation_set_names(config: dict) -> list[str]:
    """The validation-only sets, in config order (their loss columns follow the domains')."""
    return list(config["validation_sets"])


def validation_set_settings(config: dict, name: str) -> dict:
    """What building and tokenizing one validation-only set reads: that set's source, and
    `data`'s reading options, so adding a set builds and tokenizes only that set."""
    return {
        "seed": config["seed"],
        "domains": config["domains"],
        "data": config["data"],
        "validation_sets": {name: config["validation_sets"][name]},
    }


def min_valid_tokens(config: dict) -> int:
    """Valid tokens a domain (or a validation-only set) needs: the fixed validation windows
    of proxies and large models."""
    return max(
        config[stage]["val_windows"] * (model_architecture(config[stage]["model"])["seq_len"] + 1)
        for stage in ("proxy", "large")
    )


def stage_settings(config: dict, stage: str) -> dict:
    """Exactly the config values one stage reads.

    Rules pass these as a `params:` JSON string, so Snakemake reruns a stage when, and
    only when, a value it actually uses changes.
    """
    base = {"seed": config["seed"], "domains": config["domains"]}
    if stage == "corpus":
        return {**base, "data": config["data"]}
    if stage == "tokenizer":
        return {**base, "data": config["data"], "tokenizer": config["tokenizer"]}
    if stage == "tokenize":
        return {**base, "data": config["data"]}
    if stage == "mixtures":
        return {**base, "mixtures": config["mixtures"], "large_train_tokens": large_train_tokens(config)}
    if stage in ("proxy", "large"):
        section = {
            k: v for k, v in config[stage].items() if k not in ("resources", "named", "baselines", "random_candidates")
        }
        return {
            **base,
            stage: section,
            "model": model_architecture(config[stage]["model"]),
            "validation_sets": validation_set_names(config),
        }
    if stage == "regression":
        return {**base, "regression": config["regression"]}
    if stage == "choose":
        return {
            **base,
            "choose": config["choose"],
            "max_epochs": config["mixtures"]["max_epochs"],
            "large_train_tokens": large_train_tokens(config),
        }
    if stage == "candidates":
        return {
            **base,
            "named": config["large"]["named"],
            "mixtures": config["mixtures"],
            "large_train_tokens": large_train_tokens(config),
        }
    if stage == "eval_tasks":
        keys = (
            "docs_per_task",
            "perplexity_docs_per_task",
            "max_doc_chars",
            "mc_choices",
            "mc_context_chars",
            "mc_continuation_chars",
        )
        return {
            **base,
            "data": config["data"],
            "evaluate": {k: config["evaluate"][k] for k in keys},
            "window": model_architecture(config["large"]["model"])["seq_len"],
        }
    if stage == "evaluate":
        return {**base, "evaluate": {k: v for k, v in config["evaluate"].items() if k != "resources"}}
    if stage in ("summary", "collect", "plots"):
        return {
            **base,
            "regression": config["regression"],
            "candidates": candidate_names(config),
            "mixture_ids": mixture_ids(config),
            "log_samples": config["evaluate"]["log_samples"],
            "validation_sets": validation_set_names(config),
        }
    if stage == "archive":
        return {**base, "archive": config["archive"], "container": config["container"]}
    raise KeyError(f"no settings for stage {stage!r}")


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="regmix check-config", description="Validate a config and print it with defaults."
    )
    parser.add_argument("config", help="YAML config file")
    args = parser.parse_args(argv)
    print(json.dumps(load_config(args.config), indent=2))
    return 0


def candidate_settings(config: dict, name: str) -> dict:
    """Settings of one candidate only, so adding a named mixture retrains nothing else."""
    settings = stage_settings(config, "candidates")
    settings["named"] = {k: v for k, v in settings["named"].items() if k == name}
    if not name.startswith("random_"):
        settings.pop("mixtures")
        settings.pop("large_train_tokens")
    return settings
