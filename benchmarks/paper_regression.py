"""Regressors and mixture choice on the RegMix paper's released proxy runs.

Fits every regressor on the 512 training runs (hyper-parameters from training rows
only), scores it on the 256 unseen test runs (Spearman/Pearson x100, RMSE, 95%
bootstrap CIs), times the choice over 1,000,000 Dirichlet(prior) candidates, and
compares the chosen mixture with the paper's named 1B mixtures.

    python benchmarks/paper_regression.py [--data DIR] [--samples 1000000] [--regressors ensemble gp lightgbm linear]
                                          [--fit-seeds 0 1 2 3 4] [--rules topk optimize penalized trust_region]
                                          [--cv-folds 5]

`--rules` (default: every choose.rule) adds a table per choice rule: the chosen mixture's
Pile-CC share, its prediction and predictive std by the fitting regressor, its distance to
the nearest proxy mixture against the trust radius and the domains beyond the swarm's
range, its prediction by every regressor and their spread (a choice one model loves and
the others doubt is a warning), and the rule's wall/CPU seconds (optimize includes the
simulation that gives its starts).

`--cv-folds` (default 5; 0 = skip) picks the default regressor and rule by
cross-validation on the 512 TRAINING runs only, with the one-standard-error rule (within
one standard error of the best fold mean, the cheaper regressor / simpler rule wins): the
regressor by per-fold Spearman, the rule by its out-of-fold regret (each fold's model ranks
the fold's held-out runs as the rule would rank candidates: by prediction, by prediction +
uncertainty_weight x std, or by prediction among the runs within the trust radius; regret =
mean true loss of its top 5 minus the fold's best run). The same metrics on the 256 test
runs are printed next to them and never used to pick. A held-out run is a real mixture with
a real loss, so this is the one honest check of a choice rule without training a large
model; it cannot see extrapolation far beyond the swarm, which is what penalized and
trust_region guard against.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from regmix.choose import RULES, choose, choose_defaults, choose_settings, read_mixture_file, trust_radius
from regmix.paper import NAMED, TARGET, data_dir, prior_by_column
from regmix.regression import (
    REGRESSORS,
    coverage90,
    fit_model,
    plot_pred_vs_true,
    read_swarm_csvs,
    regression_defaults,
    score,
    target_values,
)

PAPER_SPEARMAN = {"lightgbm": 98.45, "linear": 90.08}
# held-out runs each rule "chooses" in the CV and test regret (the analogue of the top k)
REGRET_TOP = 5


def load_paper(data: Path):
    train = read_swarm_csvs(data / "train_mixture_1m.csv", data / "train_pile_loss_1m.csv")
    test = read_swarm_csvs(data / "test_mixture_1m.csv", data / "test_pile_loss_1m.csv")
    return train, test


def fmt(metric: dict, digits: int) -> str:
    return f"{metric['value']:.{digits}f} [{metric['ci_low']:.{digits}f}, {metric['ci_high']:.{digits}f}]"


def assess_choice(model, prior: dict, named: dict, samples: int, top_k: int, rule: str = "topk"):
    """Choose on `model` (choice seed 0, epoch cap 15); returns the chosen mixture, the
    choice's (wall, CPU) seconds, its L1 distance to the paper's regmix mixture, the
    model's prediction for each named mixture, and whether ours is predicted no worse."""
    start, start_cpu = time.perf_counter(), time.process_time()
    settings = choose_settings(samples, top_k, seed=0, max_epochs=15, rule=rule)  # schema's rule settings
    chosen, _, _ = choose(model, prior, settings)
    seconds = (time.perf_counter() - start, time.process_time() - start_cpu)
    weights = np.array(list(chosen["weights"].values()))
    l1 = float(np.abs(weights - np.array(list(named["regmix"].values()))).sum())
    named_pred = {n: model.predict_mapping(w) for n, w in named.items()}
    no_worse = all(chosen["predicted_target"] <= v + 1e-9 for v in named_pred.values())
    return chosen, seconds, l1, named_pred, no_worse


