"""Typed settings of the choice stages: `regmix mixtures`, `import-swarm`, `fit`, `choose`, `candidate`.

Each `from_json` takes what `regmix.config.stage_settings` (or `swarm_settings`, for
import-swarm) emits, and refuses a missing key naming it; the sections are the config's
own (`mixtures:`, `regression:`, `choose:`), already default-filled by the validator, so
no default is repeated here. The standalone routes (`regmix fit` or `import-swarm`
without `--settings`) build the same objects from the schema's defaults in their command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from regmix.settings import ConfigError, build_section, field_names, require_keys, require_section

# ------------------------------------------------------------------------------ mixtures


@dataclass(frozen=True)
class MixtureSection:
    """The config's `mixtures:` section (config/schema.yaml says what each is)."""

    count: int
    temperature: float
    concentration_min: float
    concentration_max: float
    concentration_steps: int
    min_weight: float
    max_epochs: float
    pool_factor: int
    dedup_tolerance: float


@dataclass(frozen=True)
class MixturesSettings:
    """`regmix mixtures` (stage_settings(config, 'mixtures')); the random candidates draw from it too."""

    seed: int
    domains: tuple[str, ...]
    mixtures: MixtureSection
    # tokens of one large run: the epoch cap when token counts are given
    large_train_tokens: int | None

    @classmethod
    def from_json(cls, settings: dict, stage: str = "mixtures") -> MixturesSettings:
        require_keys(settings, ("seed", "domains", "large_train_tokens"), stage)
        return cls(
            seed=int(settings["seed"]),
            domains=tuple(settings["domains"]),
            mixtures=build_section(MixtureSection, require_section(settings, "mixtures", stage), "mixtures"),
            large_train_tokens=settings["large_train_tokens"],
        )


# ------------------------------------------------------------------- swarms and regression


@dataclass(frozen=True)
class ExtraSwarm:
    """One `regression.extra_swarms` entry."""

    name: str
    mixtures: str
    losses: str
    rename: dict[str, str]
    sum_tolerance: float

    @classmethod
    def from_dict(cls, values: dict, where: str) -> ExtraSwarm:
        swarm = build_section(cls, values, where)
        return cls(swarm.name, swarm.mixtures, swarm.losses, dict(swarm.rename), float(swarm.sum_tolerance))


@dataclass(frozen=True)
class SwarmImportSettings:
    """`regmix import-swarm` (regmix.config.swarm_settings): the study's domains (None: keep
    the swarm's own) and the swarm's entry."""

    domains: tuple[str, ...] | None
    swarm: ExtraSwarm

    @classmethod
    def from_json(cls, settings: dict) -> SwarmImportSettings:
        require_keys(settings, ("domains", "swarm"), "import_swarm")
        return cls(
            tuple(settings["domains"]),
            ExtraSwarm.from_dict(require_section(settings, "swarm", "import_swarm"), "swarm"),
        )


@dataclass(frozen=True)
class RegressionSettings:
    """`regmix fit`: the config's `regression:` section (stage_settings(config, 'regression'))."""

    regressor: str
    target: str | dict[str, float]
    # more targets fitted in the same job, each into <out>/targets/<slug>/
    targets: tuple[str | dict[str, float], ...]
    extra_swarms: tuple[ExtraSwarm, ...]
    cv_folds: int
    seed: int

    @classmethod
    def from_json(cls, settings: dict) -> RegressionSettings:
        return cls.from_section(require_section(settings, "regression", "regression"))

    @classmethod
    def from_section(cls, section: dict) -> RegressionSettings:
        values = build_section(cls, section, "regression")
        swarms = tuple(
            ExtraSwarm.from_dict(entry, f"regression.extra_swarms[{i}]") for i, entry in enumerate(values.extra_swarms)
        )
        return cls(
            regressor=values.regressor,
            target=values.target,
            targets=tuple(values.targets),
            extra_swarms=swarms,
            cv_folds=int(values.cv_folds),
            seed=int(values.seed),
        )


# -------------------------------------------------------------------------------- choose


@dataclass(frozen=True)
class ChooseSection:
    """The config's `choose:` section (config/schema.yaml says what each is)."""

    samples: int
    top_k: int
    chunk_size: int
    rule: str
    uncertainty_weight: float
    trust_quantile: float
    kl_weight: float
    bounds: dict[str, list[float]]

    @classmethod
    def from_dict(cls, values: dict) -> ChooseSection:
        unknown = sorted(set(values) - set(field_names(cls)))
        if unknown:  # a key the chooser would ignore is a typo, not a setting
            raise ConfigError(f"settings key 'choose': unknown key(s) {unknown}")
        section = build_section(cls, values, "choose")
        if section.samples < 1 or section.top_k < 1:
            raise ConfigError(
                f"config keys 'choose.samples' ({section.samples}) and 'choose.top_k' ({section.top_k}) must be >= 1"
            )
        return section


@dataclass(frozen=True)
class ChooseSettings:
    """`regmix choose` (stage_settings(config, 'choose'))."""

    seed: int
    choose: ChooseSection
    # the epoch cap: passes over a domain's train tokens, and tokens of one large run
    max_epochs: float | None
    large_train_tokens: int | None

    @classmethod
    def from_json(cls, settings: dict) -> ChooseSettings:
        require_keys(settings, ("seed", "max_epochs", "large_train_tokens"), "choose")
        return cls(
            seed=int(settings["seed"]),
            choose=ChooseSection.from_dict(require_section(settings, "choose", "choose")),
            max_epochs=settings["max_epochs"],
            large_train_tokens=settings["large_train_tokens"],
        )

    def provenance(self) -> dict[str, Any]:
        """The values a choice depends on, as its output records them."""
        section = self.choose
        return {
            "samples": section.samples,
            "top_k": section.top_k,
            "seed": self.seed,
            "max_epochs": self.max_epochs,
            "train_tokens": self.large_train_tokens,
            "rule": section.rule,
            "kl_weight": section.kl_weight,
            "bounds": section.bounds,
            "uncertainty_weight": section.uncertainty_weight,
            "trust_quantile": section.trust_quantile,
        }


# ---------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class CandidateSettings:
    """`regmix candidate` (regmix.config.candidate_settings: one candidate's share of the
    stage's settings; only a random_NNN candidate carries the synthesis settings)."""

    seed: int
    domains: tuple[str, ...]
    named: dict[str, dict[str, float]]
    synthesis: MixturesSettings | None = field(default=None)

    @classmethod
    def from_json(cls, settings: dict) -> CandidateSettings:
        require_keys(settings, ("seed", "domains", "named"), "candidates")
        synthesis = MixturesSettings.from_json(settings, "candidates") if "mixtures" in settings else None
        return cls(int(settings["seed"]), tuple(settings["domains"]), dict(settings["named"]), synthesis)
