"""LLaMA-style models: the HF config, parameter and FLOP counts, and a stacked trainer model.

`StackedLlama` holds K models of one architecture with every weight stacked on a leading
K axis, so each layer runs one batched matrix product for all K (packing small proxies).
Its forward is numerically the same as transformers' `LlamaForCausalLM` (RMSNorm, RoPE,
causal SDPA, SwiGLU, untied head); `to_hf` unstacks it into K HF models, `from_hf` stacks
HF models. The loss is a chunked cross-entropy that never holds full-vocabulary logits for
the whole batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from regmix.settings.train import ModelSpec

# TinyLlama's values (the paper's models are TinyLlama configs)
RMS_NORM_EPS = 1e-5
ROPE_THETA = 10000.0
INIT_STD = 0.02
# logits the loss holds at once, in elements (tokens x vocab). Each chunk also makes one
# pass over the output head's gradient, so chunks must not be small: 128 MB of float32
# logits on a CPU (~650 tokens at a 50k vocabulary), ~1 GB on a GPU
LOSS_CHUNK_ELEMENTS = {"cpu": 1 << 25, "cuda": 1 << 28}


@dataclass(frozen=True)
class Architecture:
    """A concrete LLaMA-style architecture: a ModelSpec with its vocabulary made a padded integer."""

    name: str
    n_layers: int
    n_heads: int
    hidden_size: int
    intermediate_size: int
    seq_len: int
    vocab_size: int
    pad_vocab_to: int = 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def padded_vocab(vocab: int, multiple: int) -> int:
    return int(math.ceil(vocab / multiple) * multiple)


def resolve_architecture(model: ModelSpec | dict, tokenizer_vocab: int | None = None) -> Architecture:
    """The architecture of a model spec (a ModelSpec or its dict), `vocab_size` made a padded integer.

    `vocab_size: tokenizer` takes the tokenizer's size; either way it is padded up to a
    multiple of `pad_vocab_to` (matmul-friendly shapes)."""
    spec = model if isinstance(model, ModelSpec) else ModelSpec.from_dict(model)
    vocab = spec.vocab_size
    if vocab == "tokenizer":
        if tokenizer_vocab is None:
            raise ValueError(f"model {spec.name!r}: vocab_size 'tokenizer' needs the tokenizer's vocabulary size")
        vocab = tokenizer_vocab
    if not isinstance(vocab, int) or vocab < 2:
        raise ValueError(f"model {spec.name!r}: vocab_size = {vocab!r} is not a positive integer or 'tokenizer'")
    if tokenizer_vocab is not None and vocab < tokenizer_vocab:
        raise ValueError(f"model {spec.name!r}: vocab_size {vocab} is smaller than the tokenizer's {tokenizer_vocab}")
    if spec.hidden_size % spec.n_heads or (spec.hidden_size // spec.n_heads) % 2:
        raise ValueError(
            f"model {spec.name!r}: hidden_size {spec.hidden_size} must split into n_heads {spec.n_heads} "
            "heads of even size"
        )
    pad = int(spec.pad_vocab_to or 1)
    return Architecture(**{**dataclasses.asdict(spec), "vocab_size": padded_vocab(vocab, pad), "pad_vocab_to": pad})


def parameter_counts(arch: Architecture) -> dict:
    """Embedding (input table + untied output head) and non-embedding parameters.

    The paper's model names ("1M", "60M", "1B") count non-embedding parameters."""
    h, i, n, v = arch.hidden_size, arch.intermediate_size, arch.n_layers, arch.vocab_size
    per_layer = 4 * h * h + 3 * h * i + 2 * h  # q,k,v,o + gate,up,down + two RMSNorm weights
    non_embedding = n * per_layer + h  # + final norm
    embedding = 2 * v * h
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}


def flops_per_token(arch: Architecture) -> dict:
    """Model FLOPs per trained token (PaLM appendix B convention, no recomputation).

    Matmul weights (every linear layer plus the output head; the input embedding is a
    lookup) cost 2 FLOPs per weight forward and 4 backward; attention scores and the
    weighted sum cost 2 x 2 x seq_len x hidden per layer forward (not halved for the mask)."""
    h, i, n, v, t = arch.hidden_size, arch.intermediate_size, arch.n_layers, arch.vocab_size, arch.seq_len
    matmul_weights = n * (4 * h * h + 3 * h * i) + v * h
    forward = 2 * matmul_weights + 4 * n * t * h
    return {"forward": forward, "train": 3 * forward}


