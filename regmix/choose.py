"""Choose a mixture: simulate Dirichlet(prior) candidates, predict, average the top k.

Candidates are drawn and predicted in chunks, so memory is bounded by the chunk size
and k whatever the number of samples. Infeasible candidates (a domain needing more
than max_epochs passes over its train tokens in the large run) are discarded before
ranking; the average of feasible mixtures is feasible too, because the epoch cap is a
per-domain upper bound on the weight (a convex set). `choose.bounds` ([lo, hi] per
domain) cut the same box further, for every rule.

`choose.rule` (config/schema.yaml says why each exists):
- `topk`: the paper's, the average of the top_k candidates by predicted target.
- `optimize`: also minimises the model's prediction directly over that set
  (regmix.regression.optimize) and keeps the optimum unless the top-k average is better
  by the model.
- `penalized`: the top_k by predicted target + uncertainty_weight x predictive std (a
  confidence-bound choice: a mixture the model is unsure of must be predicted better).
- `trust_region`: the top_k among candidates no farther from the nearest proxy mixture
  than a radius taken from the swarm itself (a quantile of the proxies' leave-one-out
  nearest-neighbour distances).
The last two rank the same draws as `topk` in one pass, and the output reports the plain
top-k choice next to theirs. Every choice records its prediction, predictive std,
distance to the nearest proxy mixture and the domains beyond the swarm's range, so a
user sees what an extrapolating choice costs in trust.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from regmix import files
from regmix.config import check_choose_bounds, load_schema
from regmix.mixtures import epochs_needed, read_prior, read_token_counts, stage_rng, weight_caps
from regmix.regression import FittedModel, load_model
from regmix.regression.optimize import is_feasible, kl_divergence, minimise, objective
from regmix.settings import ConfigError, parse_settings
from regmix.settings.choice import ChooseSection, ChooseSettings

RULES = ("topk", "optimize", "penalized", "trust_region")
# candidates whose std or support distance is computed at once when a rule needs them:
# only those whose prediction alone could still enter the top k are scored
LAZY_BLOCK = 1024
# entries of one candidates x proxies distance block (8 bytes each: 32 MB; 8192 rows of a 512-run swarm)
SUPPORT_CELLS = 4_194_304
# bisection steps when a trust-region average is pulled back inside the radius
SHRINK_STEPS = 60


def choose_defaults() -> dict:
    """The schema's defaults of the `choose:` section (one source of truth)."""
    props = load_schema()["properties"]["choose"]["properties"]
    return {key: spec["default"] for key, spec in props.items()}


def choose_settings(
    samples: int,
    top_k: int,
    seed: int = 0,
    max_epochs: float | None = None,
    large_train_tokens: int | None = None,
    **section,
) -> ChooseSettings:
    """Settings for a choice made in Python (benchmarks, tests): the schema's `choose:`
    defaults with `section`'s values, as `--settings` would give them. No epoch cap
    unless `max_epochs` is given."""
    values = {**choose_defaults(), "samples": samples, "top_k": top_k, **section}
    return ChooseSettings(seed, ChooseSection.from_dict(values), max_epochs, large_train_tokens)


def check_rule(rule: str, uncertainty_weight: float, trust_quantile: float) -> None:
    """The rule's own settings, refused naming the key (the settings JSON may not have
    been through the config validator)."""
    if rule not in RULES:
        raise ValueError(f"config key 'choose.rule' = {rule!r}: must be one of {list(RULES)}")
    if not (isinstance(uncertainty_weight, (int, float)) and math.isfinite(uncertainty_weight)) or (
        uncertainty_weight < 0
    ):
        raise ValueError(f"config key 'choose.uncertainty_weight' = {uncertainty_weight!r}: must be a number >= 0")
    if not (isinstance(trust_quantile, (int, float)) and 0 < trust_quantile <= 1):
        raise ValueError(f"config key 'choose.trust_quantile' = {trust_quantile!r}: must be in (0, 1]")


