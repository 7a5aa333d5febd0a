"""`regmix import-swarm`: someone else's proxy runs (or an earlier study's) as a swarm of this study.

Input: an `index`-keyed mixtures CSV and metrics CSV, in RegMix's released format
(`train_the_pile_<domain>` weights, `metric/the_pile_<domain>_val_loss` losses) or the
pipeline's own (`<domain>` columns, as `regmix collect-proxies` writes). Output: the same
runs in the study's domains (RegMix-format CSVs, index values `<name>:<index>`, so they
never collide with the study's own `0..N-1`), and `source.json` recording the inputs and
every change the import made (domains added at 0, all-zero domains removed, loss columns
left out, rows renormalised).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from regmix import files
from regmix.config import load_schema
from regmix.layout import SwarmDir
from regmix.regression.data import _read_indexed_csv, conform_domains, plain
from regmix.settings import parse_settings
from regmix.settings.choice import ExtraSwarm, SwarmImportSettings

# RegMix's released column names; the dataset prefix is optional so other RegMix-style swarms read too
REGMIX_MIXTURE_COLUMN = re.compile(r"^train_(?:the_pile_)?([A-Za-z][A-Za-z0-9_]*)$")
REGMIX_LOSS_COLUMN = re.compile(r"^metric/(?:the_pile_)?([A-Za-z][A-Za-z0-9_]*)_val_loss$")
MEAN = "mean"


def swarm_defaults() -> dict:
    """Schema defaults of one `regression.extra_swarms` entry (one source of truth)."""
    item = load_schema()["properties"]["regression"]["properties"]["extra_swarms"]["items"]
    return {key: spec["default"] for key, spec in item["properties"].items() if "default" in spec}


@dataclass
class ImportedSwarm:
    name: str
    mixtures: pd.DataFrame  # index `<name>:<index>`, one column per domain, rows sum to 1
    losses: pd.DataFrame  # same index, one column per validation set
    record: dict  # what the import did (source.json)


def _column_names(
    columns: list[str], pattern: re.Pattern, rename: dict[str, str], domains: list[str] | None, path: Path
) -> dict[str, str]:
    """File column -> domain: `rename` first, then a study domain as it is, then RegMix's pattern."""
    names: dict[str, str] = {}
    for column in columns:
        if column in rename:
            name = rename[column]
        elif domains is not None and column in domains:
            name = column
        elif match := pattern.match(column):
            name = match.group(1)
        else:
            name = column
        names[column] = name
    seen: dict[str, str] = {}
    for column, name in names.items():
        if name in seen:
            raise ValueError(f"{path}: columns {seen[name]!r} and {column!r} are both domain {name!r}")
        seen[name] = column
    return names


def _check_weights(mixtures: pd.DataFrame, path: Path, tolerance: float) -> None:
    values = mixtures.to_numpy(dtype=float)
    for test, what in ((~np.isfinite(values), "no weight"), (values < 0, "a negative weight")):
        if test.any():
            row, col = np.argwhere(test)[0]
            raise ValueError(
                f"{path}: column {mixtures.columns[col]!r}: {what} ({plain(values[row, col])!r}) in row index "
                f"{plain(mixtures.index[row])!r}"
            )
    sums = values.sum(axis=1)
    off = np.abs(sums - 1.0) > tolerance
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(
            f"{path}: row index {plain(mixtures.index[row])!r}: weights sum to {sums[row]:.6f}, not 1 "
            f"(tolerance {tolerance}; extra_swarms sum_tolerance)"
        )


def _check_losses(losses: pd.DataFrame, path: Path) -> None:
    values = losses.to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{path}: column {losses.columns[col]!r}: no finite loss ({plain(values[row, col])!r}) in row index "
            f"{plain(losses.index[row])!r}"
        )


def _check_indices(mixtures: pd.DataFrame, losses: pd.DataFrame, mixtures_csv: Path, losses_csv: Path) -> None:
    for frame, other, path, other_path in (
        (mixtures, losses, losses_csv, mixtures_csv),
        (losses, mixtures, mixtures_csv, losses_csv),
    ):
        missing = [i for i in frame.index if i not in other.index]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            shown = ", ".join(repr(plain(i)) for i in missing[:5]) + more
            raise ValueError(f"{path}: no row for index {shown} of {other_path}")


