"""One large-model candidate mixture per file: regmix, prior, uniform, named, random_NNN."""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

from regmix import files
from regmix.config import check_weights
from regmix.mixtures import read_prior, read_token_counts, stage_rng, synthesize
from regmix.settings import ConfigError, parse_settings
from regmix.settings.choice import CandidateSettings

RANDOM_NAME = re.compile(r"^random_(\d{3})$")


def candidate_weights(
    name: str,
    settings: CandidateSettings,
    prior: dict[str, float],
    chosen_path: str | None,
    token_counts: dict[str, int] | None,
) -> tuple[dict[str, float], str]:
    """(weights in domain order, a short description of where they come from)."""
    domains = list(settings.domains)
    if name == "regmix":
        if not chosen_path:
            raise ValueError("candidate 'regmix' needs --chosen (the file written by `regmix choose`)")
        chosen = files.read_yaml(chosen_path)
        if not isinstance(chosen, dict) or "weights" not in chosen:
            raise ValueError(f"{chosen_path}: no 'weights' mapping")
        return check_weights(
            chosen["weights"], domains, f"{chosen_path}:weights"
        ), f"chosen by regression ({chosen_path})"
    if name == "prior":
        return {d: prior[d] for d in domains}, "token shares of the train splits"
    if name == "uniform":
        return {d: 1.0 / len(domains) for d in domains}, "equal weight per domain"
    if name in settings.named:
        return check_weights(settings.named[name], domains, f"large.named.{name}"), "named in the config (large.named)"
    match = RANDOM_NAME.match(name)
    if match:
        if settings.synthesis is None:
            raise ConfigError(
                f"candidate {name!r}: settings key 'mixtures' missing (expected regmix.config.candidate_settings)"
            )
        rng = stage_rng(settings.seed, "candidate", name)
        row = synthesize(settings.synthesis, prior, token_counts, count=1, rng=rng)[0]
        return {
            d: float(w) for d, w in zip(domains, row, strict=False)
        }, f"draw {int(match.group(1))} of the proxy-mixture synthesis distribution"
    raise ValueError(
        f"unknown candidate {name!r}: expected regmix, prior, uniform, random_NNN or one of large.named "
        f"({sorted(settings.named)})"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix candidate", description="Write one large-model candidate mixture.")
    parser.add_argument("--settings", required=True, help="stage settings JSON (stage_settings(config, 'candidates'))")
    parser.add_argument("--name", required=True, help="regmix | prior | uniform | random_NNN | a name from large.named")
    parser.add_argument("--prior", required=True, help="prior.yaml")
    parser.add_argument("--chosen", help="chosen mixture YAML (needed for 'regmix')")
    parser.add_argument("--token-counts", help="token_counts.json (epoch cap of random_NNN draws)")
    parser.add_argument("--out", required=True, help="output YAML {name, weights, source}")
    args = parser.parse_args(argv)
    settings = CandidateSettings.from_json(parse_settings(args.settings))
    domains = list(settings.domains)
    prior = read_prior(args.prior, domains)
    counts = read_token_counts(args.token_counts, domains) if args.token_counts else None
    weights, source = candidate_weights(args.name, settings, prior, args.chosen, counts)
    weights = {d: round(float(np.float64(w)), 10) for d, w in weights.items()}
    files.write_yaml(args.out, {"name": args.name, "weights": weights, "source": source})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
