"""Facts of the RegMix paper (Liu et al. 2024) and readers for its released proxy runs,
shared by the paper benchmark and the tests that check our stages against it."""

from __future__ import annotations

import os
from pathlib import Path

from regmix.config import REPO_DIR

TARGET = "metric/the_pile_pile_cc_val_loss"
NAMED = ("regmix", "doremi", "human", "pile_cc_only")
# token share of each Pile domain (the paper's Dirichlet prior), in the released column order
PILE_PRIOR = {
    "arxiv": 0.113285273,
    "freelaw": 0.079608651,
    "nih_exporter": 0.003913491,
    "pubmed_central": 0.185375901,
    "wikipedia_en": 0.051081359,
    "dm_mathematics": 0.015962925,
    "github": 0.101750772,
    "philpapers": 0.003707518,
    "stackexchange": 0.066529351,
    "enron_emails": 0.001750772,
    "gutenberg_pg_19": 0.027085479,
    "pile_cc": 0.236869207,
    "ubuntu_irc": 0.01184346,
    "europarl": 0.007929969,
    "hackernews": 0.008032956,
    "pubmed_abstracts": 0.038825953,
    "uspto_backgrounds": 0.046446962,
}


def data_dir() -> Path:
    """$REGMIX_PAPER_DATA, else ../shared/paper-data next to the checkout."""
    return Path(os.environ.get("REGMIX_PAPER_DATA", REPO_DIR.parent / "shared" / "paper-data"))


def prior_by_column() -> dict[str, float]:
    """The prior keyed by the released mixture files' column names."""
    return {f"train_the_pile_{d}": v for d, v in PILE_PRIOR.items()}
