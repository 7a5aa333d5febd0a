"""GPU integration tests of the trainer's fast path: they run only where CUDA is present
(the CPU suite covers the same code in float32 and eager mode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regmix.model import StackedLlama, resolve_architecture
from regmix.train import accumulate_gradients, apply_gradients, autocast_dtype, make_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ARCH = resolve_architecture(
    {
        "n_layers": 2,
        "n_heads": 4,
        "hidden_size": 128,
        "intermediate_size": 256,
        "seq_len": 128,
        "vocab_size": 4096,
        "pad_vocab_to": 64,
    }
)
HP = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1}


def _train(device: str, compiled: bool, steps: int = 20) -> np.ndarray:
    torch.manual_seed(0)
    model = StackedLlama(ARCH, 2, seed=0).to(device)
    if compiled:
        model.use_compiled()
    dtype = autocast_dtype("auto", torch.device(device))
    optimizer = make_optimizer(model, **HP)
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    # a learnable stream (repeating ramps) so the losses fall and can be compared
    ramp = np.arange(ARCH.seq_len + 1)[None, None, :] * np.array([[[1]], [[3]]])
    losses = []
    for _ in range(steps):
        windows = (ramp + rng.integers(0, 50, size=(2, 8, 1))) % 200
        loss = accumulate_gradients(model, windows, 4, torch.device(device), dtype)
        apply_gradients(optimizer, params, 2, 1.0)
        losses.append(loss.numpy())
    return np.array(losses)


def test_bf16_fused_path_on_gpu_tracks_cpu_float32():
    """bf16 autocast, flash SDPA and fused AdamW on the GPU follow the CPU float32 run."""
    gpu, cpu = _train("cuda", compiled=False), _train("cpu", compiled=False)
    assert gpu[-1].max() < gpu[0].min() - 1.0  # it learns
    np.testing.assert_allclose(gpu, cpu, rtol=0.05)


def test_compiled_gpu_path_matches_eager_gpu():
    eager, compiled = _train("cuda", compiled=False), _train("cuda", compiled=True)
    np.testing.assert_allclose(compiled, eager, rtol=0.03)
