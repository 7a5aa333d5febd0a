"""Token data for training: memory-mapped token streams, mixture batches, validation windows.

A batch is a pure function of (seed, step, mixture weights): which domain each sequence
comes from and where its window starts are drawn with numpy from generators keyed by
(seed, step[, domain]), then all windows are gathered with one vectorised index per file.
So a resumed run, a packed run and a separate run read exactly the same tokens, and no
per-sample Python runs on the hot path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from regmix.config import check_weights
from regmix.files import read_yaml
from regmix.layout import TokenDir
from regmix.settings import ConfigError
from regmix.tokenization import check_min_tokens


class TokenStream:
    """A domain split's token files (listed in its JSON sidecar) as one 1-D stream."""

    def __init__(self, sidecar_path: str | Path):
        self.sidecar_path = Path(sidecar_path)
        if not self.sidecar_path.is_file():
            raise FileNotFoundError(f"token sidecar not found: {self.sidecar_path}")
        meta = json.loads(self.sidecar_path.read_text())
        for key in ("domain", "tokens", "dtype", "files"):
            if key not in meta:
                raise ValueError(f"token sidecar {self.sidecar_path}: missing key {key!r}")
        self.meta = meta
        self.domain = meta["domain"]
        self.eos_id = meta.get("eos_id")
        self.vocab_size = meta.get("vocab_size")
        dtype = np.dtype(meta["dtype"])
        self.files = []
        lengths = []
        for name in meta["files"]:
            path = self.sidecar_path.parent / name
            if not path.is_file():
                raise FileNotFoundError(f"token file {path} (listed in {self.sidecar_path}) not found")
            size = path.stat().st_size
            if size % dtype.itemsize:
                raise ValueError(f"token file {path}: {size} bytes is not a whole number of {dtype} tokens")
            n = size // dtype.itemsize
            # np.memmap cannot map an empty file
            self.files.append(np.memmap(path, dtype=dtype, mode="r") if n else np.zeros(0, dtype=dtype))
            lengths.append(n)
        self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        if int(self.offsets[-1]) != int(meta["tokens"]):
            raise ValueError(
                f"token sidecar {self.sidecar_path}: says {meta['tokens']} tokens, files hold {int(self.offsets[-1])}"
            )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Token windows [len(starts), length] (int64) beginning at the given positions."""
        starts = np.asarray(starts, dtype=np.int64)
        if starts.size and (starts.min() < 0 or starts.max() + length > len(self)):
            raise IndexError(f"{self.sidecar_path}: window out of range (stream has {len(self)} tokens)")
        positions = starts[:, None] + np.arange(length, dtype=np.int64)[None, :]
        if len(self.files) == 1:
            return self.files[0][positions].astype(np.int64)
        out = np.empty(positions.shape, dtype=np.int64)
        which = np.searchsorted(self.offsets, positions, side="right") - 1
        for index, tokens in enumerate(self.files):  # a loop over files, not samples
            mask = which == index
            if mask.any():
                out[mask] = tokens[positions[mask] - self.offsets[index]]
        return out


def sidecar(data_dir: str | Path, domain: str, split: str) -> Path:
    return Path(TokenDir(str(data_dir)).sidecar(domain, split))


def load_mixture(path: str | Path, domains: list[str]) -> tuple[str, dict[str, float]]:
    """(id, weights over every domain) of a mixture yaml ({mix_id|name, weights})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mixture file not found: {path}")
    doc = read_yaml(path)
    if not isinstance(doc, dict) or "weights" not in doc:
        raise ConfigError(f"mixture file {path}: needs a 'weights' mapping")
    name = doc.get("mix_id", doc.get("name"))
    if not name:
        raise ConfigError(f"mixture file {path}: needs 'mix_id' or 'name'")
    return str(name), check_weights(doc["weights"], domains, f"{path}:weights")


def domain_assignment(weights: np.ndarray, batch: int, seed: int, step: int) -> np.ndarray:
    """Domain index of each of `batch` sequences of one step.

    Systematic sampling: sequence j takes the domain whose cumulative-weight interval holds
    (j + u) / batch with u ~ U(0,1) drawn from (seed, step). Every domain gets floor or
    ceil of weight x batch sequences per step, the right share on average over steps, and
    a weight-0 domain never."""
    u = np.random.default_rng([seed, step]).random()
    points = (np.arange(batch) + u) / batch
    edges = np.cumsum(weights)
    edges[-1] = np.inf  # float round-off must not push a point past the last domain
    return np.searchsorted(edges, points, side="right")


class MixtureBatches:
    """Training batches for K mixtures over shared domain streams.

    `batch(step)` returns windows [K, global_batch, seq_len + 1] (int64); model k's batch
    depends only on (seed, step, its own weights)."""

    def __init__(
        self,
        data_dir: str | Path,
        domains: list[str],
        weights: Sequence[dict[str, float]],
        seq_len: int,
        global_batch: int,
        seed: int,
    ):
        self.domains, self.seq_len, self.global_batch, self.seed = list(domains), seq_len, global_batch, seed
        self.weights = np.array([[w.get(d, 0.0) for d in self.domains] for w in weights], dtype=np.float64)
        self.weights /= self.weights.sum(1, keepdims=True)
        used = self.weights.max(0) > 0
        self.streams: dict[int, TokenStream] = {}
        for index, domain in enumerate(self.domains):
            if not used[index]:
                continue  # weight 0 in every mixture: never sampled
            path = sidecar(data_dir, domain, "train")
            if not path.is_file():
                raise FileNotFoundError(f"domain {domain!r}: no train token sidecar {path}")
            check_min_tokens(path, seq_len + 1, domain)  # one window
            self.streams[index] = TokenStream(path)

    def batch(self, step: int) -> np.ndarray:
        k, b, length = len(self.weights), self.global_batch, self.seq_len + 1
        assignment = np.stack([domain_assignment(w, b, self.seed, step) for w in self.weights])  # [K, B]
        out = np.empty((k, b, length), dtype=np.int64)
        for index, stream in self.streams.items():
            where = assignment == index
            counts = where.sum(1)
            need = int(counts.max())
            if not need:
                continue
            # the same draws for every mixture: the i-th window of a domain is the same in
            # all K runs, so runs differ only by their weights (common random numbers)
            rng = np.random.default_rng([self.seed, step, index])
            starts = rng.integers(0, len(stream) - length + 1, size=need)
            windows = stream.windows(starts, length)
            rank = np.cumsum(where, axis=1) - 1  # i-th sequence of this domain in model k
            out[where] = windows[rank[where]]
        return out


def validation_windows(
    data_dir: str | Path, domains: list[str], n_windows: int, seq_len: int, validation_sets: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Fixed validation windows [n_windows, seq_len + 1] of every domain's valid split and
    of every validation-only set (whose tokens lie where a domain's valid split would).

    Evenly spaced, non-overlapping, fixed by the data alone: every run of every mixture is
    scored on exactly the same tokens."""
    length = seq_len + 1
    out = {}
    for domain in [*domains, *validation_sets]:
        what = "validation set" if domain in validation_sets else "domain"
        path = sidecar(data_dir, domain, "valid")
        if not path.is_file():
            raise FileNotFoundError(f"{what} {domain!r}: no valid token sidecar {path}")
        check_min_tokens(path, n_windows * length, domain, what)  # val_windows x (seq_len + 1), disjoint
        stream = TokenStream(path)
        starts = (np.arange(n_windows, dtype=np.int64) * (len(stream) - length)) // max(n_windows - 1, 1)
        out[domain] = stream.windows(starts, length)
    return out
