"""Token files: round trip, dtype, determinism across workers/batches, shards, limits, prior."""

from __future__ import annotations

import functools
import json
import random
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from regmix import cli, files, tokenization, tokenizer
from regmix.config import stage_settings, validate_config
from regmix.pieces import document_pieces

DOMAINS = ["docs", "arithmetic"]
SIDECAR_KEYS = {
    "domain",
    "split",
    "validation_set",
    "tokens",
    "dtype",
    "files",
    "documents",
    "bytes",
    "bytes_per_token",
    "eos_id",
    "vocab_size",
    "tokenizer_fingerprint",
    "source_fingerprint",
    "provenance",
}


def random_docs(seed, count):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "Grüße", "東京", "🦊", "x=1;", "\n", "  ", "\t", "delta"]
    return [f"doc{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 80))) for i in range(count)]


CORPUS = {
    ("docs", "train"): random_docs(1, 400),
    ("docs", "valid"): random_docs(2, 20),
    ("arithmetic", "train"): [f"Question: What is {i} + {i}?\nAnswer: {2 * i}" for i in range(400)],
    ("arithmetic", "valid"): [f"Question: What is {i} * 3?\nAnswer: {3 * i}" for i in range(20)],
}


def settings_for(**data):
    config = validate_config(
        {
            "domains": DOMAINS,
            "regression": {"target": "mean"},
            "tokenizer": {"vocab_size": 300},
            "data": {"source": {"kind": "demo"}, **data},
        }
    )
    return stage_settings(config, "tokenize")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenize")
    for (domain, split), texts in CORPUS.items():
        path = root / "corpus" / domain / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = validate_config({"domains": DOMAINS, "regression": {"target": "mean"}, "tokenizer": {"vocab_size": 300}})
    tokenizer.build(stage_settings(config, "tokenizer"), root / "corpus", root / "tok")
    return root


def read_tokens(sidecar_path):
    sidecar = files.read_json(sidecar_path)
    parts = [np.fromfile(sidecar_path.parent / name, dtype=sidecar["dtype"]) for name in sidecar["files"]]
    return np.concatenate(parts), sidecar


def split_documents(tokens, eos_id):
    ends = np.flatnonzero(tokens == eos_id)
    assert ends.size and ends[-1] == tokens.size - 1  # every document is closed by EOS
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokens[s:e].tolist() for s, e in zip(starts, ends, strict=False)]


def test_round_trip_decodes_every_document_in_order(setup, tmp_path):
    from tokenizers import Tokenizer

    out = tmp_path / "data" / "docs" / "train.bin"
    sidecar = tokenization.tokenize_split(
        settings_for(workers=1), setup / "corpus", setup / "tok", "docs", "train", out
    )
    assert set(sidecar) == SIDECAR_KEYS
    tokens, on_disk = read_tokens(out.with_suffix(".json"))
    assert on_disk == json.loads(json.dumps(sidecar))
    assert sidecar["dtype"] == "uint16" and tokens.dtype == np.uint16 and sidecar["files"] == ["train.bin"]
    assert out.stat().st_mode & 0o777 == 0o644
    assert sidecar["tokens"] == tokens.size and sidecar["documents"] == 400
    texts = CORPUS[("docs", "train")]
    assert sidecar["bytes"] == sum(len(t.encode()) for t in texts)
    assert sidecar["bytes_per_token"] == pytest.approx(sidecar["bytes"] / sidecar["tokens"])
    assert sidecar["tokenizer_fingerprint"] == files.sha256_file(setup / "tok" / "tokenizer.json")
    decoder = Tokenizer.from_file(str(setup / "tok" / "tokenizer.json"))
    documents = split_documents(tokens, sidecar["eos_id"])
    assert [decoder.decode(ids) for ids in documents] == texts


