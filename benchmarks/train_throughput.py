"""Training throughput of regmix's trainer against a plain Hugging Face `Trainer` loop.

For one model config and device, prints side by side: tokens/s, model FLOPs per token
(counted from the config), achieved FLOP/s, the device's matmul peak measured in this
run, and MFU; for our trainer step (stacked model, chunked loss, per-model clipping,
AdamW) with K = 1 and K = --pack models, and for `transformers.Trainer` training
`LlamaForCausalLM` on the same config and batch. Random tokens: this measures the
trainer, not the data.

    python benchmarks/train_throughput.py --model demo_proxy --vocab 4096 --threads 1
    python benchmarks/train_throughput.py --model tinyllama_1M --batch 32 --pack 8   # GPU
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from regmix.config import model_architecture  # noqa: E402
from regmix.model import StackedLlama, flops_per_token, hf_config, parameter_counts, resolve_architecture  # noqa: E402
from regmix.train import accumulate_gradients, apply_gradients, autocast_dtype, make_optimizer, resolve_device  # noqa: E402

HP = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype | None) -> float:
    """Best FLOP/s of a large square matmul in the training precision."""
    n = 8192 if device.type == "cuda" else 1024
    dt = dtype or torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    clock = time.process_time if device.type == "cpu" else time.perf_counter  # CPU: unshared-core figure
    best = 0.0
    for _ in range(5):
        _sync(device)
        start = clock()
        for _ in range(10):
            a @ b
        _sync(device)
        best = max(best, 10 * 2 * n**3 / (clock() - start))
    return best


def ours(
    arch: dict, k: int, batch: int, micro: int, steps: int, warmup: int, device, dtype, compile_: bool
) -> tuple[float, float]:
    """Tokens per wall second and per CPU second (all K models together) of the trainer's step."""
    model = StackedLlama(arch, k, seed=0).to(device)
    if compile_:
        model.use_compiled()
    optimizer = make_optimizer(model, **HP)
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    windows = rng.integers(0, arch.vocab_size, size=(k, batch, arch.seq_len + 1))
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
        accumulate_gradients(model, windows, micro, device, dtype)
        apply_gradients(optimizer, params, k, 1.0)
    _sync(device)
    tokens = k * batch * arch.seq_len * steps
    return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu_start)


