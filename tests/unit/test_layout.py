"""The results layout: one statement of where each output lives."""

from __future__ import annotations

import re

from regmix.layout import Layout
from tests.helpers import REPO_DIR


def test_paths_under_the_results_dir():
    L = Layout("results")
    assert L.prior == "results/data/prior.yaml"
    assert L.token_counts == "results/data/token_counts.json"
    assert L.data.tokens("code", "train") == "results/data/code/train.bin"
    assert L.data.sidecar("code", "valid") == "results/data/code/valid.json"
    assert L.corpus.manifest == "results/corpus/manifest.json"
    assert L.corpus.file("code", "train", compressed=True) == "results/corpus/code/train.jsonl.zst"
    assert L.mixture("mix_0003") == "results/mixtures/mix_0003.yaml"
    assert L.proxy_losses("mix_0003") == "results/proxies/mix_0003/losses.json"
    assert L.proxy("mix_0003").state == "results/proxies/mix_0003/.state"
    assert L.regression("model.pkl") == "results/regression/model.pkl"
    assert L.chosen == "results/chosen/regmix.yaml"
    assert L.large_model("prior") == "results/large/prior/model"
    assert L.eval("prior") == "results/eval/prior.json"
    assert L.log("tokenize", "code_train") == "results/logs/tokenize/code_train.log"
    assert L.log("compute_prior") == "results/logs/compute_prior.log"


def test_wildcards_and_globs_pass_through():
    assert Layout("out").large("{candidate}").losses == "out/large/{candidate}/losses.json"
    assert Layout("").proxy("*").train_log == "proxies/*/train_log.jsonl"
    assert Layout("/abs/run").summary_md == "/abs/run/summary.md"


def test_rules_build_no_path_of_their_own():
    """Every rule path comes from the layout: no results folder or `R` prefix in rules/."""
    for path in sorted((REPO_DIR / "rules").glob("*.smk")) + [REPO_DIR / "Snakefile"]:
        text = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())  # code, not comments
        assert not re.search(r"\{R\}|\bR\s*=|results/", text), f"{path.name} builds a results path itself"
