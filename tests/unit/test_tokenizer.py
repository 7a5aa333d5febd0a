"""Byte-level BPE trained on train splits only; pretrained tokenizers by path."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from regmix import files, tokenizer
from regmix.config import stage_settings, validate_config

DOMAINS = ["docs", "arithmetic"]


def write_corpus(root, splits):
    for (domain, split), texts in splits.items():
        path = root / domain / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    prose = [f"The quick brown fox {i} jumps over the lazy dog. Naïve café — ünïcode ✓ 🦊." for i in range(300)]
    numbers = [f"Question: What is {i} + {i * 7}?\nAnswer: {i * 8}" for i in range(300)]
    # a word that appears only in the valid split must not become a token
    write_corpus(
        root / "corpus",
        {
            ("docs", "train"): prose,
            ("arithmetic", "train"): numbers,
            ("docs", "valid"): ["zyxwvutzyxwvut " * 200],
            ("arithmetic", "valid"): ["9 9 9"],
        },
    )
    config = validate_config(
        {
            "domains": DOMAINS,
            "data": {"source": {"kind": "demo"}},
            "regression": {"target": "mean"},
            "tokenizer": {"vocab_size": 400},
        }
    )
    settings = stage_settings(config, "tokenizer")
    assert (
        tokenizer.main(
            ["--settings", json.dumps(settings), "--corpus", str(root / "corpus"), "--out", str(root / "tok")]
        )
        == 0
    )
    return root, settings


def test_trained_tokenizer_loads_with_autotokenizer_and_round_trips(trained):
    from transformers import AutoTokenizer

    root, _ = trained
    loaded = AutoTokenizer.from_pretrained(root / "tok")
    assert len(loaded) == 400
    assert loaded.eos_token == tokenizer.EOS_TOKEN and loaded.pad_token == tokenizer.PAD_TOKEN
    assert loaded.eos_token_id != loaded.pad_token_id
    text = "def f(x):\n\treturn x ** 2  # Grüße, 東京, 🦊\r\n  trailing  "
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids) == text
    assert loaded.eos_token_id not in ids
    # frequent training words became single tokens; a valid-only word did not
    vocab = loaded.get_vocab()
    assert any(token.endswith("quick") for token in vocab)
    assert not any("zyxw" in token for token in vocab)


def test_fingerprint_is_the_sha256_of_tokenizer_json(trained):
    root, _ = trained
    fingerprint = tokenizer.fingerprint_of(root / "tok")
    assert fingerprint["sha256"] == files.sha256_file(root / "tok" / "tokenizer.json")
    assert fingerprint["vocab_size"] == 400 and fingerprint["kind"] == "train"
    assert fingerprint["eos_id"] == 0
    assert not [p for p in root.iterdir() if p.name.startswith(".tok")]  # no staging folders left
    assert (root / "tok").stat().st_mode & 0o777 == 0o755


def test_training_is_deterministic(trained, tmp_path):
    root, settings = trained
    tokenizer.build(settings, root / "corpus", tmp_path / "again")
    assert files.sha256_file(tmp_path / "again" / "tokenizer.json") == files.sha256_file(
        root / "tok" / "tokenizer.json"
    )


def test_pretrained_kind_loads_a_local_directory(trained, tmp_path):
    from transformers import AutoTokenizer

    root, settings = trained
    spec = {**settings, "tokenizer": {**settings["tokenizer"], "kind": "pretrained", "name": str(root / "tok")}}
    fingerprint = tokenizer.build(spec, None, tmp_path / "pre")
    assert fingerprint["kind"] == "pretrained" and fingerprint["vocab_size"] == 400
    original, copy = AutoTokenizer.from_pretrained(root / "tok"), AutoTokenizer.from_pretrained(tmp_path / "pre")
    assert original.get_vocab() == copy.get_vocab() and copy.eos_token_id == original.eos_token_id


def test_pretrained_without_eos_is_refused(trained, tmp_path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    root, settings = trained
    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(root / "tok" / "tokenizer.json")))
    bare.save_pretrained(tmp_path / "bare")
    spec = {**settings, "tokenizer": {**settings["tokenizer"], "kind": "pretrained", "name": str(tmp_path / "bare")}}
    with pytest.raises(ValueError, match="no end-of-text token"):
        tokenizer.build(spec, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_long_documents_train_the_same_tokenizer_in_pieces(tmp_path):
    words = ["quick", "brown", "Grüße", "東京", "🦊", "x=1;", "don't", "42", "...", "jumps"]
    separators = [" ", " ", "  ", "\n", "\t"]
    documents = [
        "".join(words[(i * 7 + j) % 10] + separators[(i + j) % 5] for j in range(800 + 300 * i)) for i in range(6)
    ]
    assert max(map(len, documents)) > 10_000
    write_corpus(
        tmp_path / "corpus",
        {
            ("docs", "train"): documents,
            ("arithmetic", "train"): [f"Question: What is {i} + {i}?\nAnswer: {2 * i}" for i in range(100)],
            ("docs", "valid"): ["v"],
            ("arithmetic", "valid"): ["1"],
        },
    )
    digests = []
    for max_chunk_chars in (10**9, 1000):
        config = validate_config(
            {
                "domains": DOMAINS,
                "data": {"source": {"kind": "demo"}, "max_chunk_chars": max_chunk_chars},
                "regression": {"target": "mean"},
                "tokenizer": {"vocab_size": 400},
            }
        )
        settings = stage_settings(config, "tokenizer")
        texts = list(tokenizer.training_texts(settings, tmp_path / "corpus"))
        assert max(map(len, texts)) <= max_chunk_chars and "".join(texts).count("jumps") == sum(
            d.count("jumps") for d in documents
        )
        tokenizer.build(settings, tmp_path / "corpus", tmp_path / f"tok{max_chunk_chars}")
        digests.append(files.sha256_file(tmp_path / f"tok{max_chunk_chars}" / "tokenizer.json"))
    assert digests[0] == digests[1]
