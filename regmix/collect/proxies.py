"""`regmix collect-proxies`: the proxies' losses.json files as RegMix-format CSVs, a weights
table and a losses table, one row per mixture."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from regmix import files


def _read_losses(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"proxy losses not found: {path}")
    data = files.read_json(path)
    for key in ("mix_id", "weights", "val_loss"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    return data


def _mix_index(mix_id: str, path: Path) -> int:
    prefix, _, number = mix_id.rpartition("_")
    if prefix != "mix" or not number.isdigit():
        raise ValueError(f"{path}: mix_id {mix_id!r} is not of the form mix_NNNN")
    return int(number)


def collect_proxies(
    losses_paths: Sequence[str | Path], out_mixtures: str | Path, out_losses: str | Path
) -> pd.DataFrame:
    """Proxy losses.json files -> `index,<domain>...` weights and `index,<domain>...,<set>...,mean`
    losses: a column per domain, then one per validation-only set (a loss no mixture weighs),
    and `mean`, the mean over the domains alone."""
    if not losses_paths:
        raise ValueError("no proxy losses.json files given")
    domains: list[str] = []  # those of the first file, which every other file must have
    sets: list[str] = []
    weight_rows, loss_rows = [], []
    for number, path in enumerate(map(Path, losses_paths)):
        data = _read_losses(path)
        if number == 0:
            domains = list(data["weights"])
            sets = [name for name in data["val_loss"] if name not in domains]
        if set(data["weights"]) != set(domains):
            raise ValueError(
                f"{path}: weights domains {sorted(data['weights'])} differ from {sorted(domains)} "
                f"(first file: {losses_paths[0]})"
            )
        if set(data["val_loss"]) != set(domains) | set(sets):
            raise ValueError(
                f"{path}: val_loss sets {sorted(data['val_loss'])} differ from {sorted([*domains, *sets])} "
                f"(first file: {losses_paths[0]})"
            )
        for domain, loss in data["val_loss"].items():
            if not isinstance(loss, (int, float)) or not math.isfinite(loss):
                raise ValueError(f"{path}: val_loss of {domain!r} is {loss!r}, not a finite number")
        index = _mix_index(data["mix_id"], path)
        weight_rows.append({"index": index, **{d: float(data["weights"][d]) for d in domains}})
        losses = {d: float(data["val_loss"][d]) for d in domains}
        held_out = {name: float(data["val_loss"][name]) for name in sets}
        loss_rows.append({"index": index, **losses, **held_out, "mean": sum(losses.values()) / len(losses)})
    weights = pd.DataFrame(weight_rows).sort_values("index")
    losses = pd.DataFrame(loss_rows).sort_values("index")
    if weights["index"].duplicated().any():
        raise ValueError(
            f"duplicate mix_id among proxy losses: {sorted(weights['index'][weights['index'].duplicated()])}"
        )
    files.write_text(out_mixtures, weights.to_csv(index=False))
    files.write_text(out_losses, losses.to_csv(index=False))
    files.write_json(
        files.provenance_sidecar(out_losses),
        files.provenance({"outputs": [str(out_mixtures), str(out_losses)]}, losses_paths),
    )
    return losses


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix collect-proxies", description=collect_proxies.__doc__)
    parser.add_argument("--losses", nargs="+", required=True, help="R/proxies/<mix>/losses.json files")
    parser.add_argument("--out-mixtures", required=True, help="weights CSV (R/proxies/mixtures.csv)")
    parser.add_argument("--out-losses", required=True, help="losses CSV (R/proxies/losses.csv)")
    args = parser.parse_args(argv)
    losses = collect_proxies(args.losses, args.out_mixtures, args.out_losses)
    print(f"collected {len(losses)} proxies into {args.out_mixtures} and {args.out_losses}")
    return 0
