"""Tokenize one domain split into flat token files, and derive the prior from them.

Documents stream from `regmix.sources.iter_documents` in batches of about
`data.batch_bytes` of text; `data.workers` processes tokenize batches (the Rust
tokenizer, single-threaded per process) while this process reads the next ones. Results
are written in submission order, so the output does not depend on the worker count, and
at most 2 x workers batches are in flight, so memory does not depend on the domain's
size. The tokenizer itself is never given more than `data.max_chunk_chars` characters in one
call (see `document_pieces`), so its working memory (about 125 bytes per character for a
byte-level BPE) is bounded by that setting, not by the longest document. What still grows
with a document is its text (a Python str, 1, 2 or 4 bytes per character, held twice
while its JSON line is parsed) and its ids (2 or 4 bytes per token).
`benchmarks/long_document.py` measures the peak memory of one long document, whole vs in
pieces (README "Measured figures").
Each document is followed by the EOS token. Token files are uint16 when the
vocabulary fits (<= 65535 ids), else uint32, cut into shards of `data.shard_max_tokens`
(`train.bin`, `train.00001.bin`, ...) that the sidecar lists in order.

With `data.token_limit[domain]` the train split keeps the documents with the smallest
seeded hash whose tokens fit the limit (a seeded sample without replacement, decided in
one pass with memory bounded by the limit), written in their original order.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import heapq
import itertools
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import BinaryIO

import numpy as np

from regmix import files, sources
from regmix.layout import TokenDir
from regmix.pieces import document_pieces
from regmix.settings import parse_settings
from regmix.settings.data import DataSettings

MAX_UINT16_VOCAB = 65535


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= MAX_UINT16_VOCAB else np.uint32)


# --------------------------------------------------------------------------- encoding

_ENCODER: Encoder | None = None  # per-process tokenizer of the worker pool


class Encoder:
    """Texts -> one flat array of ids with EOS after every document, plus lengths.

    Every tokenizer call gets at most `max_chunk_chars` characters: short documents are
    grouped up to that, longer ones are encoded piece by piece (`document_pieces`), their
    ids kept as compact arrays. Ids do not depend on the grouping, so the output equals
    encoding each document whole (exactly, for cuts made before a space).
    """

    def __init__(self, tokenizer_json: str, eos_id: int, dtype: str, max_chunk_chars: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(tokenizer_json)
        self.eos_id, self.dtype, self.max_chunk_chars = eos_id, np.dtype(dtype), max_chunk_chars

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts: list[np.ndarray] = []
        lengths = np.empty(len(texts), dtype=np.int64)
        group: list[int] = []  # indices of short documents waiting for one tokenizer call
        group_chars = 0

        def flush() -> None:
            flat: list[int] = []
            for i, ids in zip(group, self._encode([texts[i] for i in group]), strict=True):
                flat.extend(ids)
                flat.append(self.eos_id)
                lengths[i] = len(ids) + 1
            parts.append(np.array(flat, dtype=self.dtype))
            group.clear()

        for i, text in enumerate(texts):
            if len(text) > self.max_chunk_chars:
                if group:
                    flush()
                    group_chars = 0
                count = 0
                for piece in document_pieces(text, self.max_chunk_chars):
                    ids = np.array(self._encode([piece])[0], dtype=self.dtype)
                    parts.append(ids)
                    count += ids.size
                parts.append(np.array([self.eos_id], dtype=self.dtype))
                lengths[i] = count + 1
                continue
            if group and group_chars + len(text) > self.max_chunk_chars:
                flush()
                group_chars = 0
            group.append(i)
            group_chars += len(text)
        if group:
            flush()
        return (np.concatenate(parts) if parts else np.empty(0, dtype=self.dtype)), lengths


def _init_worker(tokenizer_json: str, eos_id: int, dtype: str, max_chunk_chars: int) -> None:
    global _ENCODER
    # one Rust thread per process: the pool is the parallelism
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _ENCODER = Encoder(tokenizer_json, eos_id, dtype, max_chunk_chars)


def _encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    if _ENCODER is None:
        raise RuntimeError("the worker's tokenizer was not set up (_init_worker)")
    return _ENCODER(texts)


def _batches(texts: Iterable[str], batch_bytes: int, source_hash) -> Iterator[tuple[list[str], list[int]]]:
    """Group documents into batches of about `batch_bytes`; hash the source on the way."""
    batch, sizes, size = [], [], 0
    for text in texts:
        nbytes = sources.utf8_length(text)
        source_hash.update(nbytes.to_bytes(8, "little"))
        for piece in sources.utf8_pieces(text):
            source_hash.update(piece)
        batch.append(text)
        sizes.append(nbytes)
        size += nbytes
        if size >= batch_bytes:
            yield batch, sizes
            batch, sizes, size = [], [], 0
    if batch:
        yield batch, sizes


def encode_stream(
    texts: Iterable[str],
    tokenizer_json: str,
    eos_id: int,
    dtype: np.dtype,
    workers: int,
    batch_bytes: int,
    max_chunk_chars: int,
    source_hash,
) -> Iterator[tuple[list[str], list[int], np.ndarray, np.ndarray]]:
    """(texts, byte sizes, flat tokens, per-document lengths) per batch, in input order."""
    batches = _batches(texts, batch_bytes, source_hash)
    first = next(batches, None)
    second = next(batches, None) if first is not None else None
    if workers <= 1 or first is None or second is None:  # one batch: starting processes would cost more than it saves
        encoder = Encoder(tokenizer_json, eos_id, dtype.name, max_chunk_chars)
        for batch, sizes in itertools.chain(filter(None, (first, second)), batches):
            yield (batch, sizes, *encoder(batch))
        return
    # spawn, not fork: the parent may already run threads (torch, Rust) that fork would break
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(tokenizer_json, eos_id, dtype.name, max_chunk_chars),
    ) as pool:
        pending: collections.deque = collections.deque()
        for batch, sizes in itertools.chain((first, second), batches):
            pending.append((batch, sizes, pool.submit(_encode_in_worker, batch)))
            if len(pending) >= 2 * workers:
                batch_, sizes_, future = pending.popleft()
                yield (batch_, sizes_, *future.result())
        while pending:
            batch_, sizes_, future = pending.popleft()
            yield (batch_, sizes_, *future.result())


# --------------------------------------------------------------------------- writing


class ShardWriter:
    """Token shards written to temporary files and renamed into place only on commit."""

    def __init__(self, out_path: str | Path, dtype: np.dtype, shard_max_tokens: int):
        self.out_path = Path(out_path)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype, self.shard_max_tokens = dtype, shard_max_tokens
        self.temps: list[Path] = []
        self.counts: list[int] = []
        self._handle: BinaryIO | None = None

    def shard_name(self, index: int) -> str:
        stem = self.out_path.name[: -len(".bin")] if self.out_path.name.endswith(".bin") else self.out_path.name
        return self.out_path.name if index == 0 else f"{stem}.{index:05d}.bin"

    def _open_next(self) -> BinaryIO:
        if self._handle:
            self._handle.close()
        tmp = files.temp_file(self.out_path)
        self._handle = handle = tmp.open("wb")
        self.temps.append(tmp)
        self.counts.append(0)
        return handle

    def write(self, tokens: np.ndarray) -> None:
        tokens = np.ascontiguousarray(tokens, dtype=self.dtype)
        handle = self._handle
        while tokens.size:
            if handle is None or not self.temps or self.counts[-1] >= self.shard_max_tokens:
                handle = self._open_next()
            room = self.shard_max_tokens - self.counts[-1]
            part, tokens = tokens[:room], tokens[room:]
            part.tofile(handle)
            self.counts[-1] += part.size

    @property
    def tokens(self) -> int:
        return sum(self.counts)

    def commit(self) -> list[str]:
        if not self.temps:
            self._open_next()  # an empty split still gets its (empty) first file
        if self._handle is not None:
            self._handle.close()
        names = [self.shard_name(i) for i in range(len(self.temps))]
        for tmp, name in zip(self.temps, names, strict=False):
            files.commit_file(tmp, self.out_path.parent / name)
        # shards a previous, longer run left behind would be ignored; remove them anyway
        stem = self.shard_name(1).rsplit(".", 2)[0]
        for stale in self.out_path.parent.glob(f"{stem}.[0-9][0-9][0-9][0-9][0-9].bin"):
            if stale.name not in names:
                stale.unlink()
        self.temps = []
        return names

    def abort(self) -> None:
        if self._handle:
            self._handle.close()
        for tmp in self.temps:
            tmp.unlink(missing_ok=True)
        self.temps = []


class LimitSampler:
    """Keep the documents with the smallest seeded keys whose tokens fit `limit`.

    A document whose key is at or above the smallest key ever evicted can never be kept,
    so one pass decides the same set as sorting all keys would; memory stays within the
    limit plus one document.
    """

    def __init__(self, limit: int):
        self.limit, self.total, self.threshold = limit, 0, float("inf")
        self._heap: list = []  # (-key, order, tokens, bytes)

    def add(self, key: float, order: int, tokens: np.ndarray, nbytes: int) -> None:
        if key >= self.threshold:
            return
        heapq.heappush(self._heap, (-key, order, tokens, nbytes))
        self.total += tokens.size
        while self.total > self.limit:
            neg_key, _, evicted, _ = heapq.heappop(self._heap)
            self.total -= evicted.size
            self.threshold = min(self.threshold, -neg_key)

    def kept(self) -> list[tuple[np.ndarray, int]]:
        """(tokens, bytes) of the kept documents, in their original order."""
        return [(tokens, nbytes) for _, _, tokens, nbytes in sorted(self._heap, key=lambda item: item[1])]


# --------------------------------------------------------------------------- tokenize


class ProgressLine:
    """A periodic line in the rule's log: documents, MB, tokens and their rates so far."""

    def __init__(self, label: str, every_seconds: float = 10.0):
        self.label, self.every = label, every_seconds
        self.start = self.last = time.monotonic()
        self.documents = self.bytes = self.tokens = 0

    def update(self, documents: int, nbytes: int, tokens: int) -> None:
        self.documents += documents
        self.bytes += nbytes
        self.tokens += tokens
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            elapsed = now - self.start
            print(
                f"[{self.label}] {self.documents:,} documents, {self.bytes / 1e6:,.1f} MB, {self.tokens:,} tokens "
                f"({self.bytes / 1e6 / elapsed:,.2f} MB/s, {self.tokens / elapsed:,.0f} tokens/s)",
                file=sys.stderr,
                flush=True,
            )


