"""`regmix fit` and `regmix predict`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from regmix import files
from regmix.layout import RegressionDir, SwarmDir
from regmix.regression.data import (
    _read_indexed_csv,
    combine_swarms,
    conform_domains,
    load_swarm_from_duckdb,
    normalise_rows,
    read_swarm_csvs,
    target_values,
)
from regmix.regression.model import fit_model, load_model, regression_defaults, save_model
from regmix.regression.plots import plot_pred_vs_true
from regmix.regression.regressors import REGRESSORS, make_regressor
from regmix.regression.scoring import check_rows, cross_validate, score
from regmix.regression.swarm_import import read_imported
from regmix.settings import parse_settings
from regmix.settings.choice import RegressionSettings
from regmix.targets import parse_target, target_slug

STUDY = "study"  # the `source` of the study's own runs in cv_predictions.csv


def fit_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="regmix fit", description="Fit a regressor from mixture weights to a target loss (and more targets)."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--mixtures", help="RegMix-format mixtures CSV (index,<domain>...)")
    source.add_argument("--db", help="pipeline DuckDB file (tables mixtures, proxy_losses) instead of CSVs")
    parser.add_argument("--losses", help="RegMix-format losses CSV (index,<metric>...); required with --mixtures")
    parser.add_argument(
        "--swarm",
        nargs="+",
        default=[],
        metavar="DIR",
        help="folders written by `regmix import-swarm`: their runs join the study's (study domains they lack at 0)",
    )
    parser.add_argument(
        "--target", help="without --settings: loss column to fit (default: the schema's regression.target)"
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--regressor",
        help=f"without --settings: one of {sorted(REGRESSORS)} (default: the schema's regression.regressor)",
    )
    parser.add_argument(
        "--settings",
        help="stage settings JSON (regmix.config.stage_settings(config, 'regression')): target, regressor, folds; "
        "its regression.targets are fitted too, each into OUT/targets/<slug>/",
    )
    args = parser.parse_args(argv)

    if args.settings and (args.target or args.regressor):
        parser.error("--target and --regressor are for a fit without --settings (the settings carry both)")
    settings = fit_settings(args.settings, args.target, args.regressor)
    regressor, target, folds, seed = settings.regressor, settings.target, settings.cv_folds, settings.seed
    make_regressor(regressor)  # fail on a bad name before any work

    if args.mixtures:
        if not args.losses:
            parser.error("--losses is required with --mixtures")
        mixtures, losses = read_swarm_csvs(args.mixtures, args.losses)
        inputs = [args.mixtures, args.losses]
    else:
        mixtures, losses = load_swarm_from_duckdb(args.db)
        inputs = [args.db]
    mixtures, losses, sources = _with_imported(mixtures, losses, args.swarm)
    missing = [e.name for e in settings.extra_swarms if e.name not in sources]
    if missing:  # fitting without a swarm the config names would drop its runs silently
        raise ValueError(f"settings' regression.extra_swarms {missing}: no --swarm folder holds them")
    inputs += [SwarmDir(d).source for d in args.swarm] + [SwarmDir(d).mixtures for d in args.swarm]
    inputs += [SwarmDir(d).losses for d in args.swarm]
    where = "losses" if not args.swarm else f"losses of the study and swarm(s) {sorted(set(sources) - {STUDY})}"
    # one fit per distinct objective ("docs" and {docs: 1} are one), written to each of its folders;
    # the main target's group last, its own folder last: its model.pkl marks a complete job
    groups: dict[tuple, tuple[str | dict, list[Path]]] = {}
    main_key = parse_target(target, list(losses.columns)).weights
    groups[main_key] = (target, [])
    for spec in settings.targets:
        key = parse_target(spec, list(losses.columns), "regression.targets").weights
        groups.setdefault(key, (spec, []))[1].append(Path(RegressionDir(args.out).target(target_slug(spec)).root))
    groups[main_key][1].append(Path(args.out))
    for spec, _ in groups.values():  # every target's values before the first (slow) fit
        check_rows(len(target_values(losses, spec, where)), folds)
    for key in [k for k in groups if k != main_key] + [main_key]:
        spec, outs = groups[key]
        _fit_target(mixtures, losses, spec, regressor, folds, seed, outs, inputs, sources)
    return 0


def fit_settings(
    settings_json: str | None, target: str | None = None, regressor: str | None = None
) -> RegressionSettings:
    """The fit's settings: from `--settings` (the workflow's route), or, standalone, the
    schema's `regression:` defaults with `--target` / `--regressor` (the same object)."""
    if settings_json is not None:
        return RegressionSettings.from_json(parse_settings(settings_json))
    flags = {key: value for key, value in (("target", target), ("regressor", regressor)) if value is not None}
    return RegressionSettings.from_section({**regression_defaults(), **flags})