def nearest_proxy_distance(model: FittedModel, rows: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row to the nearest proxy mixture, in bounded blocks."""
    out = np.empty(len(rows))
    step = _support_rows(model)
    for start in range(0, len(rows), step):
        out[start : start + step] = model.support(rows[start : start + step])[0]
    return out


def _support_rows(model: FittedModel) -> int:
    return max(1, SUPPORT_CELLS // max(0 if model.swarm is None else len(model.swarm), 1))


def trust_radius(model: FittedModel, quantile: float) -> float:
    """The `quantile` of the proxies' leave-one-out nearest-neighbour distances: how far
    from its nearest other proxy a proxy mixture typically lies, i.e. the spacing at which
    the swarm (and the CV scores measured on it) says anything about the regressor."""
    if model.swarm is None or len(model.swarm) < 2:
        raise ValueError("the trust region needs the model's training swarm (2+ mixtures; rerun `regmix fit`)")
    T = np.asarray(model.swarm, dtype=float)
    norms = (T**2).sum(axis=1)
    nearest = np.empty(len(T))
    step = _support_rows(model)
    for start in range(0, len(T), step):  # in blocks: a large (imported) swarm stays in memory
        block = slice(start, start + step)
        sq = norms[block, None] + norms[None, :] - 2.0 * T[block] @ T.T
        sq[np.arange(len(sq)), np.arange(start, start + len(sq))] = np.inf  # not itself
        nearest[block] = np.sqrt(np.maximum(sq.min(axis=1), 0.0))
    return float(np.quantile(nearest, quantile))


class _TopK:
    """The k lowest (score, draw order) rows seen so far, sorted."""

    def __init__(self, k: int, width: int):
        self.k = k
        self.rows, self.pred, self.score = np.empty((0, width)), np.empty(0), np.empty(0)
        self.order = np.empty(0, dtype=np.int64)
        self.seen = 0  # rows offered (admissible ones, for a restricted selection)

    def threshold(self) -> float:
        """A row scoring above this cannot enter (inf until k rows are kept)."""
        return float(self.score[-1]) if len(self.score) >= self.k else math.inf

    def offer(self, rows: np.ndarray, pred: np.ndarray, score: np.ndarray, order: np.ndarray) -> None:
        self.seen += len(rows)
        rows, pred = np.vstack([self.rows, rows]), np.concatenate([self.pred, pred])
        score, order = np.concatenate([self.score, score]), np.concatenate([self.order, order])
        keep = np.lexsort((order, score))[: self.k]
        self.rows, self.pred, self.score, self.order = rows[keep], pred[keep], score[keep], order[keep]


def _offer_lazily(
    model: FittedModel,
    selection: _TopK,
    rows: np.ndarray,
    pred: np.ndarray,
    order: np.ndarray,
    uncertainty_weight: float,
    radius: float | None,
) -> None:
    """Offer a chunk to a selection scored pred + uncertainty_weight * std and/or limited
    to the trust radius. The std and the distance are computed in order of prediction and
    only while the prediction alone could still enter (score >= pred): exact, and cheap."""
    by_pred = np.lexsort((order, pred))
    rows, pred, order = rows[by_pred], pred[by_pred], order[by_pred]
    for start in range(0, len(pred), LAZY_BLOCK):
        limit = selection.threshold()
        if pred[start] > limit:
            break
        stop = start + LAZY_BLOCK
        block_rows, block_pred, block_order = rows[start:stop], pred[start:stop], order[start:stop]
        ok = block_pred <= limit
        if radius is not None:
            ok &= nearest_proxy_distance(model, block_rows) <= radius
        block_rows, block_pred, block_order = block_rows[ok], block_pred[ok], block_order[ok]
        if not len(block_rows):
            continue
        score = block_pred
        if uncertainty_weight:
            score = block_pred + uncertainty_weight * model.predict_std_weights(block_rows)
        selection.offer(block_rows, block_pred, score, block_order)


def simulate(
    model: FittedModel,
    prior: np.ndarray,
    samples: int,
    top_k: int,
    seed: int,
    caps: np.ndarray | None = None,
    chunk_size: int = 100_000,
    lower: np.ndarray | None = None,
    uncertainty_weight: float | None = None,
    radius: float | None = None,
) -> tuple[_TopK, _TopK | None, int]:
    """(the top k by predicted target, the top k of the penalized / trust-region score or
    None when neither is asked for, feasible count), from one pass over the same draws.

    Lowest score first; ties broken by draw order, so the result depends only on (model,
    prior, samples, seed, caps, bounds, weight, radius), not on the chunk size.
    """
    if top_k > samples:
        raise ValueError(f"top_k = {top_k} is larger than samples = {samples}")
    if (prior <= 0).any():
        raise ValueError(
            "every prior share must be > 0 for a Dirichlet(prior) draw "
            f"(zero for column(s) {[model.domains[i] for i in np.where(prior <= 0)[0]]})"
        )
    rng = stage_rng(seed, "choose")
    plain = _TopK(top_k, len(prior))
    restricted = _TopK(top_k, len(prior)) if uncertainty_weight is not None or radius is not None else None
    for start in range(0, samples, chunk_size):
        n = min(chunk_size, samples - start)
        rows = rng.dirichlet(prior, n)
        order = np.arange(start, start + n)
        if caps is not None:
            ok = (rows <= caps[None, :] * (1 + 1e-9)).all(axis=1)
            rows, order = rows[ok], order[ok]
        if lower is not None:
            ok = (rows >= lower[None, :] - 1e-12).all(axis=1)
            rows, order = rows[ok], order[ok]
        if not len(rows):
            continue
        pred = model.predict_weights(rows)
        plain.offer(rows, pred, pred, order)
        if restricted is not None:
            _offer_lazily(model, restricted, rows, pred, order, uncertainty_weight or 0.0, radius)
    if plain.seen < top_k:
        raise ValueError(
            f"only {plain.seen} of {samples} simulated mixtures are feasible under the epoch cap"
            f"{' and choose.bounds' if lower is not None else ''}; need top_k = {top_k} "
            "(raise choose.samples or mixtures.max_epochs, or widen choose.bounds)"
        )
    if restricted is not None and restricted.seen < top_k:
        raise ValueError(
            f"only {restricted.seen} of the {plain.seen} feasible simulated mixtures lie within the trust radius "
            f"{radius:.6f} of the swarm; need top_k = {top_k} (raise choose.samples or choose.trust_quantile)"
        )
    return plain, restricted, plain.seen


def simulate_top_k(
    model: FittedModel,
    prior: np.ndarray,
    samples: int,
    top_k: int,
    seed: int,
    caps: np.ndarray | None = None,
    chunk_size: int = 100_000,
    lower: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(top-k weight rows sorted by predicted target, their predictions, feasible count)."""
    plain, _, feasible = simulate(model, prior, samples, top_k, seed, caps, chunk_size, lower)
    return plain.rows, plain.pred, feasible


def pull_inside(model: FittedModel, mean: np.ndarray, best: np.ndarray, radius: float) -> tuple[np.ndarray, float]:
    """The average of candidates inside the trust region may lie outside it (a union of
    balls is not convex): move it towards the best candidate (inside) just far enough.
    Both meet the caps and bounds (a convex set), so every point between does. Returns the
    point and the share t of the way to the best candidate (0 = the average itself)."""

    def inside(point):  # as written (rounded, like describe_choice)
        return nearest_proxy_distance(model, np.round(point, 10)[None, :])[0] <= radius

    if inside(mean):
        return mean, 0.0
    low, high = 0.0, 1.0  # invariant: the point at `high` is inside
    for _ in range(SHRINK_STEPS):
        mid = 0.5 * (low + high)
        low, high = (low, mid) if inside((1 - mid) * mean + mid * best) else (mid, high)
    return (1 - high) * mean + high * best, high


def describe_choice(model: FittedModel, weights: np.ndarray, prior: np.ndarray) -> dict:
    """How far to trust one mixture: prediction, predictive std, distance to the swarm.

    Only the rows reported get a std (a lightgbm fold ensemble is too slow for a million).
    Everything is of the weights as written (rounded): trees split 0 from 1e-12."""
    row = np.round(np.asarray(weights, dtype=float), 10)[None, :]
    report = {
        "weights": {d: float(w) for d, w in zip(model.domains, row[0], strict=True)},
        "predicted_target": round(float(model.predict_weights(row)[0]), 8),
        "predicted_std": round(float(model.predict_std_weights(row)[0]), 8),
        "kl_to_prior": round(kl_divergence(row[0], prior), 8),
        "support_distance": None,
        "nearest_proxy_row": None,
        "beyond_range": {},
    }
    if model.swarm is not None:
        distance, nearest, beyond = model.support(row)
        report["support_distance"] = round(float(distance[0]), 8)
        report["nearest_proxy_row"] = int(nearest[0])
        signs = zip(model.domains, beyond[0], strict=True)
        report["beyond_range"] = {d: ("above" if b > 0 else "below") for d, b in signs if b}
    return report


def choose(
    model: FittedModel,
    prior: dict[str, float],
    settings: ChooseSettings,
    token_counts: dict[str, int] | None = None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """(the choice's report, the chosen rule's top-k rows, their predictions).

    The epoch cap applies when settings.max_epochs is set: from `token_counts` and
    settings.large_train_tokens when given, else the paper's max_epochs x prior share."""
    section = settings.choose
    samples, top_k, seed, rule, bounds = section.samples, section.top_k, settings.seed, section.rule, section.bounds
    max_epochs, train_tokens, kl_weight = settings.max_epochs, settings.large_train_tokens, section.kl_weight
    uncertainty_weight, trust_quantile = section.uncertainty_weight, section.trust_quantile
    check_rule(rule, uncertainty_weight, trust_quantile)
    domains = model.domains
    prior_vec = np.array([prior[d] for d in domains])
    caps = weight_caps(domains, prior, max_epochs, token_counts, train_tokens) if max_epochs is not None else None
    lower = upper = None
    if bounds:
        low, high = check_choose_bounds(bounds, domains)
        lower = np.array(low)
        upper = np.minimum(caps if caps is not None else 1.0, np.array(high))
        if upper.sum() < 1 - 1e-9 or (lower > upper).any():
            raise ValueError(
                "config key 'choose.bounds': no mixture meets them together with the epoch caps "
                f"({ {d: round(float(c), 6) for d, c in zip(domains, upper, strict=True)} } at most)"
            )
    else:
        upper = caps
    radius = None
    if model.swarm is not None and len(model.swarm) >= 2:
        radius = trust_radius(model, trust_quantile)
    elif rule == "trust_region":
        trust_radius(model, trust_quantile)  # raises, naming what is missing
    plain, restricted, feasible = simulate(
        model,
        prior_vec,
        samples,
        top_k,
        seed,
        upper,
        section.chunk_size,
        lower,
        uncertainty_weight if rule == "penalized" else None,
        radius if rule == "trust_region" else None,
    )

    def report_of(weights: np.ndarray) -> dict:
        report = describe_choice(model, weights, prior_vec)
        if radius is not None:
            report["within_trust_radius"] = bool(report["support_distance"] <= radius + 1e-8)
        if rule == "penalized":  # both choices scored alike, so the trade-off reads off the file
            score = report["predicted_target"] + uncertainty_weight * report["predicted_std"]
            report["penalized_score"] = round(score, 8)
        return report

    mean = plain.rows.mean(axis=0)
    mean = mean / mean.sum()
    topk_report = report_of(mean)
    choices = {"topk": topk_report}
    chosen, selection = topk_report, plain
    if rule == "optimize":
        box_lower = lower if lower is not None else np.zeros(len(domains))
        box_upper = upper if upper is not None else np.ones(len(domains))
        starts = {"top-k average": mean, "best candidate": plain.rows[0], "prior": prior_vec / prior_vec.sum()}
        best = minimise(model, prior_vec, starts, box_lower, box_upper, kl_weight)
        opt_report = report_of(best["weights"])
        written = np.array(list(opt_report["weights"].values()))
        # compared as written (rounded), so that the kept mixture is the better one in the file too
        opt_objective = objective(model, written, prior_vec, kl_weight)
        topk_objective = objective(model, np.array(list(topk_report["weights"].values())), prior_vec, kl_weight)
        fallback = opt_objective > topk_objective or not is_feasible(written, box_lower, box_upper)
        opt_report.update(
            {
                "objective": round(opt_objective, 8),
                "kl_weight": kl_weight,
                "start": best["start"],
                "iterations": best["iterations"],
                "gradient": best["smooth"],
                "optimizer_message": best["message"],
                "kept": "top-k average (better by the model)" if fallback else "optimum",
            }
        )
        choices["optimize"] = opt_report
        chosen = topk_report if fallback else opt_report
    elif rule in ("penalized", "trust_region"):
        assert restricted is not None  # simulate ranks the rule's own score when given its weight or radius
        restricted_mean = restricted.rows.mean(axis=0)
        restricted_mean = restricted_mean / restricted_mean.sum()
        extra = {}
        if rule == "penalized":
            extra = {"uncertainty_weight": uncertainty_weight}
        else:
            assert radius is not None  # trust_radius raised above without a swarm
            restricted_mean, share = pull_inside(model, restricted_mean, restricted.rows[0], radius)
            extra = {"trust_quantile": trust_quantile, "pulled_towards_best_candidate": round(share, 8)}
        report = report_of(restricted_mean)
        report.update(extra)
        choices[rule] = report
        chosen, selection = report, restricted
    result = {
        "weights": dict(chosen["weights"]),  # a copy: the YAML is written without an alias
        "predicted_target": chosen["predicted_target"],
        "target": model.target,
        "rule": rule,
        "top_k_predicted": {
            "best": round(float(selection.pred[0]), 8),
            "worst": round(float(selection.pred[-1]), 8),
            "mean": round(float(selection.pred.mean()), 8),
        },
        "choices": choices,
        "trust_radius": None if radius is None else {"quantile": trust_quantile, "radius": round(radius, 8)},
        "bounds": {d: [float(v) for v in b] for d, b in (bounds or {}).items()},
        "epochs": None,
        "max_epochs": max_epochs,
        "top_k": top_k,
        "samples": samples,
        "feasible_samples": feasible,
        "seed": seed,
    }
    if token_counts is not None and train_tokens:
        result["epochs"] = {
            d: round(e, 6) for d, e in epochs_needed(result["weights"], token_counts, train_tokens).items()
        }
    return result, selection.rows, selection.pred


def plot_weights(
    choices: dict[str, dict],
    prior: dict[str, float],
    baselines: dict[str, dict[str, float]],
    path: str | Path,
    chosen: str = "topk",
) -> None:
    """Bars per domain: each reported choice (labelled with its prediction, std and
    distance to the swarm; `chosen`, the one written as the mixture, first), the prior
    and any baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = [chosen, *[name for name in choices if name != chosen]]
    series = {}
    for name in ordered:
        c = choices[name]
        distance = "" if c.get("support_distance") is None else f", dist {c['support_distance']:.3f}"
        label = (
            f"{name}{' (chosen)' if name == chosen else ''}: {c['predicted_target']:.4f} +- {c['predicted_std']:.4f}"
        )
        series[label + distance] = c["weights"]
    series.update({"prior": prior, **baselines})
    domains = list(prior)
    width = 0.8 / len(series)
    x = np.arange(len(domains))
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(domains) * (1 + 0.25 * len(series))), 4.5))
    for i, (label, mix) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [mix.get(d, 0.0) for d in domains], width, label=label)
    ax.set_xticks(x, domains, rotation=45, ha="right")
    ax.set_ylabel("share of training tokens")
    ax.set_title(
        f"Chosen mixture ({chosen}) vs prior\nlegend: predicted target +- 1-sigma std, distance to the nearest proxy",
        fontsize="medium",
    )
    ax.legend(fontsize="small")
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def read_mixture_file(path: str | Path, domains: list[str]) -> dict[str, float]:
    """A named mixture: `weights:` (ours) or `train:` (the paper's config files), normalised."""
    data = files.read_yaml(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping")
    weights = data.get("weights", data.get("train", data))
    if not isinstance(weights, dict):
        raise ValueError(f"{path}: no 'weights' mapping")
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ValueError(f"{path}: unknown domain(s) {unknown} (model domains: {domains})")
    total = float(sum(weights.values()))
    if total <= 0 or any(float(v) < 0 for v in weights.values()):
        raise ValueError(f"{path}: weights must be >= 0 with a positive sum")
    return {d: float(weights.get(d, 0.0)) / total for d in domains}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="regmix choose",
        description="Simulate mixtures, predict them, choose by choose.rule (settings from --settings only).",
    )
    parser.add_argument(
        "--settings",
        required=True,
        help="stage settings JSON (stage_settings(config, 'choose')): seed, choose.*, max_epochs, large_train_tokens",
    )
    parser.add_argument("--model", required=True, help="directory written by `regmix fit`")
    parser.add_argument("--prior", required=True, help="YAML mapping domain (mixture column) -> token share")
    parser.add_argument("--out", required=True, help="output YAML")
    parser.add_argument(
        "--tokens-available",
        help="token_counts.json (domain -> {train, valid}): the epoch cap from token counts "
        "(without: the paper's max_epochs x prior share)",
    )
    parser.add_argument("--plot", help="PNG: the reported choices vs prior (and baselines)")
    parser.add_argument("--baselines", nargs="*", default=[], help="named mixture YAMLs to show on the plot")
    parser.add_argument("--topk-out", help="CSV of the chosen rule's top-k candidates and their predictions")
    args = parser.parse_args(argv)

    settings = ChooseSettings.from_json(parse_settings(args.settings))
    if args.tokens_available and (settings.max_epochs is None or settings.large_train_tokens is None):
        raise ConfigError("--tokens-available needs settings keys 'max_epochs' and 'large_train_tokens'")

    model = load_model(args.model)
    prior = read_prior(args.prior, model.domains)
    counts = read_token_counts(args.tokens_available, model.domains) if args.tokens_available else None
    result, rows, preds = choose(model, prior, settings, counts)
    inputs = [Path(args.model) / "model.pkl", args.prior] + ([args.tokens_available] if args.tokens_available else [])
    result["provenance"] = files.provenance(settings.provenance(), inputs)
    if args.topk_out:
        frame = pd.DataFrame(np.round(rows, 10), columns=model.domains)
        frame.insert(0, "predicted", np.round(preds, 8))
        frame.insert(0, "rank", np.arange(1, len(rows) + 1))
        with files.atomic_path(args.topk_out) as tmp:
            frame.to_csv(tmp, index=False)
    if args.plot:
        baselines = {Path(p).stem: read_mixture_file(p, model.domains) for p in args.baselines}
        # the rule's own choice, unless rule optimize kept the top-k average
        kept = result["rule"] if result["choices"][result["rule"]]["weights"] == result["weights"] else "topk"
        plot_weights(result["choices"], prior, baselines, args.plot, kept)
    files.write_yaml(args.out, result)
    print(
        f"regmix choose: {result['samples']} candidates ({result['feasible_samples']} feasible), top {result['top_k']}"
    )
    if result["trust_radius"]:
        print(
            f"regmix choose: trust radius {result['trust_radius']['radius']:.4f} (quantile "
            f"{result['trust_radius']['quantile']} of the proxies' nearest-neighbour distances)"
        )
    for name, c in result["choices"].items():
        print(
            f"regmix choose: {name}{' (the rule)' if name == result['rule'] else ''}: predicted "
            f"{model.target} = {c['predicted_target']:.4f} +- {c['predicted_std']:.4f}, distance to the swarm "
            f"{c['support_distance']}, beyond range: {sorted(c['beyond_range']) or 'none'}"
            + (f"; kept the {c['kept']}" if "kept" in c else "")
        )
    top = sorted(result["weights"].items(), key=lambda kv: -kv[1])[:3]
    print(f"regmix choose: rule {result['rule']}, largest weights {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
