"""Choose a mixture: simulate Dirichlet(prior) candidates, predict, average the top k.

Candidates are drawn and predicted in chunks, so memory is bounded by the chunk size
and k whatever the number of samples. Infeasible candidates (a domain needing more
than max_epochs passes over its train tokens in the large run) are discarded before
ranking; the average of feasible mixtures is feasible too, because the epoch cap is a
per-domain upper bound on the weight (a convex set). `choose.bounds` ([lo, hi] per
domain) cut the same box further, for either rule.

`choose.rule: optimize` also minimises the model's prediction directly over that set
(regmix.regression.optimize) and keeps the optimum unless the top-k average is better by
the model. Either way the output records, per choice, its prediction, predictive std,
distance to the nearest proxy mixture and the domains beyond the swarm's range, so a
user sees what an extrapolating choice costs in trust.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from regmix import files
from regmix.config import check_choose_bounds, parse_settings
from regmix.mixtures import epochs_needed, read_prior, read_token_counts, stage_rng, weight_caps
from regmix.regression import FittedModel, load_model
from regmix.regression.optimize import is_feasible, kl_divergence, minimise, objective

DEFAULT_CHUNK = 100_000


def simulate_top_k(
    model: FittedModel,
    prior: np.ndarray,
    samples: int,
    top_k: int,
    seed: int,
    caps: np.ndarray | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    lower: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(top-k weight rows sorted by predicted target, their predictions, feasible count).

    Lowest predicted target first; ties broken by draw order, so the result depends
    only on (model, prior, samples, seed, caps), not on the chunk size.
    """
    if top_k > samples:
        raise ValueError(f"top_k = {top_k} is larger than samples = {samples}")
    if (prior <= 0).any():
        raise ValueError(
            "every prior share must be > 0 for a Dirichlet(prior) draw "
            f"(zero for column(s) {[model.domains[i] for i in np.where(prior <= 0)[0]]})"
        )
    rng = stage_rng(seed, "choose")
    best_rows = np.empty((0, len(prior)))
    best_pred = np.empty(0)
    best_order = np.empty(0, dtype=np.int64)
    feasible = 0
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
        feasible += len(rows)
        if not len(rows):
            continue
        pred = model.predict_weights(rows)
        rows = np.vstack([best_rows, rows])
        pred = np.concatenate([best_pred, pred])
        order = np.concatenate([best_order, order])
        keep = np.lexsort((order, pred))[:top_k]
        best_rows, best_pred, best_order = rows[keep], pred[keep], order[keep]
    if feasible < top_k:
        raise ValueError(
            f"only {feasible} of {samples} simulated mixtures are feasible under the epoch cap"
            f"{' and choose.bounds' if lower is not None else ''}; need top_k = {top_k} "
            "(raise --samples or --max-epochs, or widen choose.bounds)"
        )
    return best_rows, best_pred, feasible


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
    samples: int,
    top_k: int,
    seed: int,
    max_epochs: float | None = None,
    token_counts: dict[str, int] | None = None,
    train_tokens: int | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    rule: str = "topk",
    kl_weight: float = 0.0,
    bounds: dict[str, list[float]] | None = None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    if rule not in ("topk", "optimize"):
        raise ValueError(f"config key 'choose.rule' = {rule!r}: must be 'topk' or 'optimize'")
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
    rows, preds, feasible = simulate_top_k(model, prior_vec, samples, top_k, seed, upper, chunk_size, lower)
    mean = rows.mean(axis=0)
    mean = mean / mean.sum()
    topk_report = describe_choice(model, mean, prior_vec)
    choices = {"topk": topk_report}
    chosen = topk_report
    if rule == "optimize":
        box_lower = lower if lower is not None else np.zeros(len(domains))
        box_upper = upper if upper is not None else np.ones(len(domains))
        starts = {"top-k average": mean, "best candidate": rows[0], "prior": prior_vec / prior_vec.sum()}
        best = minimise(model, prior_vec, starts, box_lower, box_upper, kl_weight)
        opt_report = describe_choice(model, best["weights"], prior_vec)
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
    result = {
        "weights": chosen["weights"],
        "predicted_target": chosen["predicted_target"],
        "target": model.target,
        "rule": rule,
        "top_k_predicted": {
            "best": round(float(preds[0]), 8),
            "worst": round(float(preds[-1]), 8),
            "mean": round(float(preds.mean()), 8),
        },
        "choices": choices,
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
    return result, rows, preds


def plot_weights(
    weights: dict[str, float], prior: dict[str, float], baselines: dict[str, dict[str, float]], path: str | Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = list(weights)
    series = {"chosen (regmix)": weights, "prior": prior, **baselines}
    width = 0.8 / len(series)
    x = np.arange(len(domains))
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(domains) * (1 + 0.25 * len(series))), 4.5))
    for i, (label, mix) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [mix.get(d, 0.0) for d in domains], width, label=label)
    ax.set_xticks(x, domains, rotation=45, ha="right")
    ax.set_ylabel("share of training tokens")
    ax.set_title("Chosen mixture vs prior")
    ax.legend()
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
        prog="regmix choose", description="Simulate mixtures, predict them, average the top k."
    )
    parser.add_argument("--model", required=True, help="directory written by `regmix fit`")
    parser.add_argument("--prior", required=True, help="YAML mapping domain (mixture column) -> token share")
    parser.add_argument("--samples", type=int, help="candidates to simulate (default: settings' choose.samples)")
    parser.add_argument("--top-k", type=int, help="candidates averaged (default: settings' choose.top_k)")
    parser.add_argument("--out", required=True, help="output YAML")
    parser.add_argument("--max-epochs", type=float, help="epoch cap per domain in the large run")
    parser.add_argument("--tokens-available", help="token_counts.json (domain -> {train, valid})")
    parser.add_argument("--train-tokens", type=int, help="tokens of the large run")
    parser.add_argument("--seed", type=int, help="simulation seed (default: settings' seed, else 0)")
    parser.add_argument("--chunk-size", type=int, help="candidates per chunk (default: settings' choose.chunk_size)")
    parser.add_argument("--plot", help="PNG: chosen weights vs prior (and baselines)")
    parser.add_argument("--baselines", nargs="*", default=[], help="named mixture YAMLs to show on the plot")
    parser.add_argument("--topk-out", help="CSV of the top-k candidates and their predictions")
    parser.add_argument("--settings", help="stage settings JSON (stage_settings(config, 'choose'))")
    args = parser.parse_args(argv)

    settings = parse_settings(args.settings) if args.settings else {}
    section = settings.get("choose", {})
    samples = args.samples if args.samples is not None else section.get("samples")
    top_k = args.top_k if args.top_k is not None else section.get("top_k")
    if samples is None or top_k is None:
        parser.error("--samples and --top-k are required without --settings")
    if samples < 1 or top_k < 1:
        raise ValueError(f"--samples ({samples}) and --top-k ({top_k}) must be >= 1")
    seed = args.seed if args.seed is not None else settings.get("seed", 0)
    chunk = args.chunk_size or section.get("chunk_size", DEFAULT_CHUNK)
    max_epochs = args.max_epochs if args.max_epochs is not None else None
    train_tokens = args.train_tokens
    if args.tokens_available and max_epochs is None:
        max_epochs = settings.get("max_epochs")
    if args.tokens_available and train_tokens is None:
        train_tokens = settings.get("large_train_tokens")
    if args.tokens_available and (max_epochs is None or train_tokens is None):
        parser.error("--tokens-available needs --max-epochs and --train-tokens (or --settings providing them)")

    model = load_model(args.model)
    prior = read_prior(args.prior, model.domains)
    counts = read_token_counts(args.tokens_available, model.domains) if args.tokens_available else None
    rule, kl_weight, bounds = section.get("rule", "topk"), section.get("kl_weight", 0.0), section.get("bounds", {})
    result, rows, preds = choose(
        model, prior, samples, top_k, seed, max_epochs, counts, train_tokens, chunk, rule, kl_weight, bounds
    )
    inputs = [Path(args.model) / "model.pkl", args.prior] + ([args.tokens_available] if args.tokens_available else [])
    run_settings = {
        "samples": samples,
        "top_k": top_k,
        "seed": seed,
        "max_epochs": max_epochs,
        "train_tokens": train_tokens,
        "rule": rule,
        "kl_weight": kl_weight,
        "bounds": bounds,
    }
    result["provenance"] = files.provenance(run_settings, inputs)
    if args.topk_out:
        frame = pd.DataFrame(np.round(rows, 10), columns=model.domains)
        frame.insert(0, "predicted", np.round(preds, 8))
        frame.insert(0, "rank", np.arange(1, len(rows) + 1))
        with files.atomic_path(args.topk_out) as tmp:
            frame.to_csv(tmp, index=False)
    if args.plot:
        baselines = {Path(p).stem: read_mixture_file(p, model.domains) for p in args.baselines}
        plot_weights(result["weights"], prior, baselines, args.plot)
    files.write_yaml(args.out, result)
    top = sorted(result["weights"].items(), key=lambda kv: -kv[1])[:3]
    print(
        f"regmix choose: {samples} candidates ({result['feasible_samples']} feasible), top {top_k}: "
        f"predicted {model.target} = {result['choices']['topk']['predicted_target']:.4f}"
        f" +- {result['choices']['topk']['predicted_std']:.4f}"
        f" (distance to the swarm {result['choices']['topk']['support_distance']})"
    )
    if "optimize" in result["choices"]:
        opt = result["choices"]["optimize"]
        print(
            f"regmix choose: optimised {opt['predicted_target']:.4f} +- {opt['predicted_std']:.4f} "
            f"(distance {opt['support_distance']}, beyond range: {sorted(opt['beyond_range']) or 'none'}); "
            f"kept the {opt['kept']}"
        )
    print(f"regmix choose: rule {rule}, largest weights {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