def _with_imported(
    mixtures: pd.DataFrame, losses: pd.DataFrame, swarm_dirs: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The study's swarm joined with imported ones (in the study's domains); and each row's source."""
    parts, names, sources = [(mixtures, losses)], [STUDY], [STUDY] * len(mixtures)
    for directory in swarm_dirs:
        name, swarm_mixtures, swarm_losses = read_imported(directory)
        swarm_mixtures, added, removed = conform_domains(swarm_mixtures, list(mixtures.columns), str(directory))
        for what, domains in (("study domains it lacks, at weight 0", added), ("all-zero domains removed", removed)):
            if domains:
                print(f"regmix fit: swarm {name!r}: {what}: {domains}")
        parts.append((normalise_rows(swarm_mixtures, str(directory)), swarm_losses))
        names.append(f"swarm {name!r} ({directory})")
        sources += [name] * len(swarm_mixtures)
    mixtures, losses = combine_swarms(parts, names)
    return mixtures, losses, sources


def _fit_target(
    mixtures: pd.DataFrame,
    losses: pd.DataFrame,
    target,
    regressor: str,
    folds: int,
    seed: int,
    outs: list[Path],
    inputs: list,
    sources: list[str],
) -> None:
    """Cross-validate and fit one target; write its model folder to each of `outs` (DESIGN.md, regression)."""
    y = target_values(losses, target)
    X = mixtures.to_numpy(dtype=float)
    oof, fold_of = cross_validate(X, y, regressor, folds, seed)
    cv = score(y, oof, seed=seed)
    model = fit_model(mixtures, losses, target, regressor, folds, seed)
    run_settings = {"regressor": regressor, "target": target, "cv_folds": folds, "seed": seed}
    rows_by_source = {name: sources.count(name) for name in dict.fromkeys(sources)}

    cv_frame = pd.DataFrame({"index": mixtures.index, "source": sources, "fold": fold_of, "true": y, "predicted": oof})
    for out in outs:
        with files.atomic_path(out / "cv_predictions.csv") as tmp:
            cv_frame.to_csv(tmp, index=False)
        plot_pred_vs_true(
            y,
            oof,
            cv["spearman"]["value"],
            str(target),
            f"{regressor}: {folds}-fold CV, {len(y)} rows",
            out / "pred_vs_true.png",
        )
        files.write_json(
            out / "cv.json",
            {"regressor": regressor, "target": target, "folds": folds, "rows": len(y), "sources": rows_by_source, **cv},
        )
        files.write_json(
            out / "settings.json",
            {
                **run_settings,
                "domains": model.domains,
                "rows": len(y),
                "sources": rows_by_source,
                "hyperparameters": model.regressor.hyperparameters,
                "provenance": files.provenance(run_settings, inputs),
            },
        )
        save_model(model, out)  # last: its presence marks a complete fit
    print(
        f"regmix fit: {regressor} on {len(y)} rows, target {target}: CV Spearman {cv['spearman']['value']:.2f} "
        f"(95% CI {cv['spearman']['ci_low']:.2f}..{cv['spearman']['ci_high']:.2f}), RMSE {cv['rmse']['value']:.4f}"
    )


def predict_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix predict", description="Predict the target for each mixture row.")
    parser.add_argument("--model", required=True, help="directory written by `regmix fit`")
    parser.add_argument("--mixtures", required=True, help="RegMix-format mixtures CSV")
    parser.add_argument("--out", required=True, help="output CSV: index,prediction[,std,nearest_proxy_distance]")
    parser.add_argument(
        "--std", action="store_true", help="also write the 1-sigma predictive std and the distance to the swarm"
    )
    args = parser.parse_args(argv)
    model = load_model(args.model)
    mixtures = _read_indexed_csv(args.mixtures)
    predictions = model.predict_frame(mixtures, args.mixtures)
    with files.atomic_path(args.out) as tmp:
        frame = pd.DataFrame({"index": mixtures.index, "prediction": predictions})
        if args.std:
            weights = mixtures[model.domains].div(mixtures[model.domains].sum(axis=1), axis=0).to_numpy(dtype=float)
            frame["std"] = model.predict_std_weights(weights)
            frame["nearest_proxy_distance"] = model.support(weights)[0]
        frame.to_csv(tmp, index=False)
    return 0
