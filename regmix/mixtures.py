"""RegMix's proxy-mixture synthesis around the token-share prior.

Per draw: pick a concentration multiplier c from log-spaced values, draw
w ~ Dirichlet(c * prior^T / sum(prior^T)), zero weights under `min_weight` and
renormalise, reject the draw when a domain would need more than `max_epochs` passes
over its train tokens in the large run. Near-duplicates (L1 under `dedup_tolerance`)
are dropped from the pool, then `count` rows are sampled from it (seeded).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from regmix import files
from regmix.settings import parse_settings
from regmix.settings.choice import MixturesSettings

# rounds of pool drawing before giving up on a too-tight epoch cap
MAX_POOL_ROUNDS = 50


def stage_rng(seed: int, *names: str | int) -> np.random.Generator:
    """A generator derived from the master seed and a stage name (stable across runs)."""
    keys = [zlib.crc32(str(name).encode()) for name in names]
    return np.random.default_rng([int(seed), *keys])


def read_prior(path: str | Path, domains: list[str] | None = None) -> dict[str, float]:
    """domain -> token share, checked against `domains` when given, renormalised to 1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prior file: {path}")
    prior = files.read_yaml(path)
    if not isinstance(prior, dict) or not prior:
        raise ValueError(f"{path}: the prior must be a mapping domain -> token share")
    if domains is not None:
        missing = [d for d in domains if d not in prior]
        extra = sorted(set(prior) - set(domains))
        if missing or extra:
            raise ValueError(f"{path}: prior domains do not match the config (missing {missing}, unknown {extra})")
    else:
        domains = list(prior)
    values = []
    for domain in domains:
        value = prior[domain]
        if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise ValueError(f"{path}: prior share of domain {domain!r} = {value!r} is not a finite number >= 0")
        values.append(float(value))
    total = sum(values)
    if total <= 0:
        raise ValueError(f"{path}: prior shares sum to {total}")
    return {d: v / total for d, v in zip(domains, values, strict=False)}


def read_token_counts(path: str | Path, domains: list[str]) -> dict[str, int]:
    """Train tokens per domain from token_counts.json ({domain: {train: n, valid: n}})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no token counts file: {path}")
    counts = files.read_json(path)
    missing = [d for d in domains if d not in counts]
    if missing:
        raise ValueError(f"{path}: no token count for domain(s) {missing}")
    out = {}
    for domain in domains:
        entry = counts[domain]
        train = entry.get("train") if isinstance(entry, dict) else None
        if not isinstance(train, (int, float)) or train < 0:
            raise ValueError(f"{path}: domain {domain!r} has no valid 'train' token count ({entry!r})")
        out[domain] = int(train)
    return out


def weight_caps(
    domains: list[str],
    prior: dict[str, float],
    max_epochs: float,
    token_counts: dict[str, int] | None,
    train_tokens: int | None,
) -> np.ndarray:
    """Largest feasible weight per domain.

    With token counts: max_epochs x train tokens of the domain / tokens of the large run.
    Without: the paper's rule min(max_epochs x prior, 1) (the large run is one corpus pass).
    """
    if token_counts is not None:
        if not train_tokens or train_tokens <= 0:
            raise ValueError(f"large-run train tokens must be positive to apply the epoch cap (got {train_tokens!r})")
        caps = np.array([max_epochs * token_counts[d] / train_tokens for d in domains])
    else:
        caps = np.array([max_epochs * prior[d] for d in domains])
    return np.minimum(caps, 1.0)


def epochs_needed(weights: dict[str, float], token_counts: dict[str, int], train_tokens: int) -> dict[str, float]:
    """Passes over each domain's train tokens that a run of `train_tokens` would make."""
    out = {}
    for domain, weight in weights.items():
        available = token_counts[domain]
        out[domain] = float(weight * train_tokens / available) if available else (0.0 if weight == 0 else float("inf"))
    return out


