"""Figures of a fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regmix import files


def plot_pred_vs_true(y_true, y_pred, spearman: float, target: str, title: str, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=12, alpha=0.7, label=f"held-out rows (Spearman {spearman:.2f})")
    low, high = float(min(np.min(y_true), np.min(y_pred))), float(max(np.max(y_true), np.max(y_pred)))
    ax.plot([low, high], [low, high], color="grey", linewidth=1, linestyle="--", label="y = x")
    ax.set_xlabel(f"true {target} (nats/token)")
    ax.set_ylabel(f"predicted {target} (nats/token)")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
