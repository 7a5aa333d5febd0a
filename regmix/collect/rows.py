"""Each kind of results file read into rows of the database's tables: mixture weights,
validation losses, run metadata and logs, lm-eval results and per-item scores. `where`
names the file in every error."""

from __future__ import annotations

import json
import math
from typing import Any

# Which metric stands for a task when candidates are ranked across tasks, in order of
# preference: length-normalised accuracy for choice tasks, bits per byte for perplexity.
PRIMARY_METRICS = ("acc_norm", "acc", "bits_per_byte", "word_perplexity", "exact_match", "f1", "mcc")


def weights_of(data: dict, domains: list[str], where: str) -> dict[str, float]:
    weights = data.get("weights")
    if not isinstance(weights, dict):
        raise ValueError(f"{where}: missing 'weights' mapping")
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ValueError(f"{where}: unknown domain(s) {unknown} (domains: {domains})")
    return {d: float(weights.get(d, 0.0)) for d in domains}


def val_losses_of(data: dict, sets: list[str], where: str) -> dict[str, float]:
    """The loss of every scored set: the domains, then the validation-only sets."""
    losses = data.get("val_loss")
    if not isinstance(losses, dict):
        raise ValueError(f"{where}: missing 'val_loss' mapping")
    missing = [d for d in sets if d not in losses]
    if missing:
        raise ValueError(f"{where}: no validation loss for domain(s) or validation set(s) {missing}")
    return {d: float(losses[d]) for d in sets}


RUN_FIELDS = ("seed", "steps", "tokens_seen", "seconds", "tokens_per_second", "code_version", "config_fingerprint")


def run_row(key: str, name: str, data: dict, where: str) -> dict:
    missing = [f for f in RUN_FIELDS if f not in data]
    if missing:
        raise ValueError(f"{where}: missing run metadata {missing}")
    return {
        key: name,
        **{f: data[f] for f in RUN_FIELDS},
        # recorded by the trainer but not required of every writer of losses.json
        **{f: data.get(f) for f in ("train_loss", "device", "world_size")},
        "model": json.dumps(data.get("model", {}), sort_keys=True),
    }


def log_rows(key: str, name: str, records: list[dict], where: str, final: dict) -> tuple[list[dict], list[dict]]:
    """Split a train_log.jsonl into training rows and (step, domain, loss) validation rows.

    The final validation lives in losses.json (`final`), not in the log: it is added as
    the last validation step so curves end where the reported loss is.
    """
    train, valid = [], []
    for number, rec in enumerate(records, 1):
        if "step" not in rec:
            raise ValueError(f"{where}:{number}: log record without 'step'")
        if isinstance(rec.get("val_loss"), dict):
            valid += [
                {key: name, "step": rec["step"], "domain": d, "loss": float(v)} for d, v in rec["val_loss"].items()
            ]
        if "loss" in rec:
            train.append(
                {
                    key: name,
                    "step": int(rec["step"]),
                    "loss": float(rec["loss"]),
                    "lr": float(rec["lr"]) if rec.get("lr") is not None else None,
                    "tokens_per_second": float(rec["tokens_per_second"])
                    if rec.get("tokens_per_second") is not None
                    else None,
                    "tokens_seen": int(rec["tokens_seen"]) if rec.get("tokens_seen") is not None else None,
                    "grad_norm": float(rec["grad_norm"]) if rec.get("grad_norm") is not None else None,
                    "elapsed": float(rec["elapsed"]) if rec.get("elapsed") is not None else None,
                }
            )
    if not any(row["step"] == final["steps"] for row in valid):
        valid += [
            {key: name, "step": final["steps"], "domain": d, "loss": float(v)} for d, v in final["val_loss"].items()
        ]
    return train, valid


def flatten(obj: Any, prefix: str = "") -> list[dict]:
    rows = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            rows += flatten(v, f"{prefix}[{i}]")
    elif isinstance(obj, bool) or not isinstance(obj, (int, float)):
        rows.append({"key": prefix, "value": None, "text": None if obj is None else str(obj)})
    else:
        rows.append({"key": prefix, "value": float(obj), "text": None})
    return rows


def finite_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # lm-eval writes "N/A" where it computed no stderr
    return float(value) if math.isfinite(value) else None


def eval_rows(candidate: str, data: dict, where: str) -> list[dict]:
    """lm-eval result dicts (one per shot count) -> long rows (candidate, task, shots, metric, ...)."""
    runs = data.get("runs")
    if not isinstance(runs, dict) or not runs:
        raise ValueError(f"{where}: no 'runs' (lm-eval results per shot count)")
    rows = []
    for shots, run in runs.items():
        higher = run.get("higher_is_better", {})
        for task, metrics in run.get("results", {}).items():
            keys = sorted(
                tuple(k.split(",", 1))
                for k in metrics
                if "," in k and not k.split(",")[0].endswith("_stderr") and finite_number(metrics[k]) is not None
            )
            names = {m for m, _ in keys}
            metric_name = next((m for m in PRIMARY_METRICS if m in names), min(names) if names else None)
            # one (metric, filter) per task stands for it: the unfiltered one when there is one
            filters = [f for m, f in keys if m == metric_name]
            primary = (metric_name, "none" if "none" in filters else (filters[0] if filters else None))
            for key, value in metrics.items():
                if "," not in key:
                    continue
                metric, filt = key.split(",", 1)
                if metric.endswith("_stderr") or finite_number(value) is None:
                    continue
                rows.append(
                    {
                        "candidate": candidate,
                        "task": task,
                        "shots": int(shots),
                        "metric": metric,
                        "filter": filt,
                        "value": finite_number(value),
                        "stderr": finite_number(metrics.get(f"{metric}_stderr,{filt}")),
                        "higher_is_better": bool(
                            higher.get(task, {}).get(
                                metric, metric not in ("bits_per_byte", "word_perplexity", "byte_perplexity")
                            )
                        ),
                        "is_primary": (metric, filt) == primary,
                    }
                )
    if not rows:
        raise ValueError(f"{where}: lm-eval results hold no numeric metric")
    return rows


def item_rows(candidate: str, samples: list[dict], primary: dict[str, tuple[str, str, bool]], where: str) -> list[dict]:
    """lm-eval per-sample log rows -> one score per (task, shots, item) on the task's primary
    metric. A choice task's sample holds 0/1 accuracies; a perplexity task's sample holds
    (log-likelihood, bytes), from which the item's bits per byte."""
    rows = []
    for number, sample in enumerate(samples, 1):
        task = sample.get("task")
        if task not in primary:
            continue
        metric, filt, higher = primary[task]
        if sample.get("filter", "none") != filt:
            continue
        value = sample.get(metric)
        if metric == "bits_per_byte" and isinstance(value, list) and len(value) == 2:
            loglik, n_bytes = value
            score = -float(loglik) / (float(n_bytes) * math.log(2)) if n_bytes else None
        else:
            score = finite_number(value)
        if score is None or "doc_id" not in sample or "shots" not in sample:
            raise ValueError(f"{where}:{number}: sample of task {task!r} has no doc_id, shots or numeric {metric!r}")
        rows.append(
            {
                "candidate": candidate,
                "task": task,
                "shots": int(sample["shots"]),
                "doc_id": int(sample["doc_id"]),
                "metric": metric,
                "score": score,
                "higher_is_better": higher,
            }
        )
    return rows