def test_output_is_identical_across_workers_and_batch_sizes(setup, tmp_path):
    outputs = []
    for workers, batch_bytes in [(1, 1_000_000), (2, 1000), (3, 2500)]:
        out = tmp_path / f"w{workers}" / "train.bin"
        sidecar = tokenization.tokenize_split(
            settings_for(workers=workers, batch_bytes=batch_bytes),
            setup / "corpus",
            setup / "tok",
            "docs",
            "train",
            out,
        )
        outputs.append((files.sha256_file(out), sidecar["source_fingerprint"], sidecar["tokens"]))
    assert len(set(outputs)) == 1


def test_dtype_is_uint32_when_the_vocabulary_does_not_fit(setup, tmp_path):
    assert tokenization.token_dtype(65535) == np.uint16 and tokenization.token_dtype(65536) == np.uint32
    big = tmp_path / "big_tok"
    shutil.copytree(setup / "tok", big)
    fingerprint = files.read_json(big / tokenizer.FINGERPRINT_FILE)
    files.write_json(big / tokenizer.FINGERPRINT_FILE, {**fingerprint, "vocab_size": 70_000})
    out16, out32 = tmp_path / "16" / "valid.bin", tmp_path / "32" / "valid.bin"
    tokenization.tokenize_split(settings_for(), setup / "corpus", setup / "tok", "arithmetic", "valid", out16)
    sidecar = tokenization.tokenize_split(settings_for(), setup / "corpus", big, "arithmetic", "valid", out32)
    tokens32, _ = read_tokens(out32.with_suffix(".json"))
    tokens16, _ = read_tokens(out16.with_suffix(".json"))
    assert sidecar["dtype"] == "uint32" and out32.stat().st_size == 4 * sidecar["tokens"]
    assert np.array_equal(tokens32, tokens16.astype(np.uint32))


def test_shards_read_as_one_stream_and_stale_shards_go(setup, tmp_path):
    single = tmp_path / "one" / "train.bin"
    tokenization.tokenize_split(settings_for(), setup / "corpus", setup / "tok", "docs", "train", single)
    sharded = tmp_path / "many" / "train.bin"
    sharded.parent.mkdir()
    (sharded.parent / "train.00099.bin").write_bytes(b"old")
    sidecar = tokenization.tokenize_split(
        settings_for(shard_max_tokens=1000, batch_bytes=1000), setup / "corpus", setup / "tok", "docs", "train", sharded
    )
    assert len(sidecar["files"]) > 2 and sidecar["files"][:2] == ["train.bin", "train.00001.bin"]
    assert all((sharded.parent / f).stat().st_size <= 2000 for f in sidecar["files"])
    assert not (sharded.parent / "train.00099.bin").exists()
    tokens, _ = read_tokens(sharded.with_suffix(".json"))
    assert np.array_equal(tokens, np.fromfile(single, dtype=np.uint16))


def test_token_limit_keeps_a_seeded_sample_in_original_order(setup, tmp_path):
    full = tmp_path / "full" / "train.bin"
    full_sidecar = tokenization.tokenize_split(settings_for(), setup / "corpus", setup / "tok", "docs", "train", full)
    eos = full_sidecar["eos_id"]
    all_docs = split_documents(np.fromfile(full, dtype=np.uint16), eos)
    limit = full_sidecar["tokens"] // 3
    kept = {}
    for seed, workers in [(0, 1), (0, 2), (5, 1)]:
        settings = {**settings_for(token_limit={"docs": limit}, workers=workers, batch_bytes=2000), "seed": seed}
        out = tmp_path / f"s{seed}w{workers}" / "train.bin"
        sidecar = tokenization.tokenize_split(settings, setup / "corpus", setup / "tok", "docs", "train", out)
        tokens = np.fromfile(out, dtype=np.uint16)
        assert limit - max(map(len, all_docs)) - 1 <= sidecar["tokens"] == tokens.size <= limit
        documents = split_documents(tokens, eos)
        positions = [all_docs.index(d) for d in documents]
        assert positions == sorted(positions) and sidecar["documents"] == len(documents)
        kept[(seed, workers)] = positions
    assert kept[(0, 1)] == kept[(0, 2)] != kept[(5, 1)]
    # the valid split is never limited
    valid = tokenization.tokenize_split(
        settings_for(token_limit={"docs": 10}), setup / "corpus", setup / "tok", "docs", "valid", tmp_path / "v.bin"
    )
    assert valid["documents"] == 20
    with pytest.raises(ValueError, match=r"domain 'docs'.*token_limit 1 "):
        tokenization.tokenize_split(
            settings_for(token_limit={"docs": 1}), setup / "corpus", setup / "tok", "docs", "train", tmp_path / "x.bin"
        )