def hf_config(arch: Architecture, bos_token_id: int | None, eos_token_id: int | None, pad_token_id: int | None):
    """transformers LlamaConfig of an architecture, every field set explicitly."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.n_layers,
        num_attention_heads=arch.n_heads,
        num_key_value_heads=arch.n_heads,
        head_dim=arch.head_dim,
        hidden_act="silu",
        max_position_embeddings=arch.seq_len,
        initializer_range=INIT_STD,
        rms_norm_eps=RMS_NORM_EPS,
        use_cache=True,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pretraining_tp=1,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        attention_bias=False,
        attention_dropout=0.0,
        mlp_bias=False,
    )


def _rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    # as LlamaRMSNorm: normalise in float32, cast back, then scale; weight is [K, H]
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + RMS_NORM_EPS)
    return weight[:, None, :] * x32.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # the CPU kernel's bf16 backward is several times slower than its float32 one
        # (README "Measured figures"), and attention is a small share of the FLOPs: run it
        # in float32
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def chunk_loss_and_grad(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, inv_n: float, need_grad: bool
):
    """Summed cross-entropy of logits = hidden @ weight^T for one chunk of tokens, and
    d(loss x inv_n)/d logits (in the hidden dtype) when `need_grad`.

    Everything after the matmul is in place on the float32 logits, so eager mode makes
    few passes over them; `torch.compile` fuses it further (the GPU path)."""
    logits = (hidden @ weight.T).float()
    target_logit = logits.gather(-1, targets)
    peak = logits.amax(-1, keepdim=True)
    exp = logits.sub_(peak).exp_()  # the logits are not needed again
    total = exp.sum(-1, keepdim=True)
    loss = (total.log() + peak - target_logit).sum()
    if not need_grad:
        return loss, None
    # (softmax - onehot) x inv_n
    probs = exp.mul_(total.reciprocal_().mul_(inv_n))
    probs.scatter_add_(-1, targets, torch.full(targets.shape, -inv_n, device=probs.device))
    return loss, probs.to(hidden.dtype)


class _StackedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy per model of logits = h @ W^T, computed in token chunks per model.

    The gradient is computed chunk by chunk during the forward (the loss is the last op,
    so it only needs scaling by the incoming gradient), so neither pass ever holds the
    logits of the whole batch."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, compute_dtype, need_grad, chunk_fn):
        k, n, _ = hidden.shape
        h_c = hidden.to(compute_dtype)
        w_c = weight.to(compute_dtype)
        loss = torch.zeros(k, dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad else None
        # one model at a time: a chunk's logits stay the same size whatever K is
        for model in range(k):
            for start in range(0, n, chunk):
                h_chunk = h_c[model, start : start + chunk]
                tgt = targets[model, start : start + chunk].unsqueeze(-1)
                chunk_loss, d_logits = chunk_fn(h_chunk, w_c[model], tgt, 1.0 / n, need_grad)
                loss[model] += chunk_loss
                if grad_hidden is not None and grad_weight is not None:  # need_grad
                    grad_hidden[model, start : start + chunk] = (d_logits @ w_c[model]).to(hidden.dtype)
                    grad_weight[model] += (d_logits.T @ h_chunk).float()
        if need_grad:
            ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad_loss.view(-1, 1, 1)
        return (
            grad_hidden * scale.to(grad_hidden.dtype),
            (grad_weight * scale).to(ctx.weight_dtype),
            None,
            None,
            None,
            None,
            None,
        )


class _Block(nn.Module):
    """One transformer layer's weights, each stacked over the K models ([K, out, in] like nn.Linear)."""

    def __init__(
        self, normal: Callable[..., nn.Parameter], ones: Callable[[int], nn.Parameter], hidden: int, intermediate: int
    ):
        super().__init__()
        self.attn_norm = ones(hidden)
        self.qkv = normal(3 * hidden, hidden)  # q, k, v projections
        self.o = normal(hidden, hidden)
        self.mlp_norm = ones(hidden)
        self.gate_up = normal(2 * intermediate, hidden)  # gate then up
        self.down = normal(hidden, intermediate)


