"""Tokenization throughput: our streaming, parallel path vs a plain per-document loop.

Generates a JSON-lines corpus of at least --size-mb MB in a temporary folder (documents
are seeded random slices of text installed on this machine, so word statistics are
real), trains a byte-level BPE on a sample (or uses --tokenizer DIR), then tokenizes the
whole corpus twice with the same tokenizer:

  pipeline  regmix.tokenization.tokenize_split (jsonl source, --workers processes)
  loop      json.loads + tokenizer.encode(text).ids per document, one process

and prints MB/s, tokens/s and tokens/s per core for both, side by side, and checks that
both produced the same tokens.

    python benchmarks/tokenize_throughput.py [--size-mb 200] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from regmix import corpus, files, tokenization, tokenizer
from regmix.config import validate_config
from regmix.settings.data import DataSettings


def text_pool(max_bytes: int) -> str:
    """Real text from installed Python and Markdown files (sorted, seeded choice)."""
    files = [f for f in corpus.scan_files(corpus.install_roots()) if f.relative.endswith((".py", ".md", ".rst"))]
    random.Random(0).shuffle(files)
    parts, size = [], 0
    for f in files:
        try:
            text = f.path.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    return "\n".join(parts)


def generate_corpus(folder: Path, size_mb: int, pool: str) -> tuple[int, int]:
    rng = random.Random(1)
    target, written, documents = size_mb * 1_000_000, 0, 0
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "bench-0.jsonl", "w", encoding="utf-8") as handle:
        while written < target:
            length = int(rng.lognormvariate(7.5, 1.0))  # median ~1.8 kB, long tail like web text
            start = rng.randrange(0, max(1, len(pool) - length))
            text = pool[start : start + length]
            if not text.strip():
                continue
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
            written += len(text.encode("utf-8"))
            documents += 1
    return written, documents


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def plain_loop(files: list[Path], tokenizer_json: Path, eos_id: int, out: Path) -> tuple[int, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    total_bytes = total_tokens = 0
    with open(out, "wb") as handle:
        for path in files:
            with open(path, "rb") as lines:
                for line in lines:
                    text = json.loads(line)["text"]
                    ids = tok.encode(text, add_special_tokens=False).ids
                    ids.append(eos_id)
                    np.array(ids, dtype=np.uint16).tofile(handle)
                    total_bytes += len(text.encode("utf-8"))
                    total_tokens += len(ids)
    return total_bytes, total_tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--vocab-size", type=int, default=16384)
    parser.add_argument("--tokenizer", help="existing tokenizer folder (from regmix train-tokenizer)")
    parser.add_argument("--workdir", help="keep files here instead of a temporary folder")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="regmix-bench-") as tmp:
        work = Path(args.workdir or tmp)
        started = time.perf_counter()
        pool = text_pool(40_000_000)
        size, documents = generate_corpus(work / "train", args.size_mb, pool)
        (work / "valid").mkdir(exist_ok=True)
        files.write_text(work / "valid" / "bench-0.jsonl", json.dumps({"text": pool[:1000]}) + "\n")
        print(
            f"corpus: {size / 1e6:.1f} MB, {documents:,} documents ({time.perf_counter() - started:.1f} s to generate)"
        )

        # settings as stage_settings would give them for a one-domain jsonl source
        data = validate_config({"regression": {"target": "mean"}})["data"]
        data.update(
            source={
                "kind": "jsonl",
                "path": str(work),
                "train_dir": "train",
                "valid_dir": "valid",
                "text_field": "text",
            },
            workers=args.workers,
        )
        settings = DataSettings.from_json({"seed": 0, "domains": ["bench"], "data": data})

        tokenizer_dir = Path(args.tokenizer) if args.tokenizer else work / "tokenizer"
        if not args.tokenizer:
            started = time.perf_counter()
            sample = (pool[i : i + 2000] for i in range(0, min(len(pool), 10_000_000), 2000))
            tokenizer.save(
                tokenizer.wrap(tokenizer.train_bpe(sample, args.vocab_size)),
                tokenizer_dir,
                {"benchmark": True},
                "train",
            )
            print(
                f"tokenizer: byte-level BPE, vocab {args.vocab_size} "
                f"({time.perf_counter() - started:.1f} s to train on 10 MB)"
            )
        fingerprint = tokenizer.fingerprint_of(tokenizer_dir)

        rows = []
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        sidecar = tokenization.tokenize_split(
            settings, None, tokenizer_dir, "bench", "train", work / "out" / "train.bin"
        )
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        rows.append(
            (f"pipeline ({args.workers} workers)", sidecar["bytes"], sidecar["tokens"], wall, cpu, args.workers)
        )

        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        loop_bytes, loop_tokens = plain_loop(
            [work / "train" / "bench-0.jsonl"],
            tokenizer_dir / "tokenizer.json",
            fingerprint["eos_id"],
            work / "loop.bin",
        )
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        rows.append(("plain loop (1 process)", loop_bytes, loop_tokens, wall, cpu, 1))

        same = sidecar["tokens"] == loop_tokens and files.sha256_file(work / "out" / "train.bin") == files.sha256_file(
            work / "loop.bin"
        )
        print(f"\nmachine: {os.cpu_count()} cores; python {sys.version.split()[0]}; identical tokens: {same}")
        # per core = wall-clock rate / cores the path uses; per CPU-second stays honest when
        # other processes share the machine
        print(
            f"{'path':28s} {'wall s':>7s} {'cpu s':>7s} {'MB/s':>7s} {'tokens/s':>11s} {'MB/s/core':>10s} "
            f"{'tokens/s/core':>14s} {'MB/cpu-s':>9s} {'tokens/cpu-s':>13s}"
        )
        for name, nbytes, ntokens, wall, cpu, cores in rows:
            print(
                f"{name:28s} {wall:7.1f} {cpu:7.1f} {nbytes / wall / 1e6:7.2f} {ntokens / wall:11,.0f} "
                f"{nbytes / wall / 1e6 / cores:10.2f} {ntokens / wall / cores:14,.0f} "
                f"{nbytes / cpu / 1e6:9.2f} {ntokens / cpu:13,.0f}"
            )
        print(f"speed-up of the pipeline over the loop: {rows[1][3] / rows[0][3]:.2f}x (wall)")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