def test_limit_sampler_matches_sorting_all_keys():
    rng = np.random.default_rng(0)
    keys, sizes = rng.random(500), rng.integers(1, 50, 500)
    sampler = tokenization.LimitSampler(3000)
    for order, (key, size) in enumerate(zip(keys, sizes, strict=False)):
        sampler.add(float(key), order, np.zeros(size, np.uint16), order)  # bytes slot carries the order
    by_key = np.argsort(keys)
    expected = by_key[: int(np.searchsorted(np.cumsum(sizes[by_key]), 3000, side="right"))]
    kept = [order for _, order in sampler.kept()]
    assert kept == sorted(expected.tolist())
    assert sampler.total == sizes[expected].sum() <= 3000 < sampler.total + sizes[by_key[len(expected)]]


def test_too_few_tokens_fails_naming_the_domain_and_leaves_nothing(setup, tmp_path, capsys):
    out = tmp_path / "data" / "arithmetic" / "valid.bin"
    argv = [
        "tokenize",
        "--settings",
        json.dumps(settings_for()),
        "--corpus",
        str(setup / "corpus"),
        "--tokenizer",
        str(setup / "tok"),
        "--domain",
        "arithmetic",
        "--split",
        "valid",
        "--out",
        str(out),
        "--min-tokens",
        "1000000",
    ]
    assert cli.main(argv) == 1
    assert "domain 'arithmetic'" in capsys.readouterr().err
    assert not list(out.parent.iterdir())  # no token file, no sidecar, no temporary file
    assert cli.main(argv[:-2]) == 0
    assert tokenization.check_min_tokens(out.with_suffix(".json"), 10, "arithmetic") > 10
    with pytest.raises(ValueError, match=r"domain 'arithmetic' split 'valid'.*fewer than the 1000000 needed"):
        tokenization.check_min_tokens(out.with_suffix(".json"), 1_000_000, "arithmetic")


