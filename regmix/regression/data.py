"""Swarm I/O: RegMix-format CSV pairs, the pipeline's DuckDB tables, and their union.

A swarm is two frames sharing an index: mixture weights (one column per domain, rows
normalised to sum 1) and losses (one column per metric).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from regmix import files
from regmix.targets import parse_target


def read_swarm_csvs(mixtures_csv: str | Path, losses_csv: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read RegMix-format CSVs and keep the rows present in both (matched on `index`)."""
    mixtures = _read_indexed_csv(mixtures_csv)
    losses = _read_indexed_csv(losses_csv)
    return align_swarm(mixtures, losses, f"{mixtures_csv} / {losses_csv}")


def _read_indexed_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    frame = files.read_csv(path, numeric=True, index="index")
    if frame["index"].duplicated().any():
        dup = frame.loc[frame["index"].duplicated(), "index"].iloc[0]
        raise ValueError(f"{path}: index {plain(dup)!r} appears more than once")
    return frame.set_index("index")


def plain(value):
    """A numpy scalar as the Python value it holds, so a message says `1`, not `np.int64(1)`."""
    return value.item() if isinstance(value, np.generic) else value


def align_swarm(
    mixtures: pd.DataFrame, losses: pd.DataFrame, where: str = "swarm"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows in both frames, mixture rows checked and normalised to sum 1."""
    common = mixtures.index.intersection(losses.index, sort=False)
    if len(common) == 0:
        raise ValueError(f"{where}: no index value is present in both the mixtures and the losses")
    mixtures = normalise_rows(mixtures.loc[common], where)
    return mixtures, losses.loc[common]


def normalise_rows(mixtures: pd.DataFrame, where: str = "mixtures") -> pd.DataFrame:
    values = mixtures.to_numpy(dtype=float)
    bad_cols = [c for c, ok in zip(mixtures.columns, np.isfinite(values).all(axis=0), strict=True) if not ok]
    if bad_cols:
        raise ValueError(f"{where}: non-numeric or missing weights in column(s) {bad_cols}")
    if (values < 0).any():
        col = mixtures.columns[np.where((values < 0).any(axis=0))[0][0]]
        raise ValueError(f"{where}: negative weight in column {col!r}")
    sums = values.sum(axis=1)
    if (sums <= 0).any():
        raise ValueError(f"{where}: mixture row {mixtures.index[np.argmax(sums <= 0)]!r} has no weight")
    return pd.DataFrame(values / sums[:, None], index=mixtures.index, columns=mixtures.columns)


def load_swarm_from_duckdb(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pipeline database's `mixtures(mix_id, domain, weight)` and
    `proxy_losses(mix_id, domain, loss)` as (mixtures, losses) frames indexed by mix_id.

    The losses frame gains a `mean` column (mean over the mixtures' domains; a
    validation-only set's loss is a column of its own but not in the mean), like the
    collected losses CSV.
    """
    import duckdb

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such database: {path}")
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in ("mixtures", "proxy_losses"):
            if table not in tables:
                raise ValueError(f"{path}: no table {table!r} (tables: {sorted(tables)})")
        weights = con.execute("SELECT mix_id, domain, weight FROM mixtures").df()
        losses = con.execute("SELECT mix_id, domain, loss FROM proxy_losses").df()
    finally:
        con.close()
    mixtures = _pivot(weights, "weight", f"{path}:mixtures", fill=0.0)
    loss_frame = _pivot(losses, "loss", f"{path}:proxy_losses", fill=None)
    loss_frame["mean"] = loss_frame[[d for d in loss_frame.columns if d in mixtures.columns]].mean(axis=1)
    return align_swarm(mixtures, loss_frame, str(path))


def _pivot(long: pd.DataFrame, value: str, where: str, fill: float | None) -> pd.DataFrame:
    if long.duplicated(["mix_id", "domain"]).any():
        row = long[long.duplicated(["mix_id", "domain"])].iloc[0]
        raise ValueError(f"{where}: ({row['mix_id']}, {row['domain']}) appears more than once")
    wide = long.pivot(index="mix_id", columns="domain", values=value).sort_index()
    wide = wide.reindex(columns=sorted(wide.columns))
    if fill is not None:
        wide = wide.fillna(fill)
    elif wide.isna().any().any():
        col = wide.columns[wide.isna().any(axis=0)][0]
        mix = wide.index[wide[col].isna()][0]
        raise ValueError(f"{where}: no {value} for domain {col!r} of {mix!r}")
    wide.columns.name = None
    wide.index.name = "index"
    return wide.astype(float)


def target_values(losses: pd.DataFrame, target: str | dict, where: str = "losses") -> np.ndarray:
    """The target (a loss column, `mean`, or a {set: weight} objective) for each row."""
    return parse_target(target, list(losses.columns)).values(losses, where)


def conform_domains(
    mixtures: pd.DataFrame, domains: list[str], where: str
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """A swarm's mixtures in a study's domains (in that order), and what that took.

    Mixture reuse: a study domain the swarm lacks is one its runs trained on at weight 0, so
    it is added at 0 (returned as `added`). A swarm domain the study lacks is an error naming
    it, unless its weight is 0 in every row: then the column says nothing and is removed
    (returned as `removed`, so the caller reports it; no domain disappears silently).
    """
    extra = [c for c in mixtures.columns if c not in domains]
    used = [c for c in extra if (mixtures[c].to_numpy(dtype=float) != 0).any()]
    if used:
        raise ValueError(
            f"{where}: domain(s) {used} are not domains of the study (domains: {domains}) and have weight "
            "above 0 in some run; add them to `domains`, or leave the runs that use them out of the swarm"
        )
    added = [d for d in domains if d not in mixtures.columns]
    return mixtures.reindex(columns=domains, fill_value=0.0), added, extra


def combine_swarms(
    swarms: list[tuple[pd.DataFrame, pd.DataFrame]], names: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One swarm from several (e.g. an imported public swarm plus a study's own runs).

    Mixture reuse: a domain one swarm lacks is a domain its runs trained on at weight 0,
    so the union fills it with 0. A loss column one swarm lacks stays missing (NaN); a
    target that needs it fails naming the first row without it. Index values must be
    unique across swarms (import-swarm prefixes them with the source name).
    """
    if len(swarms) == 1:
        return swarms[0]
    seen: dict = {}
    for (mixtures, _), name in zip(swarms, names, strict=True):
        for key in mixtures.index:
            if key in seen:
                raise ValueError(f"index {key!r} is in both {seen[key]} and {name}: give each swarm its own ids")
            seen[key] = name
    domains = list(dict.fromkeys(d for mixtures, _ in swarms for d in mixtures.columns))
    mixtures = pd.concat([m.reindex(columns=domains, fill_value=0.0) for m, _ in swarms])
    losses = pd.concat([loss for _, loss in swarms])
    mixtures.index.name = losses.index.name = "index"
    return mixtures, losses
