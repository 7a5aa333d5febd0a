"""One very long document: peak memory and time, whole-document vs streamed tokenization.

Writes one JSON-lines document of --size-mb MB (seeded slices of text installed on this
machine, as in tokenize_throughput.py) in a temporary folder, trains a small byte-level
BPE on other text, then runs `regmix.tokenization.tokenize_split` on it twice, each in a
fresh process (one worker, so all the work is in that process and its peak RSS is the
figure):

  whole     data.max_chunk_chars larger than the document: the tokenizer gets the whole
            document in one call (what tokenization did before the setting existed)
  streamed  data.max_chunk_chars at its default (or --max-chunk-chars)

and prints, side by side, seconds, peak RSS (the process's VmHWM, else getrusage), the part
of it above the process's peak before tokenizing (imports, settings), and whether both
wrote the same token file.

    python benchmarks/long_document.py [--size-mb 30] [--max-chunk-chars N] [--only streamed]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tokenize_throughput import text_pool  # noqa: E402

from regmix import files, tokenization, tokenizer  # noqa: E402
from regmix.config import validate_config  # noqa: E402
from regmix.settings.data import DataSettings  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB.

    getrusage's ru_maxrss also counts the parent's RSS at the fork before exec (Linux keeps
    it across exec), which would hide a child that stays below it; /proc's VmHWM is the
    same high-water mark for this process's own memory only, so it is used where it exists.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_document(path: Path, size_mb: int, pool: str) -> int:
    """One document of about `size_mb` MB of seeded slices of `pool`, as one JSON line."""
    rng, parts, size = random.Random(2), [], 0
    while size < size_mb * 1_000_000:
        start = rng.randrange(0, len(pool) - 20_000)
        part = pool[start : start + rng.randint(2_000, 20_000)]
        parts.append(part)
        size += len(part.encode("utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "\n".join(parts)}, ensure_ascii=False) + "\n")
    return size


def run_variant(settings: dict, tokenizer_dir: str, out: str, results) -> None:
    """In a fresh process: tokenize the long document's domain; report time and memory."""
    before = peak_rss_mb()
    started = time.perf_counter()
    sidecar = tokenization.tokenize_split(DataSettings.from_json(settings), None, tokenizer_dir, "long", "train", out)
    results.put(
        {
            "seconds": time.perf_counter() - started,
            "peak_mb": peak_rss_mb(),
            "before_mb": before,
            "tokens": sidecar["tokens"],
            "bytes": sidecar["bytes"],
            "sha256": files.sha256_file(out),
        }
    )


def main(argv: list[str] | None = None) -> int:
    defaults = validate_config({"regression": {"target": "mean"}})["data"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=30)
    parser.add_argument("--max-chunk-chars", type=int, default=defaults["max_chunk_chars"])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--only", choices=["whole", "streamed"], help="run one variant (e.g. to spare memory)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="regmix-long-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        pool = text_pool(12_000_000)
        size = write_document(work / "train" / "long-0.jsonl", args.size_mb, pool[2_000_000:])
        (work / "valid").mkdir()
        files.write_text(work / "valid" / "long-0.jsonl", json.dumps({"text": pool[:1000]}) + "\n")
        print(f"document: one of {size / 1e6:.1f} MB ({time.perf_counter() - started:.1f} s to write)")
        started = time.perf_counter()
        sample = (pool[i : i + 2000] for i in range(0, 2_000_000, 2000))  # text that is not in the document
        tokenizer.save(
            tokenizer.wrap(tokenizer.train_bpe(sample, args.vocab_size)), work / "tok", {"benchmark": True}, "train"
        )
        print(f"tokenizer: byte-level BPE, vocab {args.vocab_size} ({time.perf_counter() - started:.1f} s to train)")
        del pool

        data = {
            **defaults,
            "source": {
                "kind": "jsonl",
                "path": str(work),
                "train_dir": "train",
                "valid_dir": "valid",
                "text_field": "text",
            },
            "workers": 1,
        }
        variants = {"whole": 10 * size + 1, "streamed": args.max_chunk_chars}
        rows = {}
        context = multiprocessing.get_context("spawn")
        for name, max_chunk_chars in variants.items():
            if args.only and name != args.only:
                continue
            settings = {"seed": 0, "domains": ["long"], "data": {**data, "max_chunk_chars": max_chunk_chars}}
            results = context.Queue()
            process = context.Process(
                target=run_variant, args=(settings, str(work / "tok"), str(work / name / "train.bin"), results)
            )
            process.start()
            rows[name] = {**results.get(), "max_chunk_chars": max_chunk_chars}
            process.join()

    print(
        f"\n{'variant':10s} {'max_chunk_chars':>16s} {'seconds':>8s} {'MB/s':>6s} {'peak RSS MB':>12s} "
        f"{'above start MB':>15s}"
    )
    for name, row in rows.items():
        print(
            f"{name:10s} {row['max_chunk_chars']:16,d} {row['seconds']:8.1f} "
            f"{row['bytes'] / row['seconds'] / 1e6:6.2f} {row['peak_mb']:12,.0f} "
            f"{row['peak_mb'] - row['before_mb']:15,.0f}"
        )
    if len(rows) == 2:
        same = rows["whole"]["sha256"] == rows["streamed"]["sha256"]
        ratio = (rows["whole"]["peak_mb"] - rows["whole"]["before_mb"]) / max(
            1.0, rows["streamed"]["peak_mb"] - rows["streamed"]["before_mb"]
        )
        print(
            f"identical token files: {same} ({rows['whole']['tokens']:,} tokens); memory above start: {ratio:.1f}x less"
        )
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