def test_unreadable_source_leaves_no_output(setup, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(setup / "corpus", corpus)
    with open(corpus / "docs" / "valid.jsonl", "ab") as handle:
        handle.write(b'{"text": "\xff broken"}\n' * 5)
    out = tmp_path / "data" / "docs" / "valid.bin"
    with pytest.raises(ValueError, match=r"domain 'docs' split 'valid'.*unreadable"):
        tokenization.tokenize_split(settings_for(), corpus, setup / "tok", "docs", "valid", out)
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_prior_and_token_counts_from_sidecars(setup, tmp_path, capsys):
    settings = settings_for()
    for domain in DOMAINS:
        for split in ("train", "valid"):
            tokenization.tokenize_split(
                settings, setup / "corpus", setup / "tok", domain, split, tmp_path / "data" / domain / f"{split}.bin"
            )
    argv = [
        "prior",
        "--settings",
        json.dumps(settings),
        "--data",
        str(tmp_path / "data"),
        "--out-prior",
        str(tmp_path / "data" / "prior.yaml"),
        "--out-counts",
        str(tmp_path / "data" / "token_counts.json"),
    ]
    assert cli.main(argv) == 0
    counts, prior = (
        files.read_json(tmp_path / "data" / "token_counts.json"),
        files.read_yaml(tmp_path / "data" / "prior.yaml"),
    )
    assert list(prior) == DOMAINS and sum(prior.values()) == pytest.approx(1.0)
    for domain in DOMAINS:
        sidecar = files.read_json(tmp_path / "data" / domain / "train.json")
        assert counts[domain]["train"] == sidecar["tokens"]
        assert prior[domain] == pytest.approx(sidecar["tokens"] / sum(c["train"] for c in counts.values()))
    (tmp_path / "data" / "arithmetic" / "valid.json").unlink()
    assert cli.main(argv) == 1
    assert "domain 'arithmetic'" in capsys.readouterr().err


def test_progress_line_reports_counts_and_rates(capsys):
    from regmix.tokenization import ProgressLine

    progress = ProgressLine("code/train", every_seconds=0.0)
    progress.update(3, 2_000_000, 500_000)
    progress.update(2, 1_000_000, 250_000)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[-1].startswith("[code/train] 5 documents, 3.0 MB, 750,000 tokens")
    assert "MB/s" in lines[-1] and "tokens/s" in lines[-1]


# --------------------------------------------------------------------------- long documents


def long_document(seed, chars, separators=(" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n")):
    """Words of mixed scripts joined by mixed whitespace, `chars` characters long."""
    rng = random.Random(seed)
    words = ["alpha", "Grüße", "東京", "🦊", "x=1;", "don't", "1234567", "...", "beta-gamma", "naïve"]
    parts, size = [], 0
    while size < chars:
        part = rng.choice(words) + rng.choice(separators)
        parts.append(part)
        size += len(part)
    return "".join(parts)[:chars]


def encoder(setup, max_chunk_chars):
    eos = files.read_json(setup / "tok" / tokenizer.FINGERPRINT_FILE)["eos_id"]
    return tokenization.Encoder(str(setup / "tok" / "tokenizer.json"), eos, "uint16", max_chunk_chars)


class CallSizes:
    """The tokenizer, recording how many characters each call was given."""

    def __init__(self, tok):
        self.tok, self.sizes = tok, []

    def encode_batch_fast(self, texts, add_special_tokens):
        self.sizes.append(sum(map(len, texts)))
        return self.tok.encode_batch_fast(texts, add_special_tokens=add_special_tokens)


def test_pieces_rejoin_stay_within_the_bound_and_cut_before_a_space():
    text = long_document(0, 50_000)
    pieces = list(document_pieces(text, 1000))
    assert "".join(pieces) == text and len(pieces) > 50
    assert all(0 < len(p) <= 1000 for p in pieces)
    assert all(p[0] == " " and not q[-1].isspace() for q, p in zip(pieces, pieces[1:], strict=False))
    short = "fits as it is " * 10
    assert [p is short for p in document_pieces(short, 1000)] == [True]
    # no space within reach: before a newline; neither: at the bound exactly
    lines = "\n".join(["a" * 300] * 10)
    assert [p[0] for p in list(document_pieces(lines, 1000))[1:]] == ["\n"] * 3
    blob = "x" * 2500
    assert list(map(len, document_pieces(blob, 1000))) == [1000, 1000, 500]
    # a run of spaces is one word: the cut goes before the run, then (the run being too long) at the bound
    spaces = "word" + " " * 1500 + "end"
    assert list(map(len, document_pieces(spaces, 1000))) == [4, 1000, 503]


def test_long_documents_get_the_tokens_of_whole_document_encoding(setup):
    from tokenizers import Tokenizer

    whole_tok = Tokenizer.from_file(str(setup / "tok" / "tokenizer.json"))
    texts = [long_document(1, 30_000), "short one", long_document(2, 999), long_document(3, 12_345)]
    texts.append(long_document(4, 8000, separators=("\n", "\n\n")))  # no space at all: cut before newlines
    whole = [whole_tok.encode(t, add_special_tokens=False).ids for t in texts]
    big, _ = encoder(setup, 10**9)(texts)
    streamed = encoder(setup, 1000)
    streamed.tokenizer = spy = CallSizes(streamed.tokenizer)
    tokens, lengths = streamed(texts)
    eos = streamed.eos_id
    assert tokens.tolist() == big.tolist() == [i for ids in whole for i in [*ids, eos]]
    assert lengths.tolist() == [len(ids) + 1 for ids in whole]
    assert max(spy.sizes) <= 1000 and len(spy.sizes) > 50


def test_every_tokenizer_call_is_within_the_bound_and_short_documents_are_grouped(setup):
    texts = [f"document {i} " * 5 for i in range(200)] + [long_document(5, 20_000)]
    streamed = encoder(setup, 2000)
    streamed.tokenizer = spy = CallSizes(streamed.tokenizer)
    streamed(texts)
    assert max(spy.sizes) <= 2000
    assert len(spy.sizes) < 200 // 10 + 20_000 // 1000 + 5  # grouped, not one call per document


def test_a_cut_with_no_whitespace_changes_tokens_only_at_the_cut(setup):
    from tokenizers import Tokenizer

    whole_tok = Tokenizer.from_file(str(setup / "tok" / "tokenizer.json"))
    run = "alphabetagammadelta" * 130  # 2470 characters without whitespace: cut at the bound, mid-word
    text = "alpha beta " * 100 + run + " gamma delta" * 100
    whole = whole_tok.encode(text, add_special_tokens=False).ids
    tokens, _ = encoder(setup, 1000)([text])
    ids = tokens.tolist()[:-1]
    assert ids != whole and whole_tok.decode(ids) == text  # different, still lossless

    def common(a, b):
        return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    before, after = whole_tok.encode("alpha beta " * 100).ids, whole_tok.encode(" gamma delta" * 100).ids
    assert common(ids, whole) >= len(before) and common(ids[::-1], whole[::-1]) >= len(after)  # only the run differs


def test_tokenize_split_files_are_identical_whatever_the_chunk_size(setup, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(setup / "corpus", corpus)
    texts = CORPUS[("docs", "valid")] + [long_document(seed, 5000 * seed) for seed in range(1, 6)]
    (corpus / "docs" / "valid.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    outputs = set()
    for workers, max_chunk_chars in [(1, 10**9), (1, 1000), (2, 1500)]:
        out = tmp_path / f"{workers}-{max_chunk_chars}" / "valid.bin"
        settings = settings_for(workers=workers, batch_bytes=4000, max_chunk_chars=max_chunk_chars)
        sidecar = tokenization.tokenize_split(settings, corpus, setup / "tok", "docs", "valid", out)
        assert sidecar["documents"] == len(texts)
        outputs.add((files.sha256_file(out), sidecar["tokens"], sidecar["source_fingerprint"]))
    assert len(outputs) == 1


def test_max_chunk_chars_has_a_floor():
    from regmix.settings import ConfigError

    with pytest.raises(ConfigError, match="data.max_chunk_chars"):
        settings_for(max_chunk_chars=10)


# characters around which cuts are tricky: whitespace the tokenizer's pattern and Python disagree on
# (\x1c is a Python space, not a regex one; \u3000 is both), apostrophes of contractions, digits, symbols
TRICKY = " \n\t\r\x0b\x1c\u3000\u00a0aé東🦊'sd1.-"


@hypothesis_settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(alphabet=TRICKY, max_size=400), max_chars=st.integers(4, 60))
def test_pieces_give_whole_document_tokens_unless_a_cut_had_no_whitespace(setup, text, max_chars):
    tok = whole_tokenizer(str(setup / "tok" / "tokenizer.json"))
    pieces = list(document_pieces(text, max_chars))
    assert "".join(pieces) == text and all(0 < len(p) <= max_chars for p in pieces if text)
    soft = all(p[0] in " \n" and not q[-1].isspace() for q, p in zip(pieces, pieces[1:], strict=False))
    joined = [i for p in pieces for i in tok.encode(p, add_special_tokens=False).ids]
    if soft:
        assert joined == tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(joined) == text


@functools.cache
def whole_tokenizer(path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)
