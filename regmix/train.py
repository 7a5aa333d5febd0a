"""The trainer of proxy and large models (one loop for both).

`regmix train-proxies` trains a pack of K proxies (one per mixture, same architecture) in
one process with stacked weights; `regmix train-large` trains one model (K = 1), data
parallel over `torchrun` processes when WORLD_SIZE > 1. Both write, per mixture,
`losses.json`, `train_log.jsonl` and an HF `LlamaForCausalLM` directory `model/`, and keep
resumable state in `<out_dir>/.state/` (checkpointed every `checkpoint_every` steps and on
SIGTERM/SIGUSR1, after which the process exits non-zero so a retry resumes it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from regmix import checkpoint
from regmix.config import ConfigError, parse_settings
from regmix.data import MixtureBatches, load_mixture, sidecar, validation_windows
from regmix.files import code_version, fingerprint, provenance, write_json
from regmix.model import (
    StackedLlama,
    flops_per_token,
    hf_config,
    parameter_counts,
    per_model_clip_,
    resolve_architecture,
)

HYPER_PARAMETERS = (
    "steps",
    "warmup_steps",
    "lr",
    "min_lr",
    "schedule",
    "global_batch",
    "micro_batch",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "eval_every",
    "val_windows",
    "log_every",
    "checkpoint_every",
)
# settings that change how a run executes but not what it computes: a resume ignores them
RUNTIME_KEYS = ("device", "threads", "compile", "log_every", "checkpoint_every", "pack_size", "save_model")


def learning_rate(step: int, hp: dict) -> float:
    """Linear warm-up to `lr`, then constant or cosine decay to `min_lr` at the last step."""
    warmup, total, peak = hp["warmup_steps"], hp["steps"], hp["lr"]
    if step < warmup:
        return peak * (step + 1) / warmup
    if hp["schedule"] == "constant":
        return peak
    progress = (step - warmup) / max(total - warmup - 1, 1)
    return hp["min_lr"] + (peak - hp["min_lr"]) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def autocast_dtype(hp: dict, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU ('auto') or when asked; None = plain float32."""
    wanted = hp.get("dtype", "auto")
    if wanted == "bfloat16" or (wanted == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def run_fingerprint(settings: dict, stage: str, weights: dict) -> str:
    """What a model's resumable state must match to be resumed."""
    hp = {k: v for k, v in settings[stage].items() if k not in RUNTIME_KEYS}
    return fingerprint(
        {
            "stage": stage,
            "seed": settings["seed"],
            "domains": settings["domains"],
            "hp": hp,
            "model": settings["model"],
            "weights": weights,
        }
    )


@torch.no_grad()
def validate(model: StackedLlama, windows: dict[str, np.ndarray], micro: int, device, dtype) -> dict[str, torch.Tensor]:
    """Mean next-token loss per model [K] on each domain's fixed validation windows."""
    out = {}
    for domain, tokens in windows.items():
        total = torch.zeros(model.k, dtype=torch.float64, device=device)
        for start in range(0, len(tokens), micro):
            chunk = torch.from_numpy(tokens[start : start + micro]).to(device)
            with _autocast(device, dtype):
                loss = model(chunk.unsqueeze(0).expand(model.k, -1, -1))
            total += loss.double() * len(chunk)
        out[domain] = (total / len(tokens)).float()
    return out


def make_optimizer(model: StackedLlama, hp: dict) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices and embeddings, none on RMSNorm weights."""
    matrices = [p for p in model.parameters() if p.dim() >= 3]
    vectors = [p for p in model.parameters() if p.dim() < 3]
    return torch.optim.AdamW(
        [{"params": matrices, "weight_decay": hp["weight_decay"]}, {"params": vectors, "weight_decay": 0.0}],
        lr=hp["lr"],
        betas=(hp["beta1"], hp["beta2"]),
        eps=1e-8,
        fused=next(model.parameters()).is_cuda or None,
    )


def accumulate_gradients(step_model, windows: np.ndarray, micro: int, device, dtype, world: int = 1) -> torch.Tensor:
    """Forward and backward over this process's windows [K, B, T+1] in micro-batches; the
    gradients are those of the mean loss over all B (and over processes, by DDP). Returns
    the mean training loss per model [K] on the CPU."""
    k, batch = windows.shape[:2]
    accum = batch // micro
    step_loss = torch.zeros(k, device=device)
    for m in range(accum):
        chunk = torch.from_numpy(np.ascontiguousarray(windows[:, m * micro : (m + 1) * micro]))
        if device.type == "cuda":
            chunk = chunk.pin_memory()
        chunk = chunk.to(device, non_blocking=True)
        # DDP: all-reduce the gradients once, after the last micro-batch
        sync = contextlib.nullcontext() if world == 1 or m == accum - 1 else step_model.no_sync()
        with sync:
            with _autocast(device, dtype):
                loss = step_model(chunk)
            (loss.sum() * (micro / batch)).backward()
        step_loss += loss.detach().float() * (micro / batch)
    if world > 1:
        torch.distributed.all_reduce(step_loss)
        step_loss /= world
    return step_loss.cpu()


def apply_gradients(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor], k: int, grad_clip: float
) -> torch.Tensor:
    """Clip each of the K models' gradients on its own, step, and clear the gradients;
    returns the K pre-clip gradient norms."""
    norms = per_model_clip_(params, k, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norms


class _Log:
    """Append-only JSON lines in the state dir, truncated to the resumed step on restart."""

    def __init__(self, path: Path, resume_step: int, active: bool):
        self.path, self.active = path, active
        if not active:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step and path.is_file():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
        path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        if self.active:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train(
    settings: dict,
    stage: str,
    data_dir: str | Path,
    tokenizer_dir: str | Path,
    mixture_paths: Sequence[str | Path],
    out_dirs: Sequence[str | Path],
) -> int:
    """Train one model per mixture (stacked); returns the process exit code."""
    from transformers import AutoTokenizer

    if stage not in ("proxy", "large"):
        raise ValueError(f"unknown training stage {stage!r}")
    for key in ("seed", "domains", stage, "model"):
        if key not in settings:
            raise ConfigError(
                f"settings: missing key {key!r} (expected regmix.config.stage_settings(config, {stage!r}))"
            )
    if len(mixture_paths) != len(out_dirs) or not mixture_paths:
        raise ValueError(f"{len(mixture_paths)} mixture(s) but {len(out_dirs)} output dir(s): need one per mixture")
    hp, domains, seed = settings[stage], list(settings["domains"]), int(settings["seed"])
    missing = [key for key in HYPER_PARAMETERS if key not in hp]
    if missing:
        raise ConfigError(
            f"settings key {stage!r}: missing {missing} (expected regmix.config.stage_settings(config, {stage!r}))"
        )
    out_dirs = [Path(d) for d in out_dirs]
    world, rank, local_rank = _distributed()
    device = resolve_device(hp.get("device", "auto"), local_rank)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(int(hp.get("threads", 1)))
    dtype = autocast_dtype(hp, device)
    is_main = rank == 0

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    arch = resolve_architecture(settings["model"], len(tokenizer))
    eos = tokenizer.eos_token_id
    llama_config = hf_config(
        arch, tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos, eos, tokenizer.pad_token_id
    )
    mixtures = [load_mixture(p, domains) for p in mixture_paths]
    ids = [m[0] for m in mixtures]
    if len(set(ids)) != len(ids):
        raise ValueError(f"mixture ids repeat within one pack: {ids}")
    k = len(mixtures)
    seq_len, global_batch = arch["seq_len"], hp["global_batch"]
    if global_batch % world:
        raise ConfigError(f"config key '{stage}.global_batch' = {global_batch}: not divisible by {world} processes")
    local_batch = global_batch // world
    micro = min(hp["micro_batch"], local_batch)
    if local_batch % micro:
        raise ConfigError(
            f"config key '{stage}.micro_batch' = {micro}: does not divide the {local_batch} sequences per process"
        )
    for domain in domains:
        meta = (
            json.loads(sidecar(data_dir, domain, "valid").read_text())
            if sidecar(data_dir, domain, "valid").is_file()
            else {}
        )
        if meta.get("vocab_size") and meta["vocab_size"] > arch["vocab_size"]:
            raise ValueError(
                f"domain {domain!r}: tokens from a vocabulary of {meta['vocab_size']} exceed the model's {arch['vocab_size']}"
            )
    val = validation_windows(data_dir, domains, hp["val_windows"], seq_len)
    batches = MixtureBatches(data_dir, domains, [m[1] for m in mixtures], seq_len, global_batch, seed)

    model = StackedLlama(arch, k, seed=seed).to(device)
    optimizer = make_optimizer(model, hp)
    prints = [run_fingerprint(settings, stage, m[1]) for m in mixtures]
    start_step, elapsed_before, resumed_losses = 0, 0.0, torch.full((k,), float("nan"))
    resume = checkpoint.latest_common_step(out_dirs)
    if resume is not None:
        if [checkpoint.read_state(d, resume)["fingerprint"] for d in out_dirs] == prints:
            extras = checkpoint.load_pack(model, optimizer, out_dirs, resume)
            checkpoint.set_rng_state(extras[0]["rng"])
            start_step, elapsed_before = extras[0]["step"], extras[0]["elapsed"]
            resumed_losses = torch.tensor([e["train_loss"] for e in extras])
            if is_main:
                print(f"resuming {','.join(ids)} from step {start_step}", file=sys.stderr, flush=True)
        elif is_main:
            print(
                f"state in {out_dirs[0] / checkpoint.STATE_DIR} is from other settings: starting afresh",
                file=sys.stderr,
                flush=True,
            )
    logs = [_Log(checkpoint.state_dir(d) / "train_log.jsonl", start_step, is_main) for d in out_dirs]

    step_model = model
    if hp.get("compile"):
        model.use_compiled()
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    params = list(model.parameters())
    tokens_per_step = k * global_batch * seq_len
    label = ids[0] if k == 1 else f"{ids[0]}..{ids[-1]} (K={k})"
    train_seconds, steps_timed, tps = 0.0, 0, None
    t_start = time.perf_counter()
    losses = resumed_losses  # the last step's, should a resumed run have no step left
    code = 0

    def save(step_done: int) -> None:
        if is_main:
            common = {
                "step": step_done,
                "scheduler": {"step": step_done},
                "data_position": step_done,
                "rng": checkpoint.rng_state(),
                "elapsed": elapsed_before + time.perf_counter() - t_start,
            }
            own = [{"fingerprint": fp, "train_loss": float(loss)} for fp, loss in zip(prints, losses)]
            checkpoint.save_pack(model, optimizer, out_dirs, common, own)
        if world > 1:
            torch.distributed.barrier()

    def fetch(step: int) -> np.ndarray:
        return batches.batch(step)[:, rank * local_batch : (rank + 1) * local_batch]

    # the next step's windows are gathered in a thread while this step computes
    with checkpoint.StopSignals() as signals, ThreadPoolExecutor(1) as prefetch:
        pending = prefetch.submit(fetch, start_step) if start_step < hp["steps"] else None
        for step in range(start_step, hp["steps"]):
            t0 = time.perf_counter()
            lr = learning_rate(step, hp)
            for group in optimizer.param_groups:
                group["lr"] = lr
            windows = pending.result()
            if step + 1 < hp["steps"]:
                pending = prefetch.submit(fetch, step + 1)
            losses = accumulate_gradients(step_model, windows, micro, device, dtype, world)
            if not torch.isfinite(losses).all():
                bad = [ids[i] for i in range(k) if not math.isfinite(losses[i])]
                raise ValueError(f"non-finite training loss at step {step + 1} for {bad}: {losses.tolist()}")
            norms = apply_gradients(optimizer, params, k, hp["grad_clip"]).cpu()
            done = step + 1
            train_seconds += time.perf_counter() - t0
            steps_timed += 1
            tps = tokens_per_step * steps_timed / max(train_seconds, 1e-9)
            elapsed = elapsed_before + time.perf_counter() - t_start
            val_now = None
            if hp["eval_every"] and done % hp["eval_every"] == 0 and done < hp["steps"]:
                val_now = validate(model, val, micro, device, dtype)
            if done % hp["log_every"] == 0 or done == hp["steps"] or val_now is not None:
                for i, log in enumerate(logs):
                    # tokens/s: this model's share of the pack's throughput (as in losses.json)
                    record = {
                        "step": done,
                        "loss": float(losses[i]),
                        "lr": lr,
                        "grad_norm": float(norms[i]),
                        "tokens_per_second": tps / k,
                        "elapsed": elapsed,
                    }
                    if val_now is not None:
                        record["val_loss"] = {d: float(v[i]) for d, v in val_now.items()}
                    log.write(record)
                if is_main:
                    eta = train_seconds / steps_timed * (hp["steps"] - done)
                    print(
                        f"[{stage} {label}] step {done}/{hp['steps']} loss {losses.mean():.4f} lr {lr:.2e} "
                        f"{tps:,.0f} tok/s elapsed {_format_eta(elapsed)} ETA {_format_eta(eta)}",
                        file=sys.stderr,
                        flush=True,
                    )
            stop = torch.tensor([signals.received or 0], device=device)
            if world > 1:
                torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
            if stop.item():
                signals.received = signals.received or int(stop.item())
                save(done)
                if is_main:
                    print(
                        f"checkpointed {label} at step {done}; exiting with {signals.exit_code} so a retry resumes",
                        file=sys.stderr,
                        flush=True,
                    )
                code = signals.exit_code
                break
            if hp["checkpoint_every"] and done % hp["checkpoint_every"] == 0 and done < hp["steps"]:
                save(done)
    if code:
        _finish_distributed(world)
        return code

    final = validate(model, val, micro, device, dtype)
    if is_main:
        elapsed = elapsed_before + time.perf_counter() - t_start
        counts = parameter_counts(arch)
        for i, (out_dir, (mix_id, weights), path) in enumerate(zip(out_dirs, mixtures, mixture_paths)):
            if hp.get("save_model", True):
                _save_hf(model, i, llama_config, tokenizer, out_dir / "model")
            shutil.copyfile(logs[i].path, out_dir / ".train_log.jsonl.tmp")
            os.replace(out_dir / ".train_log.jsonl.tmp", out_dir / "train_log.jsonl")
            tokens_seen = hp["steps"] * global_batch * seq_len
            write_json(
                out_dir / "losses.json",
                {
                    "mix_id": mix_id,
                    "weights": weights,
                    "val_loss": {d: float(v[i]) for d, v in final.items()},
                    "train_loss": float(losses[i]),
                    "tokens_seen": tokens_seen,
                    "steps": hp["steps"],
                    "seconds": elapsed,
                    "tokens_per_second": tokens_seen / elapsed if elapsed else None,
                    "pack_size": k,
                    "pack_tokens_per_second": tps,
                    "world_size": world,
                    "device": str(device) if world == 1 else f"{world}x {device.type}",
                    "seed": seed,
                    "config_fingerprint": fingerprint(settings),
                    "code_version": code_version(),
                    "model": {**arch, "parameters": counts, "flops_per_token": flops_per_token(arch)},
                    "provenance": provenance(
                        settings,
                        [
                            path,
                            *[
                                sidecar(data_dir, d, s)
                                for d in domains
                                for s in ("train", "valid")
                                if sidecar(data_dir, d, s).is_file()
                            ],
                        ],
                    ),
                },
            )
        checkpoint.clear(out_dirs)
    _finish_distributed(world)
    return 0


def _finish_distributed(world: int) -> None:
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _save_hf(model: StackedLlama, index: int, config, tokenizer, target: Path) -> None:
    """HF checkpoint + tokenizer, renamed into place only when complete."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per tiny shard would drown the progress lines
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.to_hf(index, config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def proxies_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="regmix train-proxies", description="Train a pack of proxy models, one per mixture, with stacked weights."
    )
    parser.add_argument("--settings", required=True, help="JSON of regmix.config.stage_settings(config, 'proxy')")
    parser.add_argument("--data", required=True, help="token data dir (R/data)")
    parser.add_argument("--tokenizer", required=True, help="HF tokenizer dir")
    parser.add_argument("--mixtures", required=True, nargs="+", help="mixture yaml files, one per proxy")
    parser.add_argument("--out-dirs", required=True, nargs="+", help="one output dir per mixture, in the same order")
    args = parser.parse_args(argv)
    return train(parse_settings(args.settings), "proxy", args.data, args.tokenizer, args.mixtures, args.out_dirs)


def large_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="regmix train-large",
        description="Train a large model on one candidate mixture (torchrun for several GPUs).",
    )
    parser.add_argument("--settings", required=True, help="JSON of regmix.config.stage_settings(config, 'large')")
    parser.add_argument("--data", required=True, help="token data dir (R/data)")
    parser.add_argument("--tokenizer", required=True, help="HF tokenizer dir")
    parser.add_argument("--mixture", required=True, help="candidate mixture yaml ({name, weights})")
    parser.add_argument("--out-dir", required=True, help="output dir")
    args = parser.parse_args(argv)
    return train(parse_settings(args.settings), "large", args.data, args.tokenizer, [args.mixture], [args.out_dir])