def print_rules(args, rows, models: dict, prior: dict, named: dict) -> None:
    """One line per (regressor, rule): the choice, how far to trust it, and what every regressor predicts."""
    defaults = choose_defaults()
    radii = {name: trust_radius(m, defaults["trust_quantile"]) for name, m in models.items()}
    print(
        f"\nChoice rules (epoch cap 15 x prior; penalized: uncertainty_weight {defaults['uncertainty_weight']}; "
        f"trust_region: radius = quantile {defaults['trust_quantile']} of the proxies' nearest-neighbour distances, "
        f"{radii[next(iter(radii))]:.4f}; std = the fitting regressor's 1-sigma predictive std; dist = Euclidean "
        f"distance to the nearest of the {len(next(iter(models.values())).swarm)} proxy mixtures; "
        "spread = max - min of the regressors' predictions)"
    )
    header = (
        f"{'regressor':<10} {'rule':<12} {'wall s':>7} {'CPU s':>6} {'pile_cc':>8} {'pred':>8} {'std':>7} {'dist':>6} "
        f"{'in r?':>5} {'beyond':>6} {'L1 paper':>8} "
        + " ".join(f"{'by ' + n:>12}" for n in models)
        + f" {'spread':>7}  kept"
    )
    print(header)
    print("-" * len(header))
    topk_runs = {name: (chosen, seconds) for name, _, _, chosen, seconds, *_ in rows}
    paper = np.array(list(named["regmix"].values()))
    for name, model in models.items():
        for rule in args.rules:
            if rule == "topk":
                chosen, seconds = topk_runs[name]
            else:
                chosen, seconds, *_ = assess_choice(model, prior, named, args.samples, args.top_k, rule)
            report = chosen["choices"][rule]
            weights = np.array(list(chosen["weights"].values()))
            by_all = {other: m.predict_weights(weights[None, :])[0] for other, m in models.items()}
            kept = report.get("kept", "optimum") if rule == "optimize" else "-"
            print(
                f"{name:<10} {rule:<12} {seconds[0]:>7.2f} {seconds[1]:>6.2f} "
                f"{chosen['weights']['train_the_pile_pile_cc']:>8.3f} {report['predicted_target']:>8.4f} "
                f"{report['predicted_std']:>7.4f} {report['support_distance']:>6.3f} "
                f"{'yes' if report['support_distance'] <= radii[name] + 1e-8 else 'NO':>5} "
                f"{len(report['beyond_range']):>6d} {np.abs(weights - paper).sum():>8.3f} "
                + " ".join(f"{by_all[o]:>12.4f}" for o in models)
                + f" {max(by_all.values()) - min(by_all.values()):>7.4f}  {kept}"
            )
            if rule == "optimize":
                print(
                    f"{'':<10} {'':<12} optimum from the {report['start']} ({report['iterations']} SLSQP iterations); "
                    f"beyond range: {sorted(report['beyond_range']) or '-'}"
                )


def rule_scores(model, X: np.ndarray, quantile: float, weight: float) -> dict[str, np.ndarray]:
    """How each rule ranks the rows X as candidates (lower first; inf = not admissible)."""
    pred, std = model.predict_weights(X), model.predict_std_weights(X)
    inside = model.support(X)[0] <= trust_radius(model, quantile)
    return {
        "topk": pred,
        "optimize": pred,  # on a finite set of real runs the exact optimum is the best-predicted one
        "penalized": pred + weight * std,
        "trust_region": np.where(inside, pred, np.inf),
        "_std": std,
    }


def regret(scores: np.ndarray, y: np.ndarray, top: int = REGRET_TOP) -> float:
    """Mean true loss of the `top` rows ranked first (admissible ones only) minus the best row's."""
    order = np.argsort(scores, kind="stable")
    order = order[np.isfinite(scores[order])][:top]
    return float(y[order].mean() - y.min()) if len(order) else float("nan")


def one_se_pick(means: dict[str, float], errors: dict[str, float], order: list[str], higher_is_better: bool) -> str:
    """The first of `order` whose CV mean is within one standard error of the best one's
    (the one-standard-error rule: a difference smaller than the folds' noise picks nothing)."""
    best = (max if higher_is_better else min)(means, key=means.get)
    margin = errors[best]
    ok = [
        k for k in order if (means[k] >= means[best] - margin if higher_is_better else means[k] <= means[best] + margin)
    ]
    return ok[0]


