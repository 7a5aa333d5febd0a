"""Seconds of one candidate's downstream evaluation at demo size, side by side.

Builds the demo corpus and tokenizer in a temporary folder (or reuses --corpus and
--tokenizer), saves an untrained model of the config's large architecture (evaluation
cost does not depend on the weights), then times `make-tasks` and `evaluate` for a few
settings of items per task and torch threads. Target: about 20-30 s per candidate on a
2-core laptop at the demo defaults.

    python benchmarks/evaluate_speed.py [--config config/config.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "regmix.cli", *args],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    from regmix.config import load_config, stage_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "config/config.yaml"))
    parser.add_argument("--corpus", help="existing corpus folder (default: build one)")
    parser.add_argument("--tokenizer", help="existing tokenizer folder (default: train one)")
    args = parser.parse_args()
    config = load_config(args.config)
    work = Path(tempfile.mkdtemp(prefix="regmix-eval-bench-"))
    corpus, tokenizer = args.corpus, args.tokenizer
    if corpus is None:
        corpus = str(work / "corpus")
        _run(["corpus", "--settings", json.dumps(stage_settings(config, "corpus")), "--out", corpus])
    if tokenizer is None:
        tokenizer = str(work / "tokenizer")
        _run(
            [
                "train-tokenizer",
                "--settings",
                json.dumps(stage_settings(config, "tokenizer")),
                "--corpus",
                corpus,
                "--out",
                tokenizer,
            ]
        )

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from regmix.model import hf_config, resolve_architecture

    tok = AutoTokenizer.from_pretrained(tokenizer)
    arch = resolve_architecture(stage_settings(config, "large")["model"], len(tok))
    torch.manual_seed(0)
    model_dir = work / "model"
    LlamaForCausalLM(hf_config(arch, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)

    defaults = stage_settings(config, "evaluate")["evaluate"]
    print(
        f"model {arch.name}: {arch.n_layers} layers, hidden {arch.hidden_size}, seq {arch.seq_len}, "
        f"vocab {arch.vocab_size}; shots {defaults['num_fewshot']}"
    )
    print(f"{'items/task':>10} {'chars/item':>10} {'threads':>7} {'make-tasks s':>12} {'evaluate s':>10}")
    for items, chars in ((defaults["docs_per_task"], defaults["max_doc_chars"]), (40, 2000)):
        task_settings = stage_settings(config, "eval_tasks")
        task_settings["evaluate"].update(docs_per_task=items, max_doc_chars=chars)
        tasks = work / f"tasks_{items}_{chars}"
        made = _run(["make-tasks", "--settings", json.dumps(task_settings), "--corpus", corpus, "--out", str(tasks)])
        for threads in (1, 2):
            settings = stage_settings(config, "evaluate")
            settings["evaluate"]["threads"] = threads
            took = _run(
                [
                    "evaluate",
                    "--settings",
                    json.dumps(settings),
                    "--model",
                    str(model_dir),
                    "--tasks",
                    str(tasks),
                    "--out",
                    str(work / f"eval_{items}_{threads}.json"),
                ]
            )
            print(f"{items:>10} {chars:>10} {threads:>7} {made:>12.1f} {took:>10.1f}")
    print(f"(files in {work})")


if __name__ == "__main__":
    main()