def hf_trainer(arch: dict, batch: int, micro: int, steps: int, warmup: int, device, dtype) -> tuple[float, float]:
    """Tokens/s of transformers.Trainer on LlamaForCausalLM, same config and batch."""
    from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = hf_config(arch, 0, 0, None)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    rng = np.random.default_rng(0)
    total = warmup + steps
    ids = rng.integers(0, arch.vocab_size, size=(total * batch, arch.seq_len))
    # a plain list of examples (what a torch Dataset yields), so `datasets` is not needed
    dataset = [{"input_ids": row, "labels": row} for row in torch.from_numpy(ids)]
    times = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                _sync(device)
                times["start"], times["cpu_start"] = time.perf_counter(), time.process_time()

        def on_train_end(self, args, state, control, **kwargs):
            _sync(device)
            times["end"], times["cpu_end"] = time.perf_counter(), time.process_time()

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            max_steps=total,
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=batch // micro,
            learning_rate=HP["lr"],
            adam_beta1=HP["beta1"],
            adam_beta2=HP["beta2"],
            weight_decay=HP["weight_decay"],
            max_grad_norm=1.0,
            lr_scheduler_type="constant",
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=device.type == "cpu",
            bf16=dtype == torch.bfloat16,
            dataloader_num_workers=0,
            disable_tqdm=True,
            seed=0,
        )
        Trainer(model=model, args=args, train_dataset=dataset, callbacks=[Clock()]).train()
    tokens = batch * arch.seq_len * steps
    return tokens / (times["end"] - times["start"]), tokens / (times["cpu_end"] - times["cpu_start"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo_proxy", help="a model in config/models.yaml")
    parser.add_argument(
        "--vocab", type=int, default=4096, help="tokenizer vocabulary when the model says vocab_size: tokenizer"
    )
    parser.add_argument("--batch", type=int, default=16, help="sequences per optimizer step (per model)")
    parser.add_argument("--micro", type=int, default=None, help="sequences per forward (default: --batch)")
    parser.add_argument("--pack", type=int, default=8, help="K of the packed run")
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model body (ours)")
    parser.add_argument(
        "--small-micro", type=int, default=1, help="also compare K=1 vs K=pack at this micro-batch (0 = skip)"
    )
    parser.add_argument("--skip-trainer", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions; the best is reported")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    dtype = autocast_dtype(args.dtype, device)
    arch = resolve_architecture(model_architecture(args.model), args.vocab)
    micro = args.micro or args.batch
    flops = flops_per_token(arch)["train"]
    counts = parameter_counts(arch)
    peak = matmul_peak(device, dtype)
    print(
        f"model {args.model}: {counts['non_embedding']:,} non-embedding + {counts['embedding']:,} "
        "embedding parameters; "
        f"seq {arch.seq_len}, vocab {arch.vocab_size}; {flops / 1e6:.2f} MFLOP per trained token"
    )
    print(
        f"device {device} ({args.threads} thread(s) on CPU), precision {dtype or torch.float32}; "
        f"batch {args.batch} x micro {micro}; "
        f"measured matmul peak {peak / 1e9:,.1f} GFLOP/s"
    )
    runs = {
        "regmix K=1": lambda: ours(arch, 1, args.batch, micro, args.steps, args.warmup, device, dtype, args.compile),
        f"regmix K={args.pack}": lambda: ours(
            arch, args.pack, args.batch, micro, args.steps, args.warmup, device, dtype, args.compile
        ),
    }
    if not args.skip_trainer:
        runs["HF Trainer"] = lambda: hf_trainer(arch, args.batch, micro, args.steps, args.warmup, device, dtype)
    if args.small_micro and args.small_micro < micro:
        runs[f"regmix K=1 micro {args.small_micro}"] = lambda: ours(
            arch, 1, args.batch, args.small_micro, args.steps, args.warmup, device, dtype, args.compile
        )
        runs[f"regmix K={args.pack} micro {args.small_micro}"] = lambda: ours(
            arch, args.pack, args.batch, args.small_micro, args.steps, args.warmup, device, dtype, args.compile
        )
    # rounds interleave the runs; the best round of each is kept (a shared machine's
    # other load only ever slows a run down)
    best = {name: (0.0, 0.0) for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            wall, cpu = fn()
            best[name] = (max(best[name][0], wall), max(best[name][1], cpu))
    # on a CPU, tokens per CPU second are what an unshared core would do
    key = 1 if device.type == "cpu" else 0
    unit = "tokens/CPU-s" if key else "tokens/s"
    print(f"\n{'run (K = models trained together)':<36}{'tokens/s':>12}{'tokens/CPU-s':>14}{'GFLOP/s':>10}{'MFU':>8}")
    for name, (wall, cpu) in best.items():
        rate = (wall, cpu)[key]
        print(f"{name:<36}{wall:>12,.0f}{cpu:>14,.0f}{rate * flops / 1e9:>10.1f}{rate * flops / peak:>8.1%}")
    k1, kp = best["regmix K=1"][key], best[f"regmix K={args.pack}"][key]
    print(f"\nratios on {unit}: packed K={args.pack} / K=1 = {kp / k1:.2f}x", end="")
    if not args.skip_trainer:
        trainer = best["HF Trainer"][key]
        print(
            f"; regmix K=1 / HF Trainer = {k1 / trainer:.2f}x; regmix K={args.pack} / HF Trainer = {kp / trainer:.2f}x",
            end="",
        )
    if args.small_micro and args.small_micro < micro:
        s1, sp = (
            best[f"regmix K=1 micro {args.small_micro}"][key],
            best[f"regmix K={args.pack} micro {args.small_micro}"][key],
        )
        print(f"; at micro-batch {args.small_micro}: K={args.pack} / K=1 = {sp / s1:.2f}x", end="")
    print()
    # No trainer can beat the measured matmul peak on the model's FLOPs, so a run at MFU m
    # can be sped up at most 1/m times: that bounds every ratio above.
    ceiling = peak / flops
    print(
        f"ceiling at 100% of the measured peak: {ceiling:,.0f} {unit}; the most any trainer could gain is "
        f"{ceiling / k1:.2f}x over regmix K=1",
        end="",
    )
    if not args.skip_trainer:
        print(f" and {ceiling / best['HF Trainer'][key]:.2f}x over the HF Trainer", end="")
    print()


if __name__ == "__main__":
    main()
