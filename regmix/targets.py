"""The regression target: what "better mixture" means for a study.

`regression.target` is one of
- a validation set's name (its validation loss), as in the paper (`pile_cc`): a training
  domain or a validation-only set (config `validation_sets`);
- `mean`: the mean validation loss over the training domains (never the validation-only sets);
- a weighted objective over validation sets, e.g. `{docs: 0.5, code: 0.5}` (weights are
  normalised to sum to one, so `{a: 1, b: 1}` is the mean of a and b).

Every stage that turns losses into one number (the fit, the chooser's report, the database,
the summary) goes through `Target`, so they cannot disagree on what the objective is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

MEAN = "mean"


class TargetError(ValueError):
    """A target that names an unknown set or has unusable weights."""


@dataclass(frozen=True)
class Target:
    """A normalised weighted sum of validation losses."""

    weights: tuple[tuple[str, float], ...]
    label: str

    @property
    def sets(self) -> list[str]:
        return [name for name, _ in self.weights]

    def value(self, losses: Mapping[str, float], where: str = "losses") -> float:
        """The objective for one run's {set: loss}."""
        missing = [s for s in self.sets if s not in losses]
        if missing:
            raise TargetError(f"{where}: no loss for {missing} (target {self.label}; has {sorted(losses)})")
        total = sum(w * float(losses[s]) for s, w in self.weights)
        if not math.isfinite(total):
            raise TargetError(f"{where}: target {self.label} is not finite")
        return total

    def values(self, losses: pd.DataFrame, where: str = "losses") -> np.ndarray:
        """The objective for each row of a `set -> loss` table."""
        missing = [s for s in self.sets if s not in losses.columns]
        if missing:
            raise TargetError(
                f"{where}: target column(s) {missing} not found (target {self.label}; columns: {list(losses.columns)})"
            )
        out = np.zeros(len(losses))
        for name, weight in self.weights:
            column = pd.to_numeric(losses[name], errors="coerce").to_numpy(dtype=float)
            if not np.isfinite(column).all():
                bad = losses.index[~np.isfinite(column)][0]
                raise TargetError(f"{where}: loss {name!r} is missing or not finite for index {bad!r}")
            out += weight * column
        return out

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "weights": dict(self.weights)}


def parse_target(
    spec: str | Mapping[str, Any],
    sets: Sequence[str],
    key: str = "regression.target",
    validation_sets: Sequence[str] = (),
) -> Target:
    """Resolve a configured target against the validation sets a study scores.

    `sets` lists the names a loss exists for that `mean` averages (the training domains);
    `validation_sets` the validation-only sets, which a target may name but `mean` leaves
    out. A string that names a column of `sets` (including one literally called `mean`,
    as in RegMix's CSVs) is that column.
    """
    averaged = list(sets)
    sets = [*averaged, *[s for s in validation_sets if s not in averaged]]
    if isinstance(spec, str):
        if spec in sets:
            return Target(((spec, 1.0),), spec)
        if spec == MEAN:
            if not averaged:
                raise TargetError(f"config key '{key}' = 'mean': there are no validation sets to average")
            return Target(tuple((s, 1.0 / len(averaged)) for s in averaged), "mean over domains")
        raise TargetError(f"config key '{key}' = {spec!r}: not a validation set (known: {sets}) nor 'mean'")
    if not isinstance(spec, Mapping) or not spec:
        raise TargetError(f"config key '{key}' = {spec!r}: give a set name, 'mean', or a non-empty {{set: weight}} map")
    unknown = sorted(set(spec) - set(sets))
    if unknown:
        raise TargetError(f"config key '{key}': unknown validation set(s) {unknown} (known: {sets})")
    weights: list[tuple[str, float]] = []
    for name, weight in spec.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
            raise TargetError(f"config key '{key}.{name}' = {weight!r}: a weight must be a finite number above 0")
        weights.append((str(name), float(weight)))
    total = sum(w for _, w in weights)
    normalised = tuple((n, w / total) for n, w in weights)
    label = " + ".join(f"{w:.3g}*{n}" for n, w in normalised)
    return Target(normalised, label)


class _FittedTargets(Protocol):
    @property
    def target(self) -> str | Mapping[str, Any]: ...


class StudySettings(Protocol):
    """What study_target reads of a stage's settings (regmix.settings.outputs.ResultsSettings)."""

    @property
    def domains(self) -> Sequence[str]: ...

    @property
    def validation_sets(self) -> Sequence[str]: ...

    @property
    def regression(self) -> _FittedTargets: ...


def study_target(settings: StudySettings) -> Target:
    """The target of a stage's settings: `regression.target` over its `domains` and
    validation-only sets."""
    return parse_target(settings.regression.target, settings.domains, validation_sets=settings.validation_sets)


def target_slug(spec: str | Mapping[str, Any]) -> str:
    """A file name for a configured target: a set name or `mean` as it is; a weighted objective
    as its sets in name order, each followed by its normalised weight in percent (`.` as `p`),
    e.g. `{docs: 1, code: 1}` -> `code50_docs50`. Call it on a spec parse_target accepted."""
    if isinstance(spec, str):
        return spec
    total = sum(float(w) for w in spec.values())
    parts = []
    for name in sorted(spec):
        percent = format(100.0 * float(spec[name]) / total, ".4g").replace(".", "p")
        parts.append(f"{name}{percent}")
    return "_".join(parts)
