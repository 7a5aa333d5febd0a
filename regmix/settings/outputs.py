"""Typed settings of the output stages: the evaluation tasks and lm-eval runs, the database,
the summary and the figures (which read the same settings), and the archive.

Each is built from `regmix.config.stage_settings(config, stage)` by its `from_json`, which
names a missing key. `raw` keeps that JSON as it came: it is the provenance record of the
stage's outputs (so they stay byte-identical).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from regmix.settings import ConfigError, build_section, require_keys, require_section
from regmix.settings.data import ReadSettings

# stage_settings(config, stage) of the stages whose settings are ResultsSettings
RESULTS_STAGES = ("collect", "summary", "plots")


@dataclass(frozen=True)
class TaskBuilding:
    """How `regmix make-tasks` cuts held-out documents into items (config `evaluate.*`)."""

    docs_per_task: int
    perplexity_docs_per_task: int
    max_doc_chars: int
    mc_choices: int
    mc_context_chars: int
    mc_continuation_chars: int


@dataclass(frozen=True)
class EvalTasksSettings:
    """The settings of `regmix make-tasks` (stage "eval_tasks")."""

    seed: int
    domains: tuple[str, ...]
    tasks: TaskBuilding
    # the large model's seq_len: every choice must fit in it
    window: int
    # what regmix.sources reads the held-out documents with
    reading: ReadSettings
    raw: dict = dataclasses.field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, settings: dict) -> EvalTasksSettings:
        require_keys(settings, ("seed", "domains", "data", "evaluate", "window"), "eval_tasks")
        return cls(
            seed=int(settings["seed"]),
            domains=tuple(settings["domains"]),
            tasks=build_section(TaskBuilding, require_section(settings, "evaluate", "eval_tasks"), "evaluate"),
            window=int(settings["window"]),
            reading=ReadSettings.from_json(settings, "eval_tasks"),
            raw=settings,
        )


@dataclass(frozen=True)
class Evaluation:
    """How `regmix evaluate` runs lm-eval (config `evaluate.*`)."""

    suite: str
    tasks: tuple[str, ...]
    num_fewshot: tuple[int, ...]
    limit: int | None
    batch_size: int
    log_samples: bool
    device: str
    threads: int

    @classmethod
    def from_dict(cls, values: dict) -> Evaluation:
        section = build_section(cls, values, "evaluate")
        return dataclasses.replace(section, tasks=tuple(section.tasks), num_fewshot=tuple(section.num_fewshot))


@dataclass(frozen=True)
class EvaluateSettings:
    """The settings of `regmix evaluate` (stage "evaluate")."""

    seed: int
    evaluate: Evaluation
    raw: dict = dataclasses.field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, settings: dict) -> EvaluateSettings:
        require_keys(settings, ("seed", "evaluate"), "evaluate")
        return cls(
            seed=int(settings["seed"]),
            evaluate=Evaluation.from_dict(require_section(settings, "evaluate", "evaluate")),
            raw=settings,
        )


@dataclass(frozen=True)
class RegressionTargets:
    """What the results stages read of config `regression`: the targets that were fitted
    and the swarms whose rows joined the fit."""

    # the main target: a set name, "mean", or a {set: weight} objective (regmix.targets)
    target: str | dict[str, Any]
    # the further `regression.targets` entries, fitted next to the main one
    targets: tuple[Any, ...] = ()
    # names of the `regression.extra_swarms` entries
    swarms: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, values: dict) -> RegressionTargets:
        if "target" not in values:
            raise ConfigError("settings key 'regression': missing ['target'] (expected regmix.config.stage_settings)")
        return cls(
            target=values["target"],
            targets=tuple(values.get("targets", ())),
            swarms=tuple(entry["name"] for entry in values.get("extra_swarms", ())),
        )


@dataclass(frozen=True)
class ResultsSettings:
    """The settings of `regmix collect`, `regmix summary` and `regmix plots` (one JSON)."""

    seed: int
    domains: tuple[str, ...]
    regression: RegressionTargets
    candidates: tuple[str, ...]
    mixture_ids: tuple[str, ...]
    log_samples: bool
    # validation-only sets scored next to the domains
    validation_sets: tuple[str, ...] = ()
    raw: dict = dataclasses.field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, settings: dict, stage: str) -> ResultsSettings:
        """From `stage_settings(config, stage)` (collect, summary or plots: the same JSON)."""
        if stage not in RESULTS_STAGES:
            raise ValueError(f"not a results stage: {stage!r} (known: {RESULTS_STAGES})")
        require_keys(settings, ("seed", "domains", "regression", "candidates", "mixture_ids", "log_samples"), stage)
        return cls(
            seed=int(settings["seed"]),
            domains=tuple(settings["domains"]),
            regression=RegressionTargets.from_dict(require_section(settings, "regression", stage)),
            candidates=tuple(settings["candidates"]),
            mixture_ids=tuple(settings["mixture_ids"]),
            log_samples=bool(settings["log_samples"]),
            validation_sets=tuple(settings.get("validation_sets", ())),
            raw=settings,
        )


@dataclass(frozen=True)
class ArchiveOptions:
    """What goes into the archive besides the results (config `archive.*`)."""

    include_checkpoints: bool


@dataclass(frozen=True)
class ArchiveSettings:
    """The settings of `regmix archive` (stage "archive")."""

    seed: int
    archive: ArchiveOptions
    # the image the rules run in, recorded in PROVENANCE.json
    container: str
    raw: dict = dataclasses.field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, settings: dict) -> ArchiveSettings:
        require_keys(settings, ("seed", "archive", "container"), "archive")
        return cls(
            seed=int(settings["seed"]),
            archive=build_section(ArchiveOptions, require_section(settings, "archive", "archive"), "archive"),
            container=str(settings["container"]),
            raw=settings,
        )