def print_selection(args, train, test, models: dict, fit_seconds: dict[str, float]) -> None:
    """Pick the regressor and the rule by CV on the training runs; show the test runs' metrics beside."""
    from scipy.stats import spearmanr

    from regmix.regression.regressors import kfold

    defaults = choose_defaults()
    q, weight = defaults["trust_quantile"], defaults["uncertainty_weight"]
    (train_mix, train_loss), (test_mix, test_loss) = train, test
    X, y = train_mix.to_numpy(dtype=float), target_values(train_loss, TARGET)
    X_test, y_test = test_mix[list(train_mix.columns)].to_numpy(dtype=float), target_values(test_loss, TARGET)
    X_test = X_test / X_test.sum(axis=1, keepdims=True)
    oof = {name: np.empty(len(y)) for name in models}
    oof_std = {name: np.empty(len(y)) for name in models}
    fold_spearman = {name: [] for name in models}
    cv_regret = {name: {rule: [] for rule in args.rules} for name in models}
    start = time.perf_counter()
    for train_rows, held in kfold(len(y), args.cv_folds, 0):
        for name in models:
            model = fit_model(train_mix.iloc[train_rows], train_loss.iloc[train_rows], TARGET, name, folds=5, seed=0)
            scores = rule_scores(model, X[held], q, weight)
            oof[name][held], oof_std[name][held] = model.predict_weights(X[held]), scores["_std"]
            fold_spearman[name].append(100 * spearmanr(y[held], oof[name][held])[0])
            for rule in args.rules:
                cv_regret[name][rule].append(regret(scores[rule], y[held]))
    seconds = time.perf_counter() - start

    def mean_se(values):
        values = np.asarray(values, dtype=float)
        return float(np.nanmean(values)), float(np.nanstd(values, ddof=1) / np.sqrt(np.isfinite(values).sum()))

    print(
        f"\nSelection by {args.cv_folds}-fold CV on the {len(y)} TRAINING runs only ({seconds:.0f} s); the test "
        f"columns (the {len(y_test)} unseen runs, model fitted on all training runs) are shown, never used to pick. "
        "Fold Sp. = mean +- standard error of the per-fold Spearman; cover90 = share inside pred +- 1.645 std"
    )
    header = (
        f"{'regressor':<10} {'CV Spearman':>11} {'fold Sp. +- se':>15} {'test Sp.':>8} {'CV RMSE':>8} {'test RMSE':>9} "
        f"{'CV cover90':>10} {'test cov90':>10} {'fit s':>6}"
    )
    print(header)
    print("-" * len(header))
    test_scores, sp_mean, sp_se = {}, {}, {}
    for name, model in models.items():
        cv = score(y, oof[name], bootstrap=0)
        test_pred = model.predict_weights(X_test)
        held_out = score(y_test, test_pred, bootstrap=0)
        test_scores[name] = rule_scores(model, X_test, q, weight)
        sp_mean[name], sp_se[name] = mean_se(fold_spearman[name])
        print(
            f"{name:<10} {cv['spearman']['value']:>11.2f} {f'{sp_mean[name]:.2f} +- {sp_se[name]:.2f}':>15} "
            f"{held_out['spearman']['value']:>8.2f} {cv['rmse']['value']:>8.4f} {held_out['rmse']['value']:>9.4f} "
            f"{coverage90(y, oof[name], oof_std[name]):>10.3f} "
            f"{coverage90(y_test, test_pred, test_scores[name]['_std']):>10.3f} {fit_seconds[name]:>6.1f}"
        )
    print(
        f"\nRule regret (mean true loss of the top {REGRET_TOP} runs each rule ranks first, minus the best run; lower "
        f"is better): CV = mean +- standard error over the {args.cv_folds} held-out training folds, test = on the "
        f"{len(y_test)} test runs"
    )
    header = f"{'regressor':<10} " + " ".join(f"{'CV ' + r:>22} {'test':>7}" for r in args.rules)
    print(header)
    print("-" * len(header))
    for name in models:
        cells = []
        for r in args.rules:
            m, se = mean_se(cv_regret[name][r])
            cells.append(f"{f'{m:.4f} +- {se:.4f}':>22} {regret(test_scores[name][r], y_test):>7.4f}")
        print(f"{name:<10} " + " ".join(cells))
    # ties within the folds' noise go to the cheaper regressor (fit seconds on the training runs, this run)
    # and to the simpler rule (the order of choose.rule's enum)
    regressor = one_se_pick(sp_mean, sp_se, sorted(models, key=fit_seconds.get), higher_is_better=True)
    stats = {r: mean_se(cv_regret[regressor][r]) for r in args.rules}
    rule = one_se_pick(
        {r: v[0] for r, v in stats.items()},
        {r: v[1] for r, v in stats.items()},
        [r for r in RULES if r in args.rules],
        higher_is_better=False,
    )
    best_regressor = max(sp_mean, key=sp_mean.get)
    best_rule = min(stats, key=lambda r: stats[r][0])
    print(
        f"Picked by CV on the training runs (one-standard-error rule): regressor {regressor} (best mean fold "
        f"Spearman: {best_regressor}; the cheapest within one se of it), rule {rule} (lowest CV regret with "
        f"{regressor}: {best_rule}; the simplest within one se of it). Schema defaults: regressor "
        f"{regression_defaults()['regressor']}, rule {defaults['rule']}."
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=data_dir())
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--regressors", nargs="*", default=sorted(REGRESSORS))
    parser.add_argument(
        "--plot-dir", type=Path, help="write test_pred_vs_true_<regressor>.png (the 256 unseen runs) here"
    )
    parser.add_argument(
        "--fit-seeds",
        type=int,
        nargs="*",
        default=[],
        help="also refit with these seeds (CV split and model seed) and print how the choice moves",
    )
    parser.add_argument(
        "--rules", nargs="*", default=list(RULES), choices=list(RULES), help="compare these choice rules"
    )
    parser.add_argument(
        "--cv-folds", type=int, default=5, help="pick regressor and rule by CV on the training runs (0 = skip)"
    )
    args = parser.parse_args(argv)
    if not (args.data / "train_mixture_1m.csv").is_file():
        print(f"paper data not found under {args.data}", file=sys.stderr)
        return 1
    default = regression_defaults()["regressor"]
    (train_mix, train_loss), (test_mix, test_loss) = load_paper(args.data)
    y_test = target_values(test_loss, TARGET)
    prior = prior_by_column()
    named = {n: read_mixture_file(args.data / "config_1b" / f"{n}.yaml", list(train_mix.columns)) for n in NAMED}

    rows, models = [], {}
    for name in args.regressors:
        start = time.perf_counter()
        model = models[name] = fit_model(train_mix, train_loss, TARGET, name, folds=5, seed=0)
        fit_seconds = time.perf_counter() - start
        test_pred = model.predict_frame(test_mix)
        metrics = score(y_test, test_pred, seed=0)
        if args.plot_dir:
            plot_pred_vs_true(
                y_test,
                test_pred,
                metrics["spearman"]["value"],
                "Pile-CC val loss",
                f"{name}: fit on {len(train_mix)} runs, {len(y_test)} unseen runs",
                args.plot_dir / f"test_pred_vs_true_{name}.png",
            )
        rows.append((name, metrics, fit_seconds, *assess_choice(model, prior, named, args.samples, args.top_k)))

    print(
        f"RegMix paper data: fit on {len(train_mix)} train runs, scored on {len(y_test)} unseen test runs, "
        f"target {TARGET}"
    )
    print(
        f"Default regressor (config/schema.yaml): {default}. "
        "Brackets: 95% bootstrap CI (1000 resamples of test rows).\n"
    )
    header = f"{'regressor':<10} {'Spearman x100':<24} {'Pearson x100':<24} {'RMSE':<26} {'paper Sp.':>9} {'fit s':>6}"
    print(header)
    print("-" * len(header))
    for name, m, fit_s, *_ in rows:
        paper = PAPER_SPEARMAN.get(name)
        print(
            f"{name:<10} {fmt(m['spearman'], 2):<24} {fmt(m['pearson'], 2):<24} {fmt(m['rmse'], 4):<26} "
            f"{(f'{paper:.2f}' if paper else '-'):>9} {fit_s:>6.1f}"
        )
    print(
        f"\nChoice: {args.samples:,} Dirichlet(prior) candidates, top {args.top_k} averaged, epoch cap 15 x prior; "
        f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (CPU s = time of this process)"
    )
    header = (
        f"{'regressor':<10} {'wall s':>7} {'CPU s':>6} {'L1 to paper':>11} {'pile_cc':>8} {'pred ours':>9} "
        + " ".join(f"{'pred ' + n:>17}" for n in NAMED)
        + "  ours best?"
    )
    print(header)
    print("-" * len(header))
    for name, _, _, chosen, choose_s, l1, named_pred, best in rows:
        ours = chosen["predicted_target"]
        print(
            f"{name:<10} {choose_s[0]:>7.2f} {choose_s[1]:>6.2f} {l1:>11.3f} "
            f"{chosen['weights']['train_the_pile_pile_cc']:>8.3f} {ours:>9.4f} "
            + " ".join(f"{named_pred[n]:>17.4f}" for n in NAMED)
            + f"  {'yes' if best else 'NO'}"
        )
    if args.rules:
        print_rules(args, rows, models, prior, named)
    if args.cv_folds:
        fit_seconds = {name: fit_s for name, _, fit_s, *_ in rows}
        print_selection(args, (train_mix, train_loss), (test_mix, test_loss), models, fit_seconds)
    if args.fit_seeds:
        print(
            f"\nStability over fit seeds {args.fit_seeds} (choice seed 0): Spearman / L1 to paper / pile_cc / "
            "chosen predicted no worse than the named mixtures"
        )
        for name, seed0_metrics, _, seed0_chosen, _, seed0_l1, _, seed0_best in rows:
            cells = []
            for fit_seed in args.fit_seeds:
                if fit_seed == 0:  # the tables above are fit seed 0
                    metrics, chosen, l1, best = seed0_metrics, seed0_chosen, seed0_l1, seed0_best
                else:
                    model = fit_model(train_mix, train_loss, TARGET, name, folds=5, seed=fit_seed)
                    metrics = score(y_test, model.predict_frame(test_mix), bootstrap=0)
                    chosen, _, l1, _, best = assess_choice(model, prior, named, args.samples, args.top_k)
                cells.append(
                    f"{metrics['spearman']['value']:.2f}/{l1:.3f}/"
                    f"{chosen['weights']['train_the_pile_pile_cc']:.3f}/{'y' if best else 'N'}"
                )
            print(f"{name:<10} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