def read_import(
    mixtures_csv: str | Path,
    losses_csv: str | Path,
    name: str,
    domains: list[str] | None = None,
    rename: dict[str, str] | None = None,
    sum_tolerance: float | None = None,
) -> ImportedSwarm:
    """Read, check and conform a public swarm (see the module docstring).

    With `domains` (the study's), weights are put in those domains (`conform_domains`) and
    only their losses are kept, plus `mean` over them where the swarm measured them all.
    Without, every column is kept as it is.
    """
    mixtures_csv, losses_csv = Path(mixtures_csv), Path(losses_csv)
    rename = dict(rename or {})
    tolerance = swarm_defaults()["sum_tolerance"] if sum_tolerance is None else float(sum_tolerance)
    mixtures = _read_indexed_csv(mixtures_csv)
    losses = _read_indexed_csv(losses_csv)
    for frame, path in ((mixtures, mixtures_csv), (losses, losses_csv)):
        if frame.empty or not len(frame.columns):
            raise ValueError(f"{path}: no rows or no columns besides 'index'")
    unused = sorted(set(rename) - set(mixtures.columns) - set(losses.columns))
    if unused:
        raise ValueError(f"rename names column(s) {unused} that neither {mixtures_csv} nor {losses_csv} has")
    _check_indices(mixtures, losses, mixtures_csv, losses_csv)
    losses = losses.loc[mixtures.index]
    _check_weights(mixtures, mixtures_csv, tolerance)
    _check_losses(losses, losses_csv)

    mixtures = mixtures.rename(
        columns=_column_names(list(mixtures.columns), REGMIX_MIXTURE_COLUMN, rename, domains, mixtures_csv)
    )
    losses = losses.rename(columns=_column_names(list(losses.columns), REGMIX_LOSS_COLUMN, rename, domains, losses_csv))
    sums = mixtures.sum(axis=1)
    record: dict = {
        "name": name,
        "rows": len(mixtures),
        "swarm_domains": list(mixtures.columns),
        "max_sum_deviation": float(np.abs(sums - 1.0).max()),
    }
    mixtures = mixtures.div(sums, axis=0)
    if domains is not None:
        swarm_columns = list(losses.columns)
        mixtures, added, removed = conform_domains(mixtures, list(domains), str(mixtures_csv))
        measured = [d for d in domains if d in losses.columns]
        left_out = [c for c in losses.columns if c not in domains and c != MEAN]
        losses = losses[measured].copy()
        if len(measured) == len(domains):
            # the study's `mean` is over its domains; the swarm's own `mean` (if any) may not be
            losses[MEAN] = losses[measured].mean(axis=1)
        record.update(
            {
                "domains_added_at_zero": added,
                "domains_removed_all_zero": removed,
                "losses_kept": list(losses.columns),
                "own_mean_replaced": MEAN in swarm_columns,
                "losses_left_out": left_out,
                "study_domains_without_loss": [d for d in domains if d not in measured],
            }
        )
    mixtures.index = losses.index = pd.Index([f"{name}:{i}" for i in mixtures.index], name="index")
    return ImportedSwarm(name, mixtures, losses, record)


def write_import(swarm: ImportedSwarm, out: SwarmDir, settings: dict, inputs: Sequence[str | Path]) -> None:
    with files.atomic_path(out.mixtures) as tmp:
        swarm.mixtures.to_csv(tmp)
    with files.atomic_path(out.losses) as tmp:
        swarm.losses.to_csv(tmp)
    files.write_json(out.source, {**swarm.record, "provenance": files.provenance(settings, inputs)})


def read_imported(directory: str | Path) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """(name, mixtures, losses) of a folder `regmix import-swarm` wrote."""
    folder = SwarmDir(str(directory))
    if not Path(folder.source).is_file():
        raise FileNotFoundError(f"{directory}: no {Path(folder.source).name}; write it with `regmix import-swarm`")
    name = files.read_json(folder.source)["name"]
    mixtures = _read_indexed_csv(folder.mixtures)
    losses = _read_indexed_csv(folder.losses)
    _check_indices(mixtures, losses, Path(folder.mixtures), Path(folder.losses))
    return name, mixtures, losses.loc[mixtures.index]


