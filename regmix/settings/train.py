"""Typed settings of the training stages (`regmix train-proxies` / `train-large`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from regmix.settings import build_section, field_names, require_keys


@dataclass(frozen=True)
class ModelSpec:
    """A named architecture of config/models.yaml, as given (`vocab_size` may be 'tokenizer');
    regmix.model.resolve_architecture turns it into a concrete Architecture."""

    name: str
    n_layers: int
    n_heads: int
    hidden_size: int
    intermediate_size: int
    seq_len: int
    vocab_size: int | str
    pad_vocab_to: int = 1

    @classmethod
    def from_dict(cls, values: dict) -> ModelSpec:
        return build_section(cls, {"name": "?", **values}, "model", optional=("pad_vocab_to",))


@dataclass(frozen=True)
class HyperParameters:
    """What a training run computes from: changing one of these starts a run afresh."""

    steps: int
    warmup_steps: int
    lr: float
    min_lr: float
    schedule: str
    global_batch: int
    micro_batch: int
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    eval_every: int
    val_windows: int
    dtype: str = "auto"


@dataclass(frozen=True)
class Runtime:
    """How a run executes, not what it computes: a resume ignores these."""

    device: str = "auto"
    threads: int = 1
    compile: bool = False
    log_every: int = 10
    checkpoint_every: int = 0
    save_model: bool = True


@dataclass(frozen=True)
class TrainSettings:
    """The settings of `regmix train-proxies` / `train-large`."""

    stage: str
    seed: int
    domains: tuple[str, ...]
    model: ModelSpec
    hp: HyperParameters
    runtime: Runtime
    # validation-only sets scored next to the domains (never trained on)
    validation_sets: tuple[str, ...] = ()
    raw: dict = dataclasses.field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, settings: dict, stage: str) -> TrainSettings:
        """From `stage_settings(config, stage)` ("proxy" or "large")."""
        if stage not in ("proxy", "large"):
            raise ValueError(f"unknown training stage {stage!r}")
        require_keys(settings, ("seed", "domains", stage, "model"), stage)
        section = settings[stage]
        runtime_fields = set(field_names(Runtime))
        hp = build_section(HyperParameters, section, stage, optional=("dtype",))
        runtime = Runtime(**{k: v for k, v in section.items() if k in runtime_fields})
        return cls(
            stage=stage,
            seed=int(settings["seed"]),
            domains=tuple(settings["domains"]),
            model=ModelSpec.from_dict(settings["model"]),
            hp=hp,
            runtime=runtime,
            validation_sets=tuple(settings.get("validation_sets", ())),
            raw=settings,
        )

    def resume_key(self, weights: dict[str, float]) -> dict[str, Any]:
        """What a model's resumable state must match to be resumed (runtime options excluded)."""
        return {
            "stage": self.stage,
            "seed": self.seed,
            "domains": list(self.domains),
            "hp": dataclasses.asdict(self.hp),
            "model": dataclasses.asdict(self.model),
            "weights": weights,
        }