def tokenize_split(
    settings: DataSettings,
    corpus_dir: str | Path | None,
    tokenizer_dir: str | Path,
    domain: str,
    split: str,
    out_path: str | Path,
    min_tokens: int = 0,
    validation_set: bool = False,
) -> dict:
    """Tokenize (domain, split) to `out_path` (+ shards) and its sidecar; return the sidecar.

    With `validation_set`, `domain` names a validation-only set (settings.validation_sets)
    and `split` must be "valid": the set has only that split."""
    from regmix.tokenizer import fingerprint_of

    data = settings.data
    tokenizer_dir = Path(tokenizer_dir)
    fingerprint = fingerprint_of(tokenizer_dir)
    vocab_size, eos_id = fingerprint["vocab_size"], fingerprint["eos_id"]
    dtype = token_dtype(vocab_size)
    out_path = Path(out_path)
    if validation_set and split != "valid":
        raise ValueError(f"validation set {domain!r}: has only the valid split, not {split!r}")
    label = f"validation set {domain!r}" if validation_set else f"domain {domain!r} split {split!r}"
    limit = (data.token_limit or {}).get(domain) if split == "train" else None
    sampler = LimitSampler(limit) if limit else None
    writer = ShardWriter(out_path, dtype, data.shard_max_tokens)
    source_hash = hashlib.sha256()
    documents = total_bytes = 0
    try:
        texts = (
            sources.iter_validation_documents(settings, corpus_dir, domain)
            if validation_set
            else sources.iter_documents(settings, corpus_dir, domain, split)
        )
        stream = encode_stream(
            texts,
            str(tokenizer_dir / "tokenizer.json"),
            eos_id,
            dtype,
            data.workers,
            data.batch_bytes,
            data.max_chunk_chars,
            source_hash,
        )
        order = 0
        progress = ProgressLine(f"{domain}/{split}")
        for batch, sizes, tokens, lengths in stream:
            progress.update(len(batch), sum(sizes), len(tokens))
            if sampler is None:
                writer.write(tokens)
                documents += len(batch)
                total_bytes += sum(sizes)
                continue
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            for i, text in enumerate(batch):
                key = sources.unit_hash(text, settings.seed, "token_limit")
                sampler.add(key, order, tokens[offsets[i] : offsets[i + 1]].copy(), sizes[i])
                order += 1
        if sampler is not None:
            kept = sampler.kept()
            if not kept:
                raise ValueError(
                    f"domain {domain!r}: data.token_limit {limit} keeps no document "
                    "(the first document in seeded order alone is longer)"
                )
            for tokens, nbytes in kept:
                writer.write(tokens)
                total_bytes += nbytes
            documents = len(kept)
        if writer.tokens < min_tokens:
            raise ValueError(
                f"{label}: {writer.tokens} tokens, fewer than the {min_tokens} needed "
                "(validation windows x (sequence length + 1))"
            )
        names = writer.commit()
    except BaseException:
        writer.abort()
        raise
    sidecar = {
        "domain": domain,
        "split": split,
        "validation_set": validation_set,
        "tokens": writer.tokens,
        "dtype": dtype.name,
        "files": names,
        "documents": documents,
        "bytes": total_bytes,
        "bytes_per_token": total_bytes / writer.tokens,
        "eos_id": eos_id,
        "vocab_size": vocab_size,
        "tokenizer_fingerprint": fingerprint["sha256"],
        "source_fingerprint": source_hash.hexdigest(),
        "provenance": files.provenance(settings.raw, [tokenizer_dir / "tokenizer.json"]),
    }
    files.write_json(sidecar_path(out_path), sidecar)
    return sidecar


