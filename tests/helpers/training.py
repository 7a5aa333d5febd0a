"""A tiny training workspace (tokenizer, token files, mixtures) and a settings builder,
shared by the trainer, checkpoint and data tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from regmix.train import train

DOMAINS = ["alpha", "beta", "gamma"]


SEQ_LEN = 32


def make_tokenizer(directory: Path) -> int:
    """A tiny byte-level BPE saved as an HF tokenizer dir; returns its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["def f(x): return x + 1", "The quick brown fox.", "1 + 2 = 3"] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(directory)
    return len(fast)


def write_tokens(
    data_dir: Path, domain: str, split: str, tokens: np.ndarray, n_files: int = 1, vocab: int = 300
) -> None:
    """Token files + sidecar in the tokenize stage's format (several files when asked)."""
    out = data_dir / domain
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for i, part in enumerate(np.array_split(tokens.astype(np.uint16), n_files)):
        name = f"{split}.bin" if n_files == 1 else f"{split}.{i:03d}.bin"
        part.tofile(out / name)
        names.append(name)
    sidecar = {
        "domain": domain,
        "split": split,
        "tokens": int(len(tokens)),
        "dtype": "uint16",
        "files": names,
        "eos_id": 0,
        "vocab_size": vocab,
    }
    (out / f"{split}.json").write_text(json.dumps(sidecar))


def domain_tokens(index: int, n: int, seed: int) -> np.ndarray:
    """Learnable, domain-specific sequences: each domain cycles its own token pattern with noise."""
    rng = np.random.default_rng([index, seed])
    base = 1 + 90 * index
    pattern = base + (np.arange(n) * (index + 2)) % 17
    noise = rng.random(n) < 0.2
    return np.where(noise, rng.integers(1, 270, n), pattern)


def make_workspace(root: Path, valid_tokens: int = 2000, train_files: int = 1) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    make_tokenizer(root / "tokenizer")
    for i, domain in enumerate(DOMAINS):
        write_tokens(root / "data", domain, "train", domain_tokens(i, 20000, 0), n_files=train_files)
        write_tokens(root / "data", domain, "valid", domain_tokens(i, valid_tokens, 1))
    mixtures = {
        "mix_0000": {"alpha": 0.7, "beta": 0.3, "gamma": 0.0},
        "mix_0001": {"alpha": 0.1, "beta": 0.1, "gamma": 0.8},
        "mix_0002": {"alpha": 0.2, "beta": 0.5, "gamma": 0.3},
    }
    paths = {}
    for mix_id, weights in mixtures.items():
        paths[mix_id] = root / "mixtures" / f"{mix_id}.yaml"
        paths[mix_id].parent.mkdir(parents=True, exist_ok=True)
        paths[mix_id].write_text(yaml.safe_dump({"mix_id": mix_id, "weights": weights}))
    return {"root": root, "data": root / "data", "tokenizer": root / "tokenizer", "mixtures": paths}


def settings(stage: str = "proxy", **overrides) -> dict:
    hp = {
        "model": "test_tiny",
        "steps": 12,
        "warmup_steps": 2,
        "lr": 0.01,
        "min_lr": 0.001,
        "schedule": "constant",
        "global_batch": 8,
        "micro_batch": 4,
        "weight_decay": 0.1,
        "beta1": 0.9,
        "beta2": 0.95,
        "grad_clip": 1.0,
        "eval_every": 6,
        "val_windows": 4,
        "log_every": 3,
        "checkpoint_every": 4,
        "device": "cpu",
        "dtype": "float32",
        "compile": False,
        "threads": 1,
        "save_model": True,
    }
    hp.update(overrides)
    model = {
        "name": "test_tiny",
        "n_layers": 2,
        "n_heads": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "seq_len": SEQ_LEN,
        "vocab_size": "tokenizer",
        "pad_vocab_to": 64,
    }
    return {"seed": 3, "domains": DOMAINS, stage: hp, "model": model}


def run(ws: dict, out: Path, mix_ids: list[str], stage: str = "proxy", **overrides) -> list[dict]:
    out_dirs = [out / m for m in mix_ids]
    code = train(
        settings(stage, **overrides), stage, ws["data"], ws["tokenizer"], [ws["mixtures"][m] for m in mix_ids], out_dirs
    )
    assert code == 0
    return [json.loads((d / "losses.json").read_text()) for d in out_dirs]


def train_losses(out_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out_dir / "train_log.jsonl").read_text().splitlines()]