def draw_candidates(
    rng: np.random.Generator,
    tempered: np.ndarray,
    concentrations: np.ndarray,
    n: int,
    min_weight: float,
    caps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """n draws of the synthesis distribution: (feasible rows, count of rejections per domain)."""
    multipliers = concentrations[rng.integers(0, len(concentrations), n)]
    rows = np.empty((n, len(tempered)))
    for value in np.unique(multipliers):
        picked = multipliers == value
        rows[picked] = rng.dirichlet(value * tempered, int(picked.sum()))
    rows[rows < min_weight] = 0.0
    sums = rows.sum(axis=1)
    rows = rows[sums > 0] / sums[sums > 0, None]
    over = rows > caps[None, :] * (1 + 1e-9)
    return rows[~over.any(axis=1)], over.sum(axis=0)


def drop_near_duplicates(rows: np.ndarray, tolerance: float) -> np.ndarray:
    """Keep a row only if its L1 distance to every earlier kept row is >= tolerance."""
    kept = np.empty_like(rows)
    n_kept = 0
    for row in rows:
        if n_kept and np.abs(kept[:n_kept] - row).sum(axis=1).min() < tolerance:
            continue
        kept[n_kept] = row
        n_kept += 1
    return kept[:n_kept]


def synthesis_distribution(settings: MixturesSettings, prior: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(tempered prior in domain order, concentration multipliers); the config validator
    checks that concentration_min <= concentration_max."""
    mix = settings.mixtures
    base = np.array([prior[d] for d in settings.domains]) ** mix.temperature
    tempered = base / base.sum()
    concentrations = np.logspace(
        np.log10(mix.concentration_min), np.log10(mix.concentration_max), mix.concentration_steps
    )
    return tempered, concentrations


def synthesize(
    settings: MixturesSettings,
    prior: dict[str, float],
    token_counts: dict[str, int] | None,
    count: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """`count` (default: mixtures.count) distinct feasible mixtures (rows in settings.domains order)."""
    domains, mix = list(settings.domains), settings.mixtures
    count = mix.count if count is None else count
    rng = stage_rng(settings.seed, "mixtures") if rng is None else rng
    tempered, concentrations = synthesis_distribution(settings, prior)
    caps = weight_caps(domains, prior, mix.max_epochs, token_counts, settings.large_train_tokens)
    pool_size = count * mix.pool_factor
    pool = np.empty((0, len(domains)))
    rejections = np.zeros(len(domains), dtype=int)
    for _ in range(MAX_POOL_ROUNDS):
        rows, rejected = draw_candidates(rng, tempered, concentrations, pool_size, mix.min_weight, caps)
        rejections += rejected
        pool = drop_near_duplicates(np.vstack([pool, rows]), mix.dedup_tolerance)
        if len(pool) >= pool_size:
            break
    if len(pool) < count:
        worst = domains[int(np.argmax(rejections))]
        raise ValueError(
            f"only {len(pool)} feasible distinct mixtures after {MAX_POOL_ROUNDS} rounds, need {count}: "
            f"the epoch cap (max_epochs = {mix.max_epochs}) is too tight, most often for domain {worst!r} "
            f"(cap {caps[int(np.argmax(rejections))]:.4g} of the mixture)"
        )
    chosen = rng.choice(len(pool), size=count, replace=False)
    return pool[np.sort(chosen)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix mixtures", description="Synthesize proxy mixtures around the prior.")
    parser.add_argument("--settings", required=True, help="stage settings JSON (stage_settings(config, 'mixtures'))")
    parser.add_argument("--prior", required=True, help="prior.yaml (domain -> token share)")
    parser.add_argument("--token-counts", help="token_counts.json; without it the cap is min(max_epochs x prior, 1)")
    parser.add_argument("--out", required=True, help="output directory (mix_XXXX.yaml + mixtures.csv)")
    args = parser.parse_args(argv)
    settings = MixturesSettings.from_json(parse_settings(args.settings))
    domains = list(settings.domains)
    prior = read_prior(args.prior, domains)
    counts = read_token_counts(args.token_counts, domains) if args.token_counts else None
    rows = synthesize(settings, prior, counts)
    out = Path(args.out)
    records = []
    for i, row in enumerate(rows):
        weights = {d: float(w) for d, w in zip(domains, row, strict=False)}
        files.write_yaml(out / f"mix_{i:04d}.yaml", {"mix_id": f"mix_{i:04d}", "weights": weights})
        records.append({"index": i, **weights})
    with files.atomic_path(out / "mixtures.csv") as tmp:
        pd.DataFrame(records, columns=["index", *domains]).to_csv(tmp, index=False)
    print(f"regmix mixtures: {len(rows)} mixtures over {len(domains)} domains -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
