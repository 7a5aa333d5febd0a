"""Shared fixtures. Tests never touch a hub: offline variables are set for every test."""

import os
from pathlib import Path

import pytest

from tests.helpers import PAPER_DATA, REPO_DIR

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def repo_dir() -> Path:
    return REPO_DIR


@pytest.fixture
def paper_data() -> Path:
    if not (PAPER_DATA / "train_mixture_1m.csv").is_file():
        pytest.skip(f"paper data not found at {PAPER_DATA}")
    return PAPER_DATA