class StackedLlama(nn.Module):
    """K LLaMA models of one architecture with weights stacked on a leading K axis."""

    inv_freq: torch.Tensor  # RoPE's inverse frequencies, a (non-persistent) buffer

    def __init__(self, arch: Architecture, k: int, seed: int = 0):
        super().__init__()
        self.arch, self.k = arch, k
        # `use_compiled()` swaps in compiled versions of the loss's chunk work and the body
        self.chunk_loss: Callable = chunk_loss_and_grad
        self._compiled_body: Callable[[torch.Tensor], torch.Tensor] | None = None
        h, i, v, n = arch.hidden_size, arch.intermediate_size, arch.vocab_size, arch.n_layers
        self.n_heads, self.head_dim = arch.n_heads, h // arch.n_heads
        # every model of a pack starts from the same seeded weights, so runs differ only in
        # their mixture; drawn on the CPU so the start does not depend on the device
        gen = torch.Generator().manual_seed(seed)

        def normal(*shape: int) -> nn.Parameter:
            one = torch.empty(shape).normal_(0.0, INIT_STD, generator=gen)
            return nn.Parameter(one.unsqueeze(0).repeat(k, *([1] * len(shape))))

        def ones(size: int) -> nn.Parameter:
            return nn.Parameter(torch.ones(k, size))

        self.embed = normal(v, h)
        self.layers = nn.ModuleList(_Block(normal, ones, h, i) for _ in range(n))
        self.norm = ones(h)
        self.lm_head = normal(v, h)
        inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, self.head_dim, 2, dtype=torch.float) / self.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def use_compiled(self) -> None:
        """torch.compile the transformer body and the loss's per-chunk work (not the
        chunk loop, so the compiled graphs stay small and shape-stable)."""
        self._compiled_body = torch.compile(self._body)
        self.chunk_loss = torch.compile(chunk_loss_and_grad)

    def _blocks(self) -> Iterable[_Block]:
        return cast("Iterable[_Block]", self.layers)  # an nn.ModuleList is typed as holding plain Modules

    def _rope(self, t: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.arange(t, device=device, dtype=torch.float)[:, None] * self.inv_freq.to(device)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states [K, B*T, H] of token ids [K, B, T]."""
        if self._compiled_body is not None:
            return self._compiled_body(ids)
        return self._body(ids)

    def _body(self, ids: torch.Tensor) -> torch.Tensor:
        k, b, t = ids.shape
        v, h = self.arch.vocab_size, self.arch.hidden_size
        offsets = (torch.arange(k, device=ids.device) * v).view(k, 1, 1)
        x = F.embedding(ids + offsets, self.embed.view(k * v, h)).view(k, b * t, h)
        rope: tuple[torch.Tensor, torch.Tensor] | None = None
        for layer in self._blocks():
            y = _rms_norm(x, layer.attn_norm)
            qkv = torch.bmm(y, layer.qkv.transpose(1, 2))
            qkv = qkv.view(k, b, t, 3, self.n_heads, self.head_dim).permute(3, 0, 1, 4, 2, 5)
            q, key, val = (qkv[j].reshape(k * b, self.n_heads, t, self.head_dim) for j in range(3))
            if rope is None:
                rope = self._rope(t, ids.device, q.dtype)
            cos, sin = rope
            q = q * cos + _rotate_half(q) * sin
            key = key * cos + _rotate_half(key) * sin
            att = _causal_attention(q, key, val)
            att = att.view(k, b, self.n_heads, t, self.head_dim).permute(0, 1, 3, 2, 4).reshape(k, b * t, h)
            x = x + torch.bmm(att, layer.o.transpose(1, 2))
            y = _rms_norm(x, layer.mlp_norm)
            gate, up = torch.bmm(y, layer.gate_up.transpose(1, 2)).chunk(2, dim=-1)
            x = x + torch.bmm(F.silu(gate) * up, layer.down.transpose(1, 2))
        return _rms_norm(x, self.norm)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss per model [K] of windows [K, B, T+1]."""
        hidden = self.hidden_states(windows[..., :-1])
        return self.loss(hidden, windows[..., 1:].reshape(self.k, -1))

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        budget = LOSS_CHUNK_ELEMENTS.get(hidden.device.type, LOSS_CHUNK_ELEMENTS["cpu"])
        chunk = max(1, budget // self.arch.vocab_size)
        dtype = (
            torch.get_autocast_dtype(hidden.device.type)
            if torch.is_autocast_enabled(hidden.device.type)
            else hidden.dtype
        )
        # gradients are computed inside the forward, so it must know whether to (not under no_grad)
        need_grad = torch.is_grad_enabled() and (hidden.requires_grad or self.lm_head.requires_grad)
        return _StackedLinearCrossEntropy.apply(hidden, self.lm_head, targets, chunk, dtype, need_grad, self.chunk_loss)

    # ---- conversion to and from transformers -------------------------------------------

    def hf_state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Model `index` as a LlamaForCausalLM state dict."""
        h, i = self.arch.hidden_size, self.arch.intermediate_size
        out = {
            "model.embed_tokens.weight": self.embed[index],
            "model.norm.weight": self.norm[index],
            "lm_head.weight": self.lm_head[index],
        }
        for n, layer in enumerate(self._blocks()):
            p = f"model.layers.{n}."
            q, k, v = layer.qkv[index].split(h, dim=0)
            gate, up = layer.gate_up[index].split(i, dim=0)
            out.update(
                {
                    p + "input_layernorm.weight": layer.attn_norm[index],
                    p + "self_attn.q_proj.weight": q,
                    p + "self_attn.k_proj.weight": k,
                    p + "self_attn.v_proj.weight": v,
                    p + "self_attn.o_proj.weight": layer.o[index],
                    p + "post_attention_layernorm.weight": layer.mlp_norm[index],
                    p + "mlp.gate_proj.weight": gate,
                    p + "mlp.up_proj.weight": up,
                    p + "mlp.down_proj.weight": layer.down[index],
                }
            )
        return {name: t.detach().float().cpu().clone() for name, t in out.items()}

    def to_hf(self, index: int, config):
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM(config)
        missing, unexpected = model.load_state_dict(self.hf_state_dict(index), strict=False)
        if unexpected or [m for m in missing if "rotary" not in m]:
            raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
        return model.eval()

    @torch.no_grad()
    def load_hf(self, models: Sequence) -> StackedLlama:
        """Copy K HF LlamaForCausalLM weights into the stack (K = len(models))."""
        if len(models) != self.k:
            raise ValueError(f"expected {self.k} models, got {len(models)}")
        for index, model in enumerate(models):
            sd = model.state_dict()
            self.embed[index] = sd["model.embed_tokens.weight"]
            self.norm[index] = sd["model.norm.weight"]
            self.lm_head[index] = sd["lm_head.weight"]
            for n, layer in enumerate(self._blocks()):
                p = f"model.layers.{n}."
                layer.attn_norm[index] = sd[p + "input_layernorm.weight"]
                layer.qkv[index] = torch.cat([sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])
                layer.o[index] = sd[p + "self_attn.o_proj.weight"]
                layer.mlp_norm[index] = sd[p + "post_attention_layernorm.weight"]
                layer.gate_up[index] = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
                layer.down[index] = sd[p + "mlp.down_proj.weight"]
        return self


def per_model_clip_(params: Sequence[torch.Tensor], k: int, max_norm: float) -> torch.Tensor:
    """Clip each model's gradient to `max_norm` on its own (as torch's clip_grad_norm_ would
    for that model alone); returns the K pre-clip norms."""
    squares = torch.zeros(k, dtype=torch.float32, device=params[0].device)
    grads = [p.grad for p in params if p.grad is not None]
    for g in grads:
        squares += g.detach().float().pow(2).reshape(k, -1).sum(1)
    norms = squares.sqrt()
    if max_norm > 0:
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(k, *([1] * (g.dim() - 1))).to(g.dtype))
    return norms
