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
from pathlib import Path

import torch

from regmix.files import atomic_path

STATE_DIR = ".state"
_STATE_RE = re.compile(r"^state-(\d{8})\.pt$")
# exit codes after a checkpoint on a signal: 128 + signal number, as a shell reports it
SIGNALS = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGUSR1: 128 + signal.SIGUSR1}


def state_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / STATE_DIR


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


def save_pack(model, optimizer, out_dirs: Sequence[str | Path], common: dict, own: Sequence[dict]) -> None:
    """Write one state file per model of the stacked `model` (K = len(out_dirs)): the
    pack's `common` entries plus the model's `own` entries, weights and AdamW moments."""
    step = common["step"]
    names = dict(model.named_parameters())
    index_of = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    opt_state = optimizer.state_dict()["state"]
    for k, out_dir in enumerate(out_dirs):
        payload = {
            **common,
            **own[k],
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


def load_pack(model, optimizer, out_dirs: Sequence[str | Path], step: int) -> list[dict]:
    """Restore the stacked model and optimizer from each model's state at `step`; returns
    each model's payload without weights and moments (step, RNG states, elapsed, ...)."""
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
    return [{key: v for key, v in pl.items() if key not in ("model", "optimizer")} for pl in payloads]


def clear(out_dirs: Sequence[str | Path]) -> None:
    """Remove the resumable state (and the log kept there) once the outputs are complete."""
    for out_dir in out_dirs:
        shutil.rmtree(state_dir(out_dir), ignore_errors=True)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
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
        return SIGNALS[self.received]