def sidecar_path(bin_path: str | Path) -> Path:
    return Path(bin_path).with_suffix(".json")


def check_min_tokens(sidecar_path: str | Path, needed: int, domain: str, what: str = "domain") -> int:
    """Raise ValueError naming the domain (or validation set: `what`) when a split has
    fewer than `needed` tokens."""
    sidecar = files.read_json(sidecar_path)
    if sidecar["tokens"] < needed:
        raise ValueError(
            f"{what} {domain!r} split {sidecar.get('split', '?')!r}: {sidecar['tokens']} tokens in {sidecar_path}, "
            f"fewer than the {needed} needed"
        )
    return sidecar["tokens"]


# --------------------------------------------------------------------------- prior


def token_counts(settings: DataSettings, data_dir: str | Path) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    fingerprints: set[str] = set()
    for domain in settings.domains:
        counts[domain] = {}
        for split in sources.SPLITS:
            path = Path(TokenDir(str(data_dir)).sidecar(domain, split))
            if not path.is_file():
                raise ValueError(f"domain {domain!r}: no token sidecar {path}")
            sidecar = files.read_json(path)
            if sidecar["domain"] != domain or sidecar["split"] != split:
                raise ValueError(f"{path}: sidecar is for {sidecar['domain']}/{sidecar['split']}, not {domain}/{split}")
            counts[domain][split] = int(sidecar["tokens"])
            fingerprints.add(sidecar["tokenizer_fingerprint"])
        if counts[domain]["train"] == 0:
            raise ValueError(f"domain {domain!r}: no train tokens")
    if len(fingerprints) > 1:
        raise ValueError(f"token files in {data_dir} come from {len(fingerprints)} different tokenizers; re-tokenize")
    return counts