def _report(swarm: ImportedSwarm) -> list[str]:
    r = swarm.record
    lines = [f"regmix import-swarm: {swarm.name}: {r['rows']} runs, domains {list(swarm.mixtures.columns)}"]
    for key, text in (
        ("domains_added_at_zero", "study domains the swarm lacks, added at weight 0"),
        ("domains_removed_all_zero", "swarm domains the study lacks, at weight 0 in every run: removed"),
        ("losses_left_out", "loss columns of no study domain, left out"),
        ("study_domains_without_loss", "study domains the swarm has no loss for"),
    ):
        if r.get(key):
            lines.append(f"  {text}: {r[key]}")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="regmix import-swarm",
        description="Check a public swarm (index-keyed mixtures + metrics CSVs) and write it as a swarm of the study.",
    )
    parser.add_argument("--mixtures", required=True, help="mixtures CSV: index, then one weight column per domain")
    parser.add_argument("--losses", required=True, help="metrics CSV: index, then one loss column per validation set")
    parser.add_argument("--out", required=True, help="output folder (R/swarms/<name>)")
    parser.add_argument(
        "--settings", help="JSON {domains, swarm: {name, rename, sum_tolerance}} (regmix.config.swarm_settings)"
    )
    standalone = parser.add_argument_group("without --settings (the settings carry these)")
    standalone.add_argument("--name", help="swarm name, the prefix of its index values")
    standalone.add_argument("--domains", nargs="+", help="the study's domains (none: keep all)")
    standalone.add_argument("--rename", nargs="+", default=[], metavar="COLUMN=DOMAIN", help="columns to rename")
    standalone.add_argument("--sum-tolerance", type=float, help="allowed |row sum - 1| before renormalising")
    args = parser.parse_args(argv)

    if args.settings is not None:
        flags = (("--name", args.name), ("--domains", args.domains), ("--sum-tolerance", args.sum_tolerance))
        given = [flag for flag, value in flags if value is not None] + (["--rename"] if args.rename else [])
        if given:
            parser.error(f"{' '.join(given)}: only without --settings (the settings carry them)")
        settings = SwarmImportSettings.from_json(parse_settings(args.settings))
    else:
        settings = standalone_settings(parser, args)
    swarm, name = settings.swarm, settings.swarm.name
    if not re.fullmatch(load_schema()["$defs"]["name"]["pattern"], name):
        parser.error(f"--name {name!r}: a letter, then at most 63 letters, digits or _")
    domains = None if settings.domains is None else list(settings.domains)
    imported = read_import(args.mixtures, args.losses, name, domains, swarm.rename, swarm.sum_tolerance)
    run_settings = {"name": name, "domains": domains, "rename": swarm.rename, "sum_tolerance": swarm.sum_tolerance}
    write_import(imported, SwarmDir(args.out), run_settings, [args.mixtures, args.losses])
    print("\n".join(_report(imported)))
    return 0


def standalone_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> SwarmImportSettings:
    """The settings `--name`, `--domains`, `--rename` and `--sum-tolerance` give, over the
    schema's defaults of an extra_swarms entry: the object `--settings` gives."""
    if not args.name:
        parser.error("--name is required without --settings")
    rename = {}
    for pair in args.rename:
        column, sep, domain = pair.partition("=")
        if not sep or not column or not domain:
            parser.error(f"--rename {pair!r}: expected COLUMN=DOMAIN")
        rename[column] = domain
    defaults = swarm_defaults()
    entry = {**defaults, "name": args.name, "mixtures": args.mixtures, "losses": args.losses, "rename": rename}
    if args.sum_tolerance is not None:
        entry["sum_tolerance"] = args.sum_tolerance
    return SwarmImportSettings(tuple(args.domains) if args.domains else None, ExtraSwarm.from_dict(entry, "swarm"))
