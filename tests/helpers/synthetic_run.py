"""A small, fully synthetic results directory in the formats of DESIGN.md.

Numbers are constructed so that tests can predict rankings: on the target domain `b`
the large model's loss falls with the candidate's weight on `b`, and downstream scores
favour the same candidates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from regmix.settings.outputs import ResultsSettings

DOMAINS = ["a", "b", "c"]
TARGET = "b"
MIX_IDS = [f"mix_{i:04d}" for i in range(6)]
CANDIDATES = ["regmix", "prior", "uniform", "heavy_c"]
CANDIDATE_WEIGHTS = {
    "regmix": {"a": 0.2, "b": 0.7, "c": 0.1},
    "prior": {"a": 0.5, "b": 0.2, "c": 0.3},
    "uniform": {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3},
    "heavy_c": {"a": 0.1, "b": 0.1, "c": 0.8},
}
TASKS = {"regmix_ppl_b": "perplexity", "regmix_mc_b": "multiple_choice"}


# a validation-only set write_run can add: its loss falls with the weight on `c`
HELD_OUT = "held"


def settings(validation_sets: tuple[str, ...] = (), target: str | dict = TARGET) -> dict:
    return {
        "seed": 0,
        "domains": DOMAINS,
        "regression": {"regressor": "lightgbm", "target": target, "cv_folds": 3, "seed": 0},
        "candidates": CANDIDATES,
        "mixture_ids": MIX_IDS,
        "log_samples": False,
        "validation_sets": list(validation_sets),
    }


def results_settings(validation_sets: tuple[str, ...] = (), target: str | dict = TARGET) -> ResultsSettings:
    """settings() as the database, summary and figures read it."""
    return ResultsSettings.from_json(settings(validation_sets, target), "collect")


class LinearRegressor:
    """Stands in for regmix.regression's model: predicted target = 3 - weight on b."""

    def predict_frame(self, frame: pd.DataFrame, where: str = "mixtures") -> np.ndarray:
        assert list(frame.columns) == DOMAINS, frame.columns
        return 3.0 - frame[TARGET].to_numpy()


def load_regressor(model_dir: Path) -> LinearRegressor:
    assert (Path(model_dir) / "model.pkl").is_file()
    return LinearRegressor()


def _losses(weights: dict[str, float], offset: float, validation_sets: tuple[str, ...] = ()) -> dict[str, float]:
    losses = {d: round(offset + 3.2 - 0.9 * w, 6) for d, w in weights.items()}
    return {**losses, **{name: round(offset + 3.0 - 0.5 * weights["c"], 6) for name in validation_sets}}


def _run_meta(seed: int, steps: int) -> dict:
    return {
        "tokens_seen": steps * 2048,
        "steps": steps,
        "seconds": 1.5,
        "tokens_per_second": steps * 2048 / 1.5,
        "seed": seed,
        "config_fingerprint": "abc123",
        "code_version": "0.1.0+gtest",
        "model": {"n_layers": 2},
    }


def _train_log(path: Path, steps: int, final: dict[str, float]) -> None:
    """Like the trainer's: a record every 10 steps, validation mid-way; the final
    validation is only in losses.json."""
    rows = []
    for step in range(10, steps + 1, 10):
        rows.append(
            {
                "step": step,
                "loss": 6.0 - 2.5 * step / steps,
                "lr": 0.003,
                "grad_norm": 0.5,
                "tokens_per_second": 1234.0,
                "elapsed": step / 10,
            }
        )
        if step == steps // 2:
            rows[-1]["val_loss"] = {d: v + 0.4 for d, v in final.items()}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _lm_eval_result(score: float, shots: int) -> dict:
    """The parts of lm-eval 0.4's result dict that the pipeline reads."""
    results = {
        "regmix_mc_b": {
            "alias": "regmix_mc_b",
            "acc,none": score,
            "acc_stderr,none": 0.05,
            "acc_norm,none": score + 0.01,
            "acc_norm_stderr,none": 0.05,
        },
    }
    higher = {"regmix_mc_b": {"acc": True, "acc_norm": True}}
    if shots == 0:
        results["regmix_ppl_b"] = {
            "alias": "regmix_ppl_b",
            "word_perplexity,none": 90.0 - 50 * score,
            "word_perplexity_stderr,none": "N/A",
            "byte_perplexity,none": 3.0 - score,
            "byte_perplexity_stderr,none": "N/A",
            "bits_per_byte,none": 2.0 - score,
            "bits_per_byte_stderr,none": "N/A",
        }
        higher["regmix_ppl_b"] = {"word_perplexity": False, "byte_perplexity": False, "bits_per_byte": False}
    return {
        "results": results,
        "higher_is_better": higher,
        "n-shot": {t: shots for t in results},
        "configs": {t: {"task": t} for t in results},
        "versions": {t: 1.0 for t in results},
    }


