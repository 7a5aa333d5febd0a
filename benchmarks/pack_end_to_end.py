"""Proxy packing end to end: one `regmix train-proxies` job of K mixtures against K jobs of one.

`train_throughput.py` times the training step alone. A proxy job also pays for starting
Python and torch, loading the tokenizer and the memory-mapped data, validating, and
writing checkpoints and an HF model; packing pays those once per K proxies. This script
runs the pipeline's real proxy command on a demo results directory, side by side in one
run: the K mixtures as one packed job, then as K jobs of one (one after the other, same
threads), and prints tokens/s of each, their ratio, and how far the packed losses are
from the single runs' (they must agree to float tolerance).

    snakemake --cores all --until synthesize_mixtures     # the demo's data and mixtures
    python benchmarks/pack_end_to_end.py [--results results] [--pack 8] [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from regmix.config import load_config, mixture_ids, stage_settings  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train_job(settings: dict, results: Path, mixtures: list[Path], out_dirs: list[Path]) -> tuple[float, float]:
    """Wall and CPU seconds of one `regmix train-proxies` process."""
    command = [
        "regmix",
        "train-proxies",
        "--settings",
        json.dumps(settings),
        "--data",
        str(results / "data"),
        "--tokenizer",
        str(results / "tokenizer"),
        "--mixtures",
        *map(str, mixtures),
        "--out-dirs",
        *map(str, out_dirs),
    ]
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    )
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"train-proxies failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, children_cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument(
        "--results", type=Path, default=Path("results"), help="a results dir with data/, tokenizer/ and mixtures/"
    )
    parser.add_argument("--pack", type=int, default=8, help="K")
    parser.add_argument("--steps", type=int, help="proxy steps (default: the config's)")
    parser.add_argument("--threads", type=int, help="threads per job (default: the config's)")
    args = parser.parse_args()

    config = load_config(args.config)
    settings = stage_settings(config, "proxy")
    hp = settings["proxy"]
    if args.steps:
        hp["steps"] = args.steps
    if args.threads:
        hp["threads"] = args.threads
    hp["device"] = "cpu"
    mixtures = [args.results / "mixtures" / f"{m}.yaml" for m in mixture_ids(config)[: args.pack]]
    missing = [str(p) for p in mixtures + [args.results / "tokenizer", args.results / "data"] if not p.exists()]
    if missing or len(mixtures) < args.pack:
        sys.exit(f"missing {missing or 'mixtures'}: run `snakemake --cores all --until synthesize_mixtures` first")
    k = len(mixtures)
    seq_len = settings["model"]["seq_len"]
    tokens = k * hp["steps"] * hp["global_batch"] * seq_len
    print(
        f"{k} demo proxies ({settings['model']['name']}), {hp['steps']} steps x {hp['global_batch']} "
        f"x {seq_len} tokens each, "
        f"{hp['threads']} thread(s) per job, {os.cpu_count()} CPU(s)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        packed_dirs = [Path(tmp) / "packed" / p.stem for p in mixtures]
        single_dirs = [Path(tmp) / "single" / p.stem for p in mixtures]
        packed = train_job(settings, args.results, mixtures, packed_dirs)
        singles = [train_job(settings, args.results, [m], [d]) for m, d in zip(mixtures, single_dirs, strict=False)]
        single = (sum(s[0] for s in singles), sum(s[1] for s in singles))
        packed_losses, single_losses = (
            [json.loads((d / "losses.json").read_text()) for d in dirs] for dirs in (packed_dirs, single_dirs)
        )
    worst = max(
        abs(a["val_loss"][dom] - b["val_loss"][dom])
        for a, b in zip(packed_losses, single_losses, strict=False)
        for dom in a["val_loss"]
    )
    # training-loop rates (losses.json's tokens/s of one model): the pack's, from one model's
    # share (every model of a pack reports the same), and the single runs' mean
    step_rate = packed_losses[0]["tokens_per_second"] * k
    single_step_rate = sum(run["tokens_per_second"] for run in single_losses) / k

    print(f"\n{'run':<28}{'wall s':>9}{'CPU s':>9}{'tokens/s':>11}{'tokens/CPU-s':>14}{'steps only, tokens/s':>22}")
    print(
        f"{f'1 job of K={k}':<28}{packed[0]:>9.1f}{packed[1]:>9.1f}"
        f"{tokens / packed[0]:>11,.0f}{tokens / packed[1]:>14,.0f}{step_rate:>22,.0f}"
    )
    print(
        f"{f'{k} jobs of K=1':<28}{single[0]:>9.1f}{single[1]:>9.1f}"
        f"{tokens / single[0]:>11,.0f}{tokens / single[1]:>14,.0f}{single_step_rate:>22,.0f}"
    )
    print(
        f"\npacked / single, end to end: {single[0] / packed[0]:.2f}x tokens/s, "
        f"{single[1] / packed[1]:.2f}x tokens/CPU-s; "
        f"per job, K=1 spends {single[0] / k:.1f} s of which training steps {tokens / k / single_step_rate:.1f} s"
    )
    print(f"largest |packed - single| validation loss: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
