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
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regmix import checkpoint, files
from regmix.data import MixtureBatches, load_mixture, sidecar, validation_windows
from regmix.files import fingerprint
from regmix.layout import RunDir
from regmix.model import (
    Architecture,
    StackedLlama,
    flops_per_token,
    hf_config,
    parameter_counts,
    per_model_clip_,
    resolve_architecture,
)
from regmix.settings import ConfigError, parse_settings
from regmix.settings.train import HyperParameters, TrainSettings


def learning_rate(step: int, hp: HyperParameters) -> float:
    """Linear warm-up to `lr`, then constant or cosine decay to `min_lr` at the last step."""
    warmup, total, peak = hp.warmup_steps, hp.steps, hp.lr
    if step < warmup:
        return peak * (step + 1) / warmup
    if hp.schedule == "constant":
        return peak
    progress = (step - warmup) / max(total - warmup - 1, 1)
    return hp.min_lr + (peak - hp.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def autocast_dtype(wanted: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU ('auto') or when asked; None = plain float32."""
    if wanted == "bfloat16" or (wanted == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def run_fingerprint(settings: TrainSettings, weights: dict) -> str:
    """What a model's resumable state must match to be resumed."""
    return fingerprint(settings.resume_key(weights))


@torch.no_grad()
def validate(model: StackedLlama, windows: dict[str, np.ndarray], micro: int, device, dtype) -> dict[str, torch.Tensor]:
    """Mean next-token loss per model [K] on each domain's (and validation set's) fixed windows."""
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


def make_optimizer(
    model: StackedLlama, *, lr: float, weight_decay: float, beta1: float, beta2: float
) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices and embeddings, none on RMSNorm weights."""
    matrices = [p for p in model.parameters() if p.dim() >= 3]
    vectors = [p for p in model.parameters() if p.dim() < 3]
    return torch.optim.AdamW(
        [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}],
        lr=lr,
        betas=(beta1, beta2),
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


@dataclass(frozen=True)
class Process:
    """This process's place in a (possibly distributed) run and the device it computes on."""

    world: int
    rank: int
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = float32

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_process(settings: TrainSettings) -> Process:
    """Join the process group under torchrun, pick the device, set its math options."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(settings.runtime.device, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(settings.runtime.threads)
    return Process(world, rank, device, autocast_dtype(settings.hp.dtype, device))


def _finish_process(proc: Process) -> None:
    if proc.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _say(proc: Process, message: str) -> None:
    if proc.is_main:
        print(message, file=sys.stderr, flush=True)


@dataclass
class Pack:
    """The K runs trained together and everything built once before the loop."""

    settings: TrainSettings
    proc: Process
    ids: list[str]
    weights: list[dict[str, float]]
    mixture_paths: list[Path]
    runs: list[RunDir]
    arch: Architecture
    tokenizer: Any
    model: StackedLlama
    step_model: torch.nn.Module  # the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    batches: MixtureBatches
    val: dict[str, np.ndarray]
    local_batch: int
    micro: int
    fingerprints: list[str]
    data_dir: Path

    @property
    def k(self) -> int:
        return len(self.ids)

    @property
    def label(self) -> str:
        return self.ids[0] if self.k == 1 else f"{self.ids[0]}..{self.ids[-1]} (K={self.k})"

    @property
    def tokens_per_step(self) -> int:
        return self.k * self.settings.hp.global_batch * self.arch.seq_len

    def windows(self, step: int) -> np.ndarray:
        """This process's share [K, local_batch, T+1] of step `step`'s batch."""
        start = self.proc.rank * self.local_batch
        return self.batches.batch(step)[:, start : start + self.local_batch]


def _batch_split(settings: TrainSettings, world: int) -> tuple[int, int]:
    """(sequences per process, micro-batch) of a step."""
    stage, global_batch = settings.stage, settings.hp.global_batch
    if global_batch % world:
        raise ConfigError(f"config key '{stage}.global_batch' = {global_batch}: not divisible by {world} processes")
    local_batch = global_batch // world
    micro = min(settings.hp.micro_batch, local_batch)
    if local_batch % micro:
        raise ConfigError(
            f"config key '{stage}.micro_batch' = {micro}: does not divide the {local_batch} sequences per process"
        )
    return local_batch, micro


def _check_vocabulary(data_dir: Path, domains: Sequence[str], arch: Architecture) -> None:
    """Token ids of every domain must fit the model's embedding."""
    for domain in domains:
        path = sidecar(data_dir, domain, "valid")
        vocab = files.read_json(path).get("vocab_size") if path.is_file() else None
        if vocab and vocab > arch.vocab_size:
            raise ValueError(
                f"domain {domain!r}: tokens from a vocabulary of {vocab} exceed the model's {arch.vocab_size}"
            )


def build_pack(
    settings: TrainSettings,
    proc: Process,
    data_dir: Path,
    tokenizer_dir: Path,
    mixture_paths: Sequence[str | Path],
    out_dirs: Sequence[str | Path],
) -> Pack:
    """Read the mixtures, tokenizer and data; build the stacked model and its optimizer."""
    from transformers import AutoTokenizer

    mixtures = [load_mixture(p, list(settings.domains)) for p in mixture_paths]
    ids = [mix_id for mix_id, _ in mixtures]
    if len(set(ids)) != len(ids):
        raise ValueError(f"mixture ids repeat within one pack: {ids}")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    arch = resolve_architecture(settings.model, len(tokenizer))
    local_batch, micro = _batch_split(settings, proc.world)
    _check_vocabulary(data_dir, [*settings.domains, *settings.validation_sets], arch)
    domains, hp = list(settings.domains), settings.hp
    val = validation_windows(data_dir, domains, hp.val_windows, arch.seq_len, settings.validation_sets)
    weights = [w for _, w in mixtures]
    batches = MixtureBatches(data_dir, domains, weights, arch.seq_len, hp.global_batch, settings.seed)
    model = StackedLlama(arch, len(mixtures), seed=settings.seed).to(proc.device)
    optimizer = make_optimizer(model, lr=hp.lr, weight_decay=hp.weight_decay, beta1=hp.beta1, beta2=hp.beta2)
    return Pack(
        settings=settings,
        proc=proc,
        ids=ids,
        weights=weights,
        mixture_paths=[Path(p) for p in mixture_paths],
        runs=[RunDir(str(d)) for d in out_dirs],
        arch=arch,
        tokenizer=tokenizer,
        model=model,
        step_model=model,
        optimizer=optimizer,
        batches=batches,
        val=val,
        local_batch=local_batch,
        micro=micro,
        fingerprints=[run_fingerprint(settings, w) for w in weights],
        data_dir=data_dir,
    )


def _out_dirs(pack: Pack) -> list[str]:
    return [run.root for run in pack.runs]


def resume(pack: Pack) -> checkpoint.TrainerState:
    """The newest state every run of the pack has, when it is from these settings; else a fresh one."""
    step = checkpoint.latest_common_step(_out_dirs(pack))
    if step is None:
        return checkpoint.TrainerState.fresh(pack.k)
    saved = [checkpoint.read_state(d, step)["fingerprint"] for d in _out_dirs(pack)]
    if saved != pack.fingerprints:
        _say(pack.proc, f"state in {pack.runs[0].state} is from other settings: starting afresh")
        return checkpoint.TrainerState.fresh(pack.k)
    state = checkpoint.load_pack(pack.model, pack.optimizer, _out_dirs(pack), step)
    assert state.rng is not None  # save_state stores it with every state
    checkpoint.set_rng_state(state.rng)
    _say(pack.proc, f"resuming {','.join(pack.ids)} from step {state.step}")
    return state


def prepare_model(pack: Pack) -> None:
    """Compile the model when asked and wrap it for DDP under torchrun (after a resume has
    loaded the weights)."""
    if pack.settings.runtime.compile:
        pack.model.use_compiled()
    if pack.proc.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device = pack.proc.device
        pack.step_model = DistributedDataParallel(
            pack.model, device_ids=[device.index] if device.type == "cuda" else None
        )


class Clock:
    """Wall time of the run (across resumes) and the throughput of the steps timed here."""

    def __init__(self, elapsed_before: float, tokens_per_step: int):
        self.elapsed_before, self.tokens_per_step = elapsed_before, tokens_per_step
        self.start = time.perf_counter()
        self.train_seconds, self.steps = 0.0, 0

    def step_done(self, seconds: float) -> None:
        self.train_seconds += seconds
        self.steps += 1

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens_per_step * self.steps / max(self.train_seconds, 1e-9) if self.steps else None

    def eta(self, steps_left: int) -> float:
        return self.train_seconds / max(self.steps, 1) * steps_left


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def train_step(pack: Pack, state: checkpoint.TrainerState, windows: np.ndarray) -> tuple[float, torch.Tensor]:
    """One optimizer step at `state.step` on `windows`; advances `state`. Returns the learning
    rate used and the K pre-clip gradient norms."""
    hp = pack.settings.hp
    lr = learning_rate(state.step, hp)
    for group in pack.optimizer.param_groups:
        group["lr"] = lr
    proc = pack.proc
    losses = accumulate_gradients(pack.step_model, windows, pack.micro, proc.device, proc.dtype, proc.world)
    if not torch.isfinite(losses).all():
        bad = [pack.ids[i] for i in range(pack.k) if not math.isfinite(losses[i])]
        raise ValueError(f"non-finite training loss at step {state.step + 1} for {bad}: {losses.tolist()}")
    norms = apply_gradients(pack.optimizer, list(pack.model.parameters()), pack.k, hp.grad_clip).cpu()
    state.step += 1
    state.train_loss = [float(x) for x in losses]
    return lr, norms


def log_step(pack: Pack, state: checkpoint.TrainerState, logs: list[_Log], clock: Clock, lr: float, norms) -> None:
    """Every `log_every` steps, at the last step and at each evaluation: one record per
    model (with validation losses every `eval_every` steps) and one progress line."""
    hp, done = pack.settings.hp, state.step
    val_now = None
    if hp.eval_every and done % hp.eval_every == 0 and done < hp.steps:
        val_now = validate(pack.model, pack.val, pack.micro, pack.proc.device, pack.proc.dtype)
    if not (done % pack.settings.runtime.log_every == 0 or done == hp.steps or val_now is not None):
        return
    tps, elapsed = clock.tokens_per_second, clock.elapsed
    assert tps is not None  # a step was timed before this one is logged
    for i, log in enumerate(logs):
        # tokens/s: this model's share of the pack's throughput (as in losses.json)
        record: dict[str, Any] = {
            "step": done,
            "loss": state.train_loss[i],
            "lr": lr,
            "grad_norm": float(norms[i]),
            "tokens_per_second": tps / pack.k,
            "elapsed": elapsed,
        }
        if val_now is not None:
            record["val_loss"] = {d: float(v[i]) for d, v in val_now.items()}
        log.write(record)
    mean_loss = sum(state.train_loss) / pack.k
    _say(
        pack.proc,
        f"[{pack.settings.stage} {pack.label}] step {done}/{hp.steps} loss {mean_loss:.4f} lr {lr:.2e} "
        f"{tps:,.0f} tok/s elapsed {_format_eta(elapsed)} ETA {_format_eta(clock.eta(hp.steps - done))}",
    )


def save_state(pack: Pack, state: checkpoint.TrainerState, clock: Clock) -> None:
    state.elapsed, state.rng = clock.elapsed, checkpoint.rng_state()
    if pack.proc.is_main:
        checkpoint.save_pack(pack.model, pack.optimizer, _out_dirs(pack), state, pack.fingerprints)
    if pack.proc.world > 1:
        torch.distributed.barrier()


def _stop_requested(pack: Pack, signals: checkpoint.StopSignals) -> bool:
    """Whether any process got SIGTERM/SIGUSR1 (all processes agree, so all checkpoint)."""
    stop = torch.tensor([signals.received or 0], device=pack.proc.device)
    if pack.proc.world > 1:
        torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
    if stop.item():
        signals.received = signals.received or int(stop.item())
    return bool(stop.item())


def training_loop(pack: Pack, state: checkpoint.TrainerState, clock: Clock) -> int:
    """Train from `state.step` to the last step; 0, or the exit code after a stop signal."""
    hp, runtime = pack.settings.hp, pack.settings.runtime
    logs = [_Log(Path(run.state) / "train_log.jsonl", state.step, pack.proc.is_main) for run in pack.runs]
    # the next step's windows are gathered in a thread while this step computes
    with checkpoint.StopSignals() as signals, ThreadPoolExecutor(1) as prefetch:
        pending = prefetch.submit(pack.windows, state.step) if state.step < hp.steps else None
        while state.step < hp.steps:
            t0 = time.perf_counter()
            assert pending is not None  # submitted for every step below hp.steps
            windows = pending.result()
            if state.step + 1 < hp.steps:
                pending = prefetch.submit(pack.windows, state.step + 1)
            lr, norms = train_step(pack, state, windows)
            clock.step_done(time.perf_counter() - t0)
            log_step(pack, state, logs, clock, lr, norms)
            if _stop_requested(pack, signals):
                save_state(pack, state, clock)
                exit_code = signals.exit_code
                _say(pack.proc, f"checkpointed {pack.label} at step {state.step}; exit {exit_code} so a retry resumes")
                return exit_code
            if runtime.checkpoint_every and state.step % runtime.checkpoint_every == 0 and state.step < hp.steps:
                save_state(pack, state, clock)
    return 0


def export(pack: Pack, state: checkpoint.TrainerState, clock: Clock) -> None:
    """Final validation, then per model: the HF checkpoint, the training log and losses.json
    (written last: its presence means the run is complete); the resumable state goes."""
    final = validate(pack.model, pack.val, pack.micro, pack.proc.device, pack.proc.dtype)
    if not pack.proc.is_main:
        return
    hp, settings, arch = pack.settings.hp, pack.settings, pack.arch
    elapsed, tps = clock.elapsed, clock.tokens_per_second
    bos = pack.tokenizer.bos_token_id if pack.tokenizer.bos_token_id is not None else pack.tokenizer.eos_token_id
    llama_config = hf_config(arch, bos, pack.tokenizer.eos_token_id, pack.tokenizer.pad_token_id)
    tokens_seen = hp.steps * hp.global_batch * arch.seq_len
    sidecars = [sidecar(pack.data_dir, d, s) for d in settings.domains for s in ("train", "valid")]
    sidecars += [sidecar(pack.data_dir, name, "valid") for name in settings.validation_sets]
    for i, run in enumerate(pack.runs):
        if settings.runtime.save_model:
            _save_hf(pack.model, i, llama_config, pack.tokenizer, Path(run.model))
        with files.atomic_path(run.train_log) as tmp:
            shutil.copyfile(Path(run.state) / "train_log.jsonl", tmp)
        files.write_json(
            run.losses,
            {
                "mix_id": pack.ids[i],
                "weights": pack.weights[i],
                "val_loss": {d: float(v[i]) for d, v in final.items()},
                "train_loss": state.train_loss[i],
                "tokens_seen": tokens_seen,
                "steps": hp.steps,
                "seconds": elapsed,
                "tokens_per_second": tokens_seen / elapsed if elapsed else None,
                "pack_size": pack.k,
                "pack_tokens_per_second": tps,
                "world_size": pack.proc.world,
                "device": str(pack.proc.device)
                if pack.proc.world == 1
                else f"{pack.proc.world}x {pack.proc.device.type}",
                "seed": settings.seed,
                "config_fingerprint": fingerprint(settings.raw),
                "code_version": files.code_version(),
                "model": {
                    **arch.as_dict(),
                    "parameters": parameter_counts(arch),
                    "flops_per_token": flops_per_token(arch),
                },
                "provenance": files.provenance(
                    settings.raw, [pack.mixture_paths[i], *[p for p in sidecars if p.is_file()]]
                ),
            },
        )
    checkpoint.clear(_out_dirs(pack))


def train(
    settings: dict,
    stage: str,
    data_dir: str | Path,
    tokenizer_dir: str | Path,
    mixture_paths: Sequence[str | Path],
    out_dirs: Sequence[str | Path],
) -> int:
    """Train one model per mixture (stacked); returns the process exit code."""
    typed = TrainSettings.from_json(settings, stage)
    if len(mixture_paths) != len(out_dirs) or not mixture_paths:
        raise ValueError(f"{len(mixture_paths)} mixture(s) but {len(out_dirs)} output dir(s): need one per mixture")
    proc = setup_process(typed)
    pack = build_pack(typed, proc, Path(data_dir), Path(tokenizer_dir), mixture_paths, out_dirs)
    state = resume(pack)
    prepare_model(pack)
    clock = Clock(state.elapsed, pack.tokens_per_step)
    code = training_loop(pack, state, clock)
    if code == 0:
        export(pack, state, clock)
    _finish_process(proc)
    return code


def _save_hf(model: StackedLlama, index: int, config, tokenizer, target: Path) -> None:
    """HF checkpoint + tokenizer, renamed into place only when complete."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per tiny shard would drown the progress lines
    with files.atomic_dir(target) as staging:
        model.to_hf(index, config).save_pretrained(staging)
        tokenizer.save_pretrained(staging)


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