def write_run(root: Path, *, with_topk: bool = True, validation_sets: tuple[str, ...] = ()) -> Path:
    """Write every file the summary stages read under `root` (the results directory);
    with `validation_sets`, each run also scores those sets (and their sidecars exist)."""
    root.mkdir(parents=True, exist_ok=True)

    def put(relative: str, text: str) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    put("data/prior.yaml", yaml.safe_dump(CANDIDATE_WEIGHTS["prior"]))
    put("data/token_counts.json", json.dumps({d: {"train": 100000, "valid": 5000} for d in DOMAINS}))
    for name in validation_sets:
        put(
            f"data/{name}/valid.json",
            json.dumps(
                {
                    "domain": name,
                    "split": "valid",
                    "validation_set": True,
                    "tokens": 4000,
                    "documents": 12,
                    "bytes": 16000,
                }
            ),
        )
    rng = np.random.default_rng(0)
    for i, mix in enumerate(MIX_IDS):
        w = rng.dirichlet(np.ones(len(DOMAINS)))
        weights = {d: float(x) for d, x in zip(DOMAINS, w, strict=False)}
        put(f"mixtures/{mix}.yaml", yaml.safe_dump({"mix_id": mix, "weights": weights}))
        losses = _losses(weights, 0.5, validation_sets)
        put(
            f"proxies/{mix}/losses.json",
            json.dumps({"mix_id": mix, "weights": weights, "val_loss": losses, **_run_meta(i, 50)}),
        )
        _train_log(root / f"proxies/{mix}/train_log.jsonl", 50, losses)
    # the shapes regmix.regression writes: metrics x100 with bootstrap CIs
    put(
        "regression/cv.json",
        json.dumps(
            {
                "regressor": "lightgbm",
                "target": TARGET,
                "folds": 3,
                "rows": 4,
                "n": 4,
                "bootstrap": 1000,
                "spearman": {"value": 90.0, "ci_low": 70.0, "ci_high": 98.0},
                "pearson": {"value": 95.0, "ci_low": 80.0, "ci_high": 99.0},
                "rmse": {"value": 0.01, "ci_low": 0.005, "ci_high": 0.02},
            }
        ),
    )
    put(
        "regression/settings.json",
        json.dumps({"target": TARGET, "regressor": "lightgbm", "cv_folds": 3, "hyperparameters": {"num_leaves": 4}}),
    )
    put(
        "regression/cv_predictions.csv",
        "index,fold,true,predicted\n0,0,3.1,3.05\n1,1,2.9,2.95\n2,2,2.7,2.72\n3,0,3.0,2.9\n",
    )
    put("regression/model.pkl", "not a real pickle: tests load LinearRegressor instead")
    put(
        "chosen/regmix.yaml",
        yaml.safe_dump(
            {"weights": CANDIDATE_WEIGHTS["regmix"], "predicted_target": 2.3, "epochs": {"a": 0.5, "b": 2.0, "c": 0.1}}
        ),
    )
    if with_topk:
        put("chosen/topk.csv", "a,b,c,predicted\n0.2,0.7,0.1,2.30\n0.25,0.65,0.1,2.35\n")
    for k, cand in enumerate(CANDIDATES):
        weights = CANDIDATE_WEIGHTS[cand]
        put(f"candidates/{cand}.yaml", yaml.safe_dump({"name": cand, "weights": weights}))
        losses = _losses(weights, 0.0, validation_sets)
        put(
            f"large/{cand}/losses.json",
            json.dumps({"mix_id": cand, "weights": weights, "val_loss": losses, **_run_meta(k, 100)}),
        )
        _train_log(root / f"large/{cand}/train_log.jsonl", 100, losses)
        score = 0.3 + 0.5 * weights[TARGET]  # downstream follows the target weight
        runs = {str(n): _lm_eval_result(score + 0.02 * n, n) for n in (0, 1)}
        put(
            f"eval/{cand}.json",
            json.dumps(
                {
                    "model": f"large/{cand}/model",
                    "suite": "local",
                    "num_fewshot": [0, 1],
                    "runs": runs,
                    "provenance": {"code_version": "test"},
                }
            ),
        )
    return root
