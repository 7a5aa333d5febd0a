"""The stacked LLaMA against transformers' LlamaForCausalLM, parameter and FLOP counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import regmix.model as model_module
from regmix.config import model_architecture
from regmix.model import (
    StackedLlama,
    flops_per_token,
    hf_config,
    parameter_counts,
    per_model_clip_,
    resolve_architecture,
)

ARCH = {
    "name": "t",
    "n_layers": 2,
    "n_heads": 4,
    "hidden_size": 32,
    "intermediate_size": 48,
    "seq_len": 16,
    "vocab_size": 200,
    "pad_vocab_to": 64,
}


def _perturbed(k: int, seed: int = 0) -> StackedLlama:
    """A stack whose K models differ (a fresh stack starts all K from the same weights)."""
    model = StackedLlama(resolve_architecture(ARCH), k, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def test_paper_model_sizes():
    tiny = parameter_counts(resolve_architecture(model_architecture("tinyllama_1M")))
    assert 1.0e6 <= tiny["non_embedding"] <= 1.4e6  # the paper's "1M" counts non-embedding weights
    assert tiny["total"] == pytest.approx(27e6, rel=0.02)  # about 27M with the 50432 vocabulary
    big = parameter_counts(resolve_architecture(model_architecture("tinyllama_1B")))
    assert big["non_embedding"] == pytest.approx(1.1e9, rel=0.05)  # "1B" (full multi-head attention here)
    mid = parameter_counts(resolve_architecture(model_architecture("tinyllama_60M")))
    assert mid["non_embedding"] == pytest.approx(60e6, rel=0.05)
    # matches a real HF model's parameter count
    arch = resolve_architecture(ARCH)
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM(hf_config(arch, 0, 0, None))
    assert sum(p.numel() for p in hf.parameters()) == parameter_counts(arch)["total"]


def test_flops_per_token_formula():
    arch = resolve_architecture(ARCH)
    f = flops_per_token(arch)
    weights = 2 * (4 * 32 * 32 + 3 * 32 * 48) + 256 * 32
    assert f["forward"] == 2 * weights + 4 * 2 * 16 * 32 and f["train"] == 3 * f["forward"]


def test_vocab_padding_and_errors():
    assert resolve_architecture({**ARCH, "vocab_size": "tokenizer"}, tokenizer_vocab=4097).vocab_size == 4160
    with pytest.raises(ValueError, match="tokenizer"):
        resolve_architecture({**ARCH, "vocab_size": "tokenizer"})
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        resolve_architecture({**ARCH, "vocab_size": 100}, tokenizer_vocab=150)
    with pytest.raises(ValueError, match="heads"):
        resolve_architecture({**ARCH, "n_heads": 3})


def test_stacked_forward_and_gradients_equal_hf_llama():
    k = 3
    stacked = _perturbed(k)
    windows = torch.randint(0, 200, (k, 2, 17))
    loss = stacked(windows)
    loss.sum().backward()
    config = hf_config(stacked.arch, 1, 2, None)
    for i in range(k):
        hf = stacked.to_hf(i, config)
        hf.config._attn_implementation = "sdpa"
        logits = hf(input_ids=windows[i, :, :-1]).logits
        ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[i, :, 1:].reshape(-1))
        assert loss[i].item() == pytest.approx(ref.item(), rel=1e-5)
        ref.backward()
        grads = dict(hf.named_parameters())
        h = stacked.arch.hidden_size
        torch.testing.assert_close(stacked.lm_head.grad[i], grads["lm_head.weight"].grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(stacked.embed.grad[i], grads["model.embed_tokens.weight"].grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(
            stacked.layers[1].qkv.grad[i][h : 2 * h],
            grads["model.layers.1.self_attn.k_proj.weight"].grad,
            rtol=1e-4,
            atol=1e-6,
        )
        torch.testing.assert_close(
            stacked.layers[0].down.grad[i], grads["model.layers.0.mlp.down_proj.weight"].grad, rtol=1e-4, atol=1e-6
        )


def test_chunked_loss_does_not_depend_on_chunk_size(monkeypatch):
    stacked = _perturbed(2)
    windows = torch.randint(0, 200, (2, 4, 17))
    whole = stacked(windows)
    whole.sum().backward()
    grads = [p.grad.clone() for p in stacked.parameters()]
    stacked.zero_grad()
    monkeypatch.setitem(model_module.LOSS_CHUNK_ELEMENTS, "cpu", 256 * 5)  # 5 tokens per chunk
    chunked = stacked(windows)
    chunked.sum().backward()
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    for p, g in zip(stacked.parameters(), grads, strict=False):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_hf_round_trip_and_untrained_loss_near_ln_vocab():
    stacked = _perturbed(2)
    config = hf_config(stacked.arch, 1, 2, None)
    copy = StackedLlama(stacked.arch, 2).load_hf([stacked.to_hf(1, config), stacked.to_hf(0, config)])
    windows = torch.randint(0, 200, (1, 3, 17)).expand(2, -1, -1)
    a, b = stacked(windows), copy(windows)
    assert a[0].item() == pytest.approx(b[1].item(), rel=1e-6) and a[1].item() == pytest.approx(b[0].item(), rel=1e-6)
    fresh = StackedLlama(stacked.arch, 1)(windows[:1])
    assert fresh.item() == pytest.approx(math.log(stacked.arch.vocab_size), abs=0.1)


def test_per_model_clip_equals_torch_clip_per_model():
    stacked = _perturbed(2)
    stacked(torch.randint(0, 200, (2, 2, 17))).sum().backward()
    params = list(stacked.parameters())
    expected = [torch.sqrt(sum(p.grad[i].pow(2).sum() for p in params)) for i in range(2)]
    reference = [p.grad[1].clone() * min(1.0, 0.01 / (expected[1].item() + 1e-6)) for p in params]
    norms = per_model_clip_(params, 2, 0.01)
    torch.testing.assert_close(norms, torch.stack(expected))
    for p, ref in zip(params, reference, strict=False):
        torch.testing.assert_close(p.grad[1], ref)


def test_hf_config_fields_are_explicit():
    config = hf_config(resolve_architecture(ARCH), 5, 6, 7)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (5, 6, 7)
    assert config.tie_word_embeddings is False and config.attention_bias is False and config.mlp_bias is False
    assert config.max_position_embeddings == 16 and config.vocab_size == 256 and config.num_key_value_heads == 4


def test_compiled_model_matches_eager():
    """`use_compiled()` (the GPU path's torch.compile of the body and the loss chunk) gives
    the eager losses and gradients; Inductor compiles for the CPU here."""
    eager = _perturbed(2)
    compiled = _perturbed(2)
    compiled.use_compiled()
    windows = torch.randint(0, 200, (2, 3, 17))
    for model in (eager, compiled):
        model(windows).sum().backward()
    torch.testing.assert_close(compiled(windows), eager(windows), rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters(), strict=False):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
