"""The database's schema: column types of the tables built from rows, and the views."""

from __future__ import annotations

# Column types of the tables built from rows, so that a table with no rows (a run that
# never validated mid-training, say) still has its columns.
_F, _I, _S, _B = "float64", "Int64", "string", "boolean"
_RUN = {
    "seed": _I,
    "steps": _I,
    "tokens_seen": _I,
    "seconds": _F,
    "tokens_per_second": _F,
    "code_version": _S,
    "config_fingerprint": _S,
    "train_loss": _F,
    "device": _S,
    "world_size": _I,
    "model": _S,
}
_TRAIN_LOG = {
    "step": _I,
    "loss": _F,
    "lr": _F,
    "tokens_per_second": _F,
    "tokens_seen": _I,
    "grad_norm": _F,
    "elapsed": _F,
}
ROW_TABLES: dict[str, dict[str, str]] = {
    "prior": {"domain": _S, "weight": _F},
    "token_counts": {"domain": _S, "split": _S, "tokens": _I},
    "mixtures": {"mix_id": _S, "domain": _S, "weight": _F},
    "proxy_losses": {"mix_id": _S, "domain": _S, "loss": _F},
    "proxy_runs": {"mix_id": _S, **_RUN},
    "proxy_train_log": {"mix_id": _S, **_TRAIN_LOG},
    "proxy_val_log": {"mix_id": _S, "step": _I, "domain": _S, "loss": _F},
    "imported_mixtures": {"source": _S, "mix_id": _S, "domain": _S, "weight": _F},
    "imported_losses": {"source": _S, "mix_id": _S, "domain": _S, "loss": _F},
    "regression_targets": {
        "target": _S,
        "label": _S,
        "main": _B,
        "regressor": _S,
        "rows": _I,
        "spearman": _F,
        "spearman_ci_low": _F,
        "spearman_ci_high": _F,
        "pearson": _F,
        "rmse": _F,
    },
    "regression_cv": {"key": _S, "value": _F, "text": _S},
    "regression_settings": {"key": _S, "value": _F, "text": _S},
    "chosen_mixture": {"domain": _S, "weight": _F, "epochs": _F, "predicted_target": _F},
    "candidates": {"candidate": _S, "domain": _S, "weight": _F},
    "candidate_predictions": {"candidate": _S, "predicted_target": _F},
    "large_losses": {"candidate": _S, "domain": _S, "loss": _F},
    "validation_sets": {"name": _S, "documents": _I, "tokens": _I, "bytes": _I},
    "large_runs": {"candidate": _S, **_RUN, "achieved_target": _F},
    "large_train_log": {"candidate": _S, **_TRAIN_LOG},
    "large_val_log": {"candidate": _S, "step": _I, "domain": _S, "loss": _F},
    "eval_items": {
        "candidate": _S,
        "task": _S,
        "shots": _I,
        "doc_id": _I,
        "metric": _S,
        "score": _F,
        "higher_is_better": _B,
    },
    "task_power": {
        "task": _S,
        "metric": _S,
        "higher_is_better": _B,
        "items": _I,
        "candidates": _I,
        "best": _S,
        "worst": _S,
        "spread": _F,
        "mean_stderr": _F,
        "max_pair_z": _F,
        "pairs_apart": _I,
        "pairs": _I,
        "can_tell_apart": _B,
    },
    "paired_comparisons": {
        "task": _S,
        "metric": _S,
        "reference": _S,
        "other": _S,
        "items": _I,
        "reference_score": _F,
        "other_score": _F,
        "mean_difference": _F,
        "ci_low": _F,
        "ci_high": _F,
        "verdict": _S,
    },
    "transfer": {
        "candidate": _S,
        "kind": _S,
        "predicted_target": _F,
        "achieved_target": _F,
        "predicted_rank": _I,
        "achieved_rank": _I,
    },
    "transfer_summary": {
        "target": _S,
        "candidates": _I,
        "spearman": _F,
        "ci_low": _F,
        "ci_high": _F,
        "bootstrap": _I,
        "regmix_achieved_rank": _I,
        "regmix_predicted_rank": _I,
        "best_candidate": _S,
    },
    "eval_results": {
        "candidate": _S,
        "task": _S,
        "shots": _I,
        "metric": _S,
        "filter": _S,
        "value": _F,
        "stderr": _F,
        "higher_is_better": _B,
        "is_primary": _B,
    },
}


VIEWS = {
    # predicted (regression on the candidate's weights) vs achieved (large model) target loss
    "target_loss": """
        SELECT r.candidate, p.predicted_target, r.achieved_target,
               r.achieved_target - p.predicted_target AS error,
               rank() OVER (ORDER BY p.predicted_target) AS predicted_rank,
               rank() OVER (ORDER BY r.achieved_target) AS achieved_rank
        FROM large_runs r JOIN candidate_predictions p USING (candidate)
        ORDER BY achieved_rank, r.candidate""",
    # scores averaged over shot counts (the paper reports 0-5 shots averaged)
    "eval_scores": """
        SELECT candidate, task, metric, filter, any_value(higher_is_better) AS higher_is_better,
               bool_or(is_primary) AS is_primary, avg(value) AS value,
               sqrt(sum(stderr * stderr)) / count(stderr) AS stderr, count(*) AS shot_counts
        FROM eval_results
        GROUP BY candidate, task, metric, filter""",
    # one primary metric per task (acc_norm / acc for choice tasks, bits per byte for perplexity)
    "task_ranking": """
        SELECT candidate, task, metric, filter, value, stderr,
               rank() OVER (PARTITION BY task, metric, filter
                            ORDER BY CASE WHEN higher_is_better THEN -value ELSE value END) AS rank
        FROM eval_scores WHERE is_primary
        ORDER BY task, rank, candidate""",
    "average_ranking": """
        SELECT k.candidate, avg(k.rank) AS mean_task_rank, count(*) AS tasks, t.achieved_rank AS target_rank,
               rank() OVER (ORDER BY avg(k.rank)) AS rank
        FROM task_ranking k LEFT JOIN target_loss t USING (candidate)
        GROUP BY k.candidate, t.achieved_rank
        ORDER BY rank, k.candidate""",
}
