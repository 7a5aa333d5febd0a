"""The tokenizer: a byte-level BPE trained on the train splits, or a pretrained one.

Either way the output is a Hugging Face tokenizer folder that
`AutoTokenizer.from_pretrained(dir)` loads, with an end-of-text token (documents are
separated by it), a padding token, and `fingerprint.json` (sha256 of tokenizer.json) so
token files can say which tokenizer made them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from regmix import files, sources
from regmix.pieces import document_pieces
from regmix.settings import parse_settings
from regmix.settings.data import TokenizerSettings

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
FINGERPRINT_FILE = "fingerprint.json"


def training_texts(settings: TokenizerSettings, corpus_dir: str | Path | None) -> Iterator[str]:
    """Train-split documents of every domain, domain by domain, each domain capped in bytes.

    Long documents come as `document_pieces` of at most `data.max_chunk_chars`: the pieces
    hold the same words as the whole document, so the trainer counts the same words (and
    learns the same merges) without pre-tokenizing a huge text at once.
    """
    cap, max_chars = settings.tokenizer.train_max_bytes_per_domain, settings.data.max_chunk_chars
    for domain in settings.domains:
        used = 0
        for text in sources.iter_documents(settings, corpus_dir, domain, "train"):
            yield from document_pieces(text, max_chars)
            used += sources.utf8_length(text)
            if cap is not None and used >= cap:
                break


def train_bpe(texts: Iterator[str], vocab_size: int):
    """A byte-level BPE (GPT-2 style pre-tokenization, lossless on any UTF-8 text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def wrap(tokenizer_object):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,  # GPT-2 convention: one end-of-text token opens and closes documents
        unk_token=None,
        pad_token=PAD_TOKEN,
    )


def load_pretrained(name: str):
    """A pretrained tokenizer by hub name or local path, with EOS and padding set."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {name!r} has no fast (tokenizer.json) version")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {name!r} has no end-of-text token; documents could not be separated")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def fingerprint_of(tokenizer_dir: str | Path) -> dict:
    path = Path(tokenizer_dir) / FINGERPRINT_FILE
    if not path.is_file():
        raise ValueError(f"{tokenizer_dir}: no {FINGERPRINT_FILE}; not written by `regmix train-tokenizer`")
    return files.read_json(path)


def save(tokenizer, out_dir: str | Path, settings_json: Mapping[str, Any], kind: str) -> dict:
    """Write into a temporary sibling folder, then rename it into place (never half-written);
    `settings_json` (the settings as given) goes into the fingerprint's provenance."""
    with files.atomic_dir(out_dir) as staging:
        tokenizer.save_pretrained(staging)
        tokenizer_json = staging / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise ValueError(f"tokenizer ({kind}) saved no tokenizer.json")
        fingerprint = {
            "sha256": files.sha256_file(tokenizer_json),
            "kind": kind,
            "vocab_size": len(tokenizer),
            "eos_id": tokenizer.eos_token_id,
            "pad_id": tokenizer.pad_token_id,
            "eos_token": tokenizer.eos_token,
            "provenance": files.provenance(settings_json),
        }
        files.write_json(staging / FINGERPRINT_FILE, fingerprint)
    return fingerprint


def build(settings: TokenizerSettings, corpus_dir: str | Path | None, out_dir: str | Path) -> dict:
    spec = settings.tokenizer
    if spec.kind == "pretrained":
        if spec.name is None:  # refused by regmix.config; a hand-written settings JSON may still lack it
            raise ValueError("tokenizer.name: required when tokenizer.kind is 'pretrained'")
        return save(load_pretrained(spec.name), out_dir, settings.raw, "pretrained")
    bpe = train_bpe(training_texts(settings, corpus_dir), spec.vocab_size)
    return save(wrap(bpe), out_dir, settings.raw, "train")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix train-tokenizer", description=__doc__.split("\n")[0])
    parser.add_argument("--settings", required=True, help="JSON of regmix.config.stage_settings(config, 'tokenizer')")
    parser.add_argument("--corpus", default=None, help="corpus folder (R/corpus; read by the demo source)")
    parser.add_argument("--out", required=True, help="tokenizer folder to write (R/tokenizer)")
    args = parser.parse_args(argv)
    fingerprint = build(TokenizerSettings.from_json(parse_settings(args.settings)), args.corpus, args.out)
    print(
        f"tokenizer ({fingerprint['kind']}): vocab {fingerprint['vocab_size']}, eos id "
        f"{fingerprint['eos_id']}, sha256 {fingerprint['sha256'][:16]}"
    )
    return 0
