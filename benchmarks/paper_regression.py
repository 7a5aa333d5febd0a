"""Regressors and mixture choice on the RegMix paper's released proxy runs.

Fits every regressor on the 512 training runs (hyper-parameters from training rows
only), scores it on the 256 unseen test runs (Spearman/Pearson x100, RMSE, 95%
bootstrap CIs), times the choice over 1,000,000 Dirichlet(prior) candidates, and
compares the chosen mixture with the paper's named 1B mixtures.

    python benchmarks/paper_regression.py [--data DIR] [--samples 1000000] [--regressors ensemble gp lightgbm linear]
                                          [--fit-seeds 0 1 2 3 4] [--rules topk optimize]

`--rules` adds a table per choice rule (choose.rule): the chosen mixture's Pile-CC share,
its prediction and predictive std by the fitting regressor, its distance to the nearest
proxy mixture and the domains beyond the swarm's range, its prediction by every other
regressor, and the rule's wall/CPU seconds (the optimize rule includes the simulation
that gives its starts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from regmix.choose import choose, read_mixture_file
from regmix.paper import NAMED, TARGET, data_dir, prior_by_column
from regmix.regression import (
    REGRESSORS,
    fit_model,
    plot_pred_vs_true,
    read_swarm_csvs,
    regression_defaults,
    score,
    target_values,
)

PAPER_SPEARMAN = {"lightgbm": 98.45, "linear": 90.08}


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
    chosen, _, _ = choose(model, prior, samples, top_k, seed=0, max_epochs=15, rule=rule)
    seconds = (time.perf_counter() - start, time.process_time() - start_cpu)
    weights = np.array(list(chosen["weights"].values()))
    l1 = float(np.abs(weights - np.array(list(named["regmix"].values()))).sum())
    named_pred = {n: model.predict_mapping(w) for n, w in named.items()}
    no_worse = all(chosen["predicted_target"] <= v + 1e-9 for v in named_pred.values())
    return chosen, seconds, l1, named_pred, no_worse


def print_rules(args, rows, models: dict, prior: dict, named: dict) -> None:
    """One line per (regressor, rule): the choice, how far to trust it, and what the others predict."""
    print(
        f"\nChoice rules (epoch cap 15 x prior; std = the fitting regressor's 1-sigma predictive std; "
        f"dist = Euclidean distance to the nearest of the {len(next(iter(models.values())).swarm)} proxy mixtures)"
    )
    header = (
        f"{'regressor':<10} {'rule':<9} {'wall s':>7} {'CPU s':>6} {'pile_cc':>8} {'pred':>8} {'std':>7} {'dist':>6} "
        f"{'beyond':>6} {'L1 paper':>8} " + " ".join(f"{'by ' + n:>12}" for n in models) + "  kept"
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
            report = chosen["choices"]["optimize" if rule == "optimize" else "topk"]
            weights = np.array(list(chosen["weights"].values()))
            by_others = {other: m.predict_weights(weights[None, :])[0] for other, m in models.items()}
            kept = report.get("kept", "top-k average") if rule == "optimize" else "top-k average"
            print(
                f"{name:<10} {rule:<9} {seconds[0]:>7.2f} {seconds[1]:>6.2f} "
                f"{chosen['weights']['train_the_pile_pile_cc']:>8.3f} {report['predicted_target']:>8.4f} "
                f"{report['predicted_std']:>7.4f} {report['support_distance']:>6.3f} {len(report['beyond_range']):>6d} "
                f"{np.abs(weights - paper).sum():>8.3f} "
                + " ".join(f"{by_others[o]:>12.4f}" for o in models)
                + f"  {kept}"
            )
            if rule == "optimize":
                top = chosen["choices"]["topk"]
                print(
                    f"{'':<10} {'':<9} vs top-k: predicted {top['predicted_target']:.4f} "
                    f"+- {top['predicted_std']:.4f}, "
                    f"dist {top['support_distance']:.3f}; optimum from the {report['start']} "
                    f"({report['iterations']} SLSQP iterations); beyond range: {sorted(report['beyond_range']) or '-'}"
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
        "--rules", nargs="*", default=[], choices=["topk", "optimize"], help="compare these choice rules"
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
