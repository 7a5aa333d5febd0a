"""Resumable training state and the signals that ask for it.

Each model of a pack keeps its own state in `<out_dir>/.state/state-<step>.pt` (its slice
of the stacked weights and AdamW moments, plus the pack's step, schedule position, RNG
states and elapsed time), so a mixture resumes whatever pack it lands in next time.
Files are written atomically; older ones are deleted only once every model of the pack
has the new one, and a resume takes the newest step that every model has.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from regmix.files import atomic_path
from regmix.layout import RunDir

STATE_DIR = ".state"
_STATE_RE = re.compile(r"^state-(\d{8})\.pt$")
# exit codes after a checkpoint on a signal: 128 + signal number, as a shell reports it
SIGNALS = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGUSR1: 128 + signal.SIGUSR1}


@dataclass
class TrainerState:
    """Where a pack's training stands: what a checkpoint holds beside the weights and AdamW
    moments. The step fixes the schedule and the data position (batches are a function of
    the seed and the step), so these few values resume a run bit for bit."""

    step: int
    elapsed: float  # seconds trained before this process, and by it so far
    train_loss: list[float]  # per model, the last step's (NaN before the first)
    rng: dict | None = None

    @classmethod
    def fresh(cls, k: int) -> TrainerState:
        return cls(step=0, elapsed=0.0, train_loss=[float("nan")] * k)


def state_dir(out_dir: str | Path) -> Path:
    return Path(RunDir(str(out_dir)).state)


def _steps(out_dir: str | Path) -> list[int]:
    directory = state_dir(out_dir)
    if not directory.is_dir():
        return []
    return sorted(int(m.group(1)) for p in directory.iterdir() if (m := _STATE_RE.match(p.name)))


def latest_common_step(out_dirs: Sequence[str | Path]) -> int | None:
    """Newest step saved for every one of `out_dirs` (None if there is none)."""
    common = None
    for out_dir in out_dirs:
        steps = set(_steps(out_dir))
        common = steps if common is None else common & steps
    return max(common) if common else None


def state_path(out_dir: str | Path, step: int) -> Path:
    return state_dir(out_dir) / f"state-{step:08d}.pt"


def save_pack(
    model, optimizer, out_dirs: Sequence[str | Path], state: TrainerState, fingerprints: Sequence[str]
) -> None:
    """Write one state file per model of the stacked `model` (K = len(out_dirs)): the
    pack's state (the model's own last loss), its fingerprint, weights and AdamW moments."""
    step = state.step
    names = dict(model.named_parameters())
    index_of = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    opt_state = optimizer.state_dict()["state"]
    for k, out_dir in enumerate(out_dirs):
        payload = {
            "step": state.step,
            "elapsed": state.elapsed,
            "rng": state.rng,
            "train_loss": state.train_loss[k],
            "fingerprint": fingerprints[k],
            "model": {n: p.detach()[k].cpu().clone() for n, p in names.items()},
            "optimizer": {
                n: {
                    key: (v[k].cpu().clone() if v.dim() else v.cpu().clone())
                    for key, v in opt_state.get(index_of[id(p)], {}).items()
                }
                for n, p in names.items()
            },
        }
        with atomic_path(state_path(out_dir, step)) as tmp:
            torch.save(payload, tmp)
    for out_dir in out_dirs:
        for old in _steps(out_dir):
            if old != step:
                state_path(out_dir, old).unlink(missing_ok=True)


def read_state(out_dir: str | Path, step: int) -> dict:
    # memory-mapped: reading a 1B model's fingerprint does not read its weights
    return torch.load(state_path(out_dir, step), map_location="cpu", weights_only=False, mmap=True)


def load_pack(model, optimizer, out_dirs: Sequence[str | Path], step: int) -> TrainerState:
    """Restore the stacked model and optimizer from each model's state at `step`; returns
    the pack's state."""
    payloads = [read_state(d, step) for d in out_dirs]
    names = dict(model.named_parameters())
    with torch.no_grad():
        for n, p in names.items():
            p.copy_(torch.stack([pl["model"][n] for pl in payloads]).to(p.device, p.dtype))
    index_of = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    state = {}
    for n, p in names.items():
        entries = payloads[0]["optimizer"][n]
        if entries:
            state[index_of[id(p)]] = {
                key: (torch.stack([pl["optimizer"][n][key] for pl in payloads]).to(p.device) if v.dim() else v)
                for key, v in entries.items()
            }
    sd = optimizer.state_dict()
    sd["state"] = state
    optimizer.load_state_dict(sd)
    first = payloads[0]
    return TrainerState(
        step=first["step"], elapsed=first["elapsed"], train_loss=[pl["train_loss"] for pl in payloads], rng=first["rng"]
    )


def clear(out_dirs: Sequence[str | Path]) -> None:
    """Remove the resumable state (and the log kept there) once the outputs are complete."""
    for out_dir in out_dirs:
        shutil.rmtree(state_dir(out_dir), ignore_errors=True)


def rng_state() -> dict:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopSignals:
    """Records SIGTERM/SIGUSR1 (Slurm's warning before a time limit or preemption) so the
    loop can checkpoint at the end of the current step and exit."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.received = signum
        print(
            f"received signal {signal.Signals(signum).name}: checkpointing at the end of this step",
            file=sys.stderr,
            flush=True,
        )

    @property
    def exit_code(self) -> int:
        if self.received is None:
            raise RuntimeError("no stop signal was received")
        return SIGNALS[signal.Signals(self.received)]