def prior_from_counts(counts: dict[str, dict[str, int]]) -> dict[str, float]:
    total = sum(c["train"] for c in counts.values())
    return {domain: c["train"] / total for domain, c in counts.items()}


# --------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="regmix tokenize", description="Tokenize one domain split into a token file and sidecar."
    )
    parser.add_argument("--settings", required=True, help="JSON of regmix.config.stage_settings(config, 'tokenize')")
    parser.add_argument("--corpus", default=None, help="corpus folder (R/corpus; read by the demo source)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (R/tokenizer)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--domain")
    which.add_argument("--validation-set", help="a validation-only set of the settings (its one split: valid)")
    parser.add_argument("--split", choices=sources.SPLITS, help="the domain's split (a validation set's is valid)")
    parser.add_argument("--out", required=True, help="R/data/<domain>/<split>.bin (sidecar: same name, .json)")
    parser.add_argument("--min-tokens", type=int, default=0, help="fail unless the split has at least this many tokens")
    args = parser.parse_args(argv)
    if not args.out.endswith(".bin"):
        raise ValueError(f"--out {args.out!r}: must end in .bin")
    if args.domain and not args.split:
        parser.error("--split is required with --domain")
    name, split = (args.validation_set, "valid") if args.validation_set else (args.domain, args.split)
    if args.validation_set and args.split not in (None, "valid"):
        parser.error("a validation set has only the valid split")
    sidecar = tokenize_split(
        DataSettings.from_json(parse_settings(args.settings), "validation_set" if args.validation_set else "tokenize"),
        args.corpus,
        args.tokenizer,
        name,
        split,
        args.out,
        args.min_tokens,
        validation_set=bool(args.validation_set),
    )
    print(
        f"{name}/{split}: {sidecar['documents']} documents, {sidecar['tokens']} tokens "
        f"({sidecar['dtype']}, {sidecar['bytes_per_token']:.2f} bytes/token) in {len(sidecar['files'])} file(s)"
    )
    return 0


def prior_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix prior", description="Token shares of the train splits (the prior).")
    parser.add_argument("--settings", required=True, help="JSON of regmix.config.stage_settings(config, 'tokenize')")
    parser.add_argument("--data", required=True, help="token folder (R/data)")
    parser.add_argument("--out-prior", required=True)
    parser.add_argument("--out-counts", required=True)
    args = parser.parse_args(argv)
    settings = DataSettings.from_json(parse_settings(args.settings), "tokenize")
    counts = token_counts(settings, args.data)
    prior = prior_from_counts(counts)
    files.write_json(args.out_counts, counts)
    files.write_yaml(args.out_prior, prior)
    for domain, share in prior.items():
        print(f"{domain:20s} {share:.4f}  ({counts[domain]['train']:,} train tokens)")
    return 0
