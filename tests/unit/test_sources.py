"""Every source kind on tiny data made here, compressed inputs, and bad input."""

from __future__ import annotations

import gzip
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import zstandard

from regmix import sources
from regmix.config import ConfigError, stage_settings, validate_config


def make_config(domains, source, **data):
    return validate_config({"domains": domains, "regression": {"target": "mean"}, "data": {"source": source, **data}})


def settings_of(config):
    return stage_settings(config, "tokenize")


def docs(config, domain, split, corpus_dir=None, stats=None):
    return list(sources.iter_documents(settings_of(config), corpus_dir, domain, split, stats))


def write_jsonl(path, texts, field="text", opener=open):
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt") as handle:
        for text in texts:
            handle.write(json.dumps({field: text}) + "\n")


def zst_open(path, mode):
    import io

    return io.TextIOWrapper(zstandard.ZstdCompressor().stream_writer(open(path, "wb")), encoding="utf-8")


# --------------------------------------------------------------------------- jsonl


@pytest.fixture
def regmix_layout(tmp_path):
    """RegMix's folder layout, with a domain whose name prefixes another's."""
    root = tmp_path / "pile"
    write_jsonl(root / "train" / "pubmed-0.jsonl", ["pubmed train a", "pubmed train b"])
    write_jsonl(root / "train" / "pubmed-1.jsonl.gz", ["pubmed train c"], opener=gzip.open)
    write_jsonl(root / "train" / "pubmed_central-0.jsonl.zst", ["central train a", "central train b"], opener=zst_open)
    write_jsonl(root / "valid" / "pubmed-0.jsonl", ["pubmed valid"])
    write_jsonl(root / "valid" / "pubmed_central-0.jsonl", ["central valid"])
    (root / "train" / "README.txt").write_text("not data")
    return root


def test_jsonl_matches_domain_names_exactly_and_reads_gz_and_zst(regmix_layout):
    config = make_config(["pubmed", "pubmed_central"], {"kind": "jsonl", "path": str(regmix_layout)})
    assert docs(config, "pubmed", "train") == ["pubmed train a", "pubmed train b", "pubmed train c"]
    assert docs(config, "pubmed_central", "train") == ["central train a", "central train b"]
    assert docs(config, "pubmed", "valid") == ["pubmed valid"]
    assert [os.path.basename(p) for p in sources.input_files(config, "pubmed", "train")] == [
        "pubmed-0.jsonl",
        "pubmed-1.jsonl.gz",
    ]
    assert sources.jsonl_domain("pubmed_central-0.jsonl") == "pubmed_central"
    assert sources.jsonl_domain("pubmed.jsonl.zst") == "pubmed"
    assert sources.jsonl_domain("notes.txt") is None


def test_jsonl_layout_errors_name_the_domain(regmix_layout):
    source = {"kind": "jsonl", "path": str(regmix_layout)}
    with pytest.raises(ConfigError, match=r"\['wikipedia'\] match no file"):
        make_config(["pubmed", "pubmed_central", "wikipedia"], source)
    write_jsonl(regmix_layout / "train" / "arxiv-0.jsonl", ["stray"])
    with pytest.raises(ConfigError, match=r"domain\(s\) \['arxiv'\] that are not in `domains`"):
        make_config(["pubmed", "pubmed_central"], source)
    with pytest.raises(ConfigError, match="data.source.path"):
        make_config(["pubmed", "pubmed_central"], {"kind": "jsonl", "path": str(regmix_layout / "missing")})


@pytest.mark.parametrize("name, damage", [("pubmed-1.jsonl.gz", "truncate"), ("pubmed_central-0.jsonl.zst", "garble")])
def test_corrupt_compressed_file_is_one_error_naming_it(regmix_layout, name, damage):
    path = regmix_layout / "train" / name
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else blob[:4] + b"\xff" * (len(blob) - 4))
    config = make_config(["pubmed", "pubmed_central"], {"kind": "jsonl", "path": str(regmix_layout)})
    domain = name.split("-")[0]
    with pytest.raises(sources.CorruptFileError, match=rf"{name}: truncated or corrupt compressed file") as info:
        docs(config, domain, "train")
    assert isinstance(info.value, ValueError) and info.value.path == str(path)


def test_unreadable_parquet_file_names_it(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(sources.CorruptFileError, match=r"a.parquet: not a readable Parquet file"):
        list(sources._parquet_records([str(tmp_path / "a.parquet")], "text"))


def test_keys_of_another_kind_are_rejected(regmix_layout):
    with pytest.raises(ConfigError, match=r"text_column.*kind 'jsonl'"):
        make_config(["pubmed", "pubmed_central"], {"kind": "jsonl", "path": str(regmix_layout), "text_column": "t"})
    with pytest.raises(ConfigError, match="unknown key"):
        make_config(["pubmed", "pubmed_central"], {"kind": "jsonl", "path": str(regmix_layout), "textfield": "t"})
    with pytest.raises(ConfigError, match="not built by the demo"):
        make_config(["code", "poetry"], {"kind": "demo"})


def test_missing_valid_folder_splits_train_by_seeded_hash(tmp_path):
    texts = [f"document number {i}" for i in range(200)]
    write_jsonl(tmp_path / "d" / "train" / "alpha-0.jsonl", texts)
    write_jsonl(tmp_path / "d" / "train" / "beta-0.jsonl", texts[:50])
    config = make_config(
        ["alpha", "beta"], {"kind": "jsonl", "path": str(tmp_path / "d"), "valid_dir": None}, valid_fraction=0.2
    )
    train, valid = docs(config, "alpha", "train"), docs(config, "alpha", "valid")
    assert sorted(train + valid) == sorted(texts) and not set(train) & set(valid)
    assert 20 <= len(valid) <= 60
    assert all(sources.in_valid_split(t, 0, 0.2) for t in valid)
    reseeded = {**settings_of(config), "seed": 1}
    assert list(sources.iter_documents(reseeded, None, "alpha", "valid")) != valid


def test_unreadable_records_are_counted_then_fail_beyond_threshold(tmp_path):
    folder = tmp_path / "d" / "train"
    folder.mkdir(parents=True)
    good = [json.dumps({"text": f"good {i}"}).encode() for i in range(98)]
    (folder / "alpha-0.jsonl").write_bytes(b"\n".join(good + [b'{"text": "bad \xff\xfe"}', b"{not json"]) + b"\n")
    write_jsonl(folder / "beta-0.jsonl", ["fine"])
    source = {"kind": "jsonl", "path": str(tmp_path / "d"), "valid_dir": None}
    stats = sources.ReadStats()
    lenient = make_config(["alpha", "beta"], source, max_undecodable_fraction=0.05, valid_fraction=0.01)
    assert len(docs(lenient, "alpha", "train", stats=stats)) + len(docs(lenient, "alpha", "valid")) == 98
    assert stats.unreadable == 2 and "alpha-0.jsonl:99" in stats.first_unreadable
    strict = make_config(["alpha", "beta"], source, max_undecodable_fraction=0.01)
    with pytest.raises(ValueError, match=r"domain 'alpha'.*2 of 100 records unreadable"):
        docs(strict, "alpha", "train")


def test_wrong_text_field_and_empty_domain_fail_naming_the_domain(tmp_path):
    write_jsonl(tmp_path / "d" / "train" / "alpha-0.jsonl", ["x"], field="content")
    write_jsonl(tmp_path / "d" / "train" / "beta-0.jsonl", ["   ", ""])
    config = make_config(["alpha", "beta"], {"kind": "jsonl", "path": str(tmp_path / "d"), "valid_dir": None})
    with pytest.raises(ValueError, match=r"domain 'alpha'.*no field 'text'"):
        docs(config, "alpha", "train")
    with pytest.raises(ValueError, match=r"domain 'beta' split 'train': no documents"):
        docs(config, "beta", "train")


# --------------------------------------------------------------------------- huggingface

PILE_NAMES = {"ArXiv": "arxiv", "Wikipedia (en)": "wikipedia_en", "FreeLaw": "freelaw"}


@pytest.fixture
def pile_like(tmp_path):
    rows = [
        {"text": f"{name} document {i}", "meta": {"pile_set_name": name}}
        for i in range(30)
        for name in [*PILE_NAMES, "Books3"]
    ]
    path = tmp_path / "pile.jsonl.zst"
    with zst_open(path, "wt") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    val = tmp_path / "val.jsonl"
    write_jsonl(val, [])
    val.write_text(
        "".join(json.dumps({"text": f"{n} held out", "meta": {"pile_set_name": n}}) + "\n" for n in PILE_NAMES)
    )
    return path, val


@pytest.mark.parametrize("streaming", [False, True])
def test_huggingface_json_loader_with_pile_set_name(pile_like, streaming):
    train, val = pile_like
    source = {
        "kind": "huggingface",
        "name_or_path": "json",
        "data_files": {"train": str(train), "validation": str(val)},
        "domain_column": "meta.pile_set_name",
        "domain_map": {**PILE_NAMES, "Books3": None},
        "streaming": streaming,
    }
    config = make_config(list(PILE_NAMES.values()), source)
    assert docs(config, "wikipedia_en", "train") == [f"Wikipedia (en) document {i}" for i in range(30)]
    assert docs(config, "freelaw", "valid") == ["FreeLaw held out"]
    assert sources.input_files(config, "arxiv", "train") == sorted([str(train), str(val)])
    # a value that is neither mapped nor excluded stops the run instead of vanishing
    unmapped = make_config(list(PILE_NAMES.values()), {**source, "domain_map": PILE_NAMES})
    with pytest.raises(ValueError, match="Books3"):
        docs(unmapped, "arxiv", "train")


def test_huggingface_domain_map_must_cover_domains_exactly(pile_like):
    source = {
        "kind": "huggingface",
        "name_or_path": "json",
        "data_files": {"train": str(pile_like[0])},
        "domain_column": "meta.pile_set_name",
        "domain_map": PILE_NAMES,
    }
    with pytest.raises(ConfigError, match=r"\['pile_cc'\].*no data"):
        make_config([*PILE_NAMES.values(), "pile_cc"], source)
    with pytest.raises(ConfigError, match=r"\['freelaw'\] are not in `domains`"):
        make_config(["arxiv", "wikipedia_en"], source)
    with pytest.raises(ConfigError, match="data_files.train"):
        make_config(list(PILE_NAMES.values()), {**source, "data_files": {"train": "/nonexistent/*.jsonl"}})


# --------------------------------------------------------------------------- parquet / text


def test_parquet_globs_per_domain(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for domain in ("web", "books"):
        for part in range(2):
            table = pa.table({"content": [f"{domain} {part} {i}" for i in range(5)], "id": list(range(5))})
            pq.write_table(table, tmp_path / f"{domain}-{part}.parquet")
    pq.write_table(pa.table({"content": ["web valid"]}), tmp_path / "web-valid.parquet")
    files = {
        "web": {"train": str(tmp_path / "web-[0-9].parquet"), "valid": str(tmp_path / "web-valid.parquet")},
        "books": {"train": str(tmp_path / "books-*.parquet")},
    }
    config = make_config(
        ["web", "books"], {"kind": "parquet", "files": files, "text_column": "content"}, valid_fraction=0.3
    )
    assert docs(config, "web", "train") == [f"web {p} {i}" for p in range(2) for i in range(5)]
    assert docs(config, "web", "valid") == ["web valid"]
    books = docs(config, "books", "train") + docs(config, "books", "valid")
    assert sorted(books) == sorted(f"books {p} {i}" for p in range(2) for i in range(5))
    with pytest.raises(ConfigError, match=r"files.books.train.*'books' matches no file"):
        make_config(
            ["web", "books"], {"kind": "parquet", "files": {**files, "books": {"train": str(tmp_path / "nope*")}}}
        )
    bad_column = make_config(["web", "books"], {"kind": "parquet", "files": files, "text_column": "body"})
    with pytest.raises(ValueError, match=r"domain 'web'.*no column 'body'"):
        docs(bad_column, "web", "train")


def test_text_files_by_file_and_by_line(tmp_path):
    (tmp_path / "a1.txt").write_text("first file\nwith two lines\n")
    with gzip.open(tmp_path / "a2.txt.gz", "wt") as handle:
        handle.write("second file\n")
    (tmp_path / "b.txt").write_bytes("line one\nline two\n\nline \xe9\n".encode() + b"\xff\xff\n")
    files = {
        "a": {"train": str(tmp_path / "a*"), "valid": str(tmp_path / "a1.txt")},
        "b": {"train": str(tmp_path / "b.txt"), "valid": str(tmp_path / "b.txt")},
    }
    by_file = make_config(["a", "b"], {"kind": "text", "files": files}, max_undecodable_fraction=0.5)
    assert docs(by_file, "a", "train") == ["first file\nwith two lines\n", "second file\n"]
    with pytest.raises(ValueError, match=r"domain 'b'.*1 of 1 records unreadable"):
        docs(by_file, "b", "train")
    by_line = make_config(
        ["a", "b"], {"kind": "text", "files": files, "text_unit": "line"}, max_undecodable_fraction=0.5
    )
    assert docs(by_line, "b", "train") == ["line one", "line two", "line \xe9"]


def test_demo_source_reads_the_corpus_folder(tmp_path):
    write_jsonl(tmp_path / "corpus" / "code" / "train.jsonl", ["print(1)"])
    config = make_config(["code", "legal"], {"kind": "demo"})
    assert docs(config, "code", "train", corpus_dir=tmp_path / "corpus") == ["print(1)"]
    with pytest.raises(ValueError, match=r"domain 'legal' split 'train'.*does not exist"):
        docs(config, "legal", "train", corpus_dir=tmp_path / "corpus")
    assert sources.input_files(config, "legal", "valid") == ["results/corpus/legal/valid.jsonl"]


@pytest.mark.parametrize("valid_split", ["validation", None])
def test_huggingface_materialized_once_reads_like_in_place(pile_like, tmp_path, valid_split):
    from regmix import corpus

    train, val = pile_like
    source = {
        "kind": "huggingface",
        "name_or_path": "json",
        "data_files": {"train": str(train), "validation": str(val)},
        "valid_split": valid_split,
        "domain_column": "meta.pile_set_name",
        "domain_map": {**PILE_NAMES, "Books3": None},
    }
    in_place = make_config(list(PILE_NAMES.values()), source, valid_fraction=0.3)
    materialized = make_config(list(PILE_NAMES.values()), {**source, "materialize": True}, valid_fraction=0.3)
    out = tmp_path / "results" / "corpus"
    assert corpus.main(["--settings", json.dumps(stage_settings(materialized, "corpus")), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for domain in PILE_NAMES.values():
        for split in sources.SPLITS:
            expected = docs(in_place, domain, split)
            assert docs(materialized, domain, split, corpus_dir=out) == expected
            assert manifest["domains"][domain]["documents"][split] == len(expected)
    expected_files = sorted(str(out / d / f"{sp}.jsonl.zst") for d in PILE_NAMES.values() for sp in sources.SPLITS)
    assert (
        sorted(corpus.corpus_outputs({**materialized, "results_dir": str(tmp_path / "results")})[1:]) == expected_files
    )
    assert sources.input_files({**materialized, "results_dir": str(tmp_path / "results")}, "arxiv", "valid") == [
        str(out / "arxiv" / "valid.jsonl.zst")
    ]


def test_materializing_fails_whole_when_a_domain_is_empty(pile_like, tmp_path):
    from regmix import corpus

    train, val = pile_like
    source = {
        "kind": "huggingface",
        "name_or_path": "json",
        "data_files": {"train": str(train), "validation": str(val)},
        "domain_column": "meta.pile_set_name",
        "domain_map": {**PILE_NAMES, "Books3": None, "FreeLaw": None, "Other": "freelaw"},
        "materialize": True,
    }
    config = make_config(list(PILE_NAMES.values()), source)
    with pytest.raises(ValueError, match=r"domain 'freelaw' split 'train': no documents"):
        corpus.materialize_dataset(stage_settings(config, "corpus"), tmp_path / "corpus")
    assert not [p for p in (tmp_path / "corpus").rglob("*") if p.is_file()]


@pytest.mark.parametrize("materialize", [False, True])
def test_huggingface_null_texts_count_as_unreadable(tmp_path, materialize):
    from regmix import corpus

    rows = [
        {"text": None if i % 4 == 0 else f"row {i}", "meta": {"pile_set_name": name}}
        for i in range(40)
        for name in PILE_NAMES
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    source = {
        "kind": "huggingface",
        "name_or_path": "json",
        "data_files": {"train": str(path)},
        "valid_split": None,
        "domain_column": "meta.pile_set_name",
        "domain_map": PILE_NAMES,
        "materialize": materialize,
    }
    config = make_config(list(PILE_NAMES.values()), source, max_undecodable_fraction=0.2, valid_fraction=0.2)
    with pytest.raises(ValueError, match=r"domain 'arxiv'.*10 of 40 records unreadable"):
        if materialize:
            corpus.materialize_dataset(stage_settings(config, "corpus"), tmp_path / "corpus")
        else:
            docs(config, "arxiv", "train")


# --------------------------------------------------------------------------- long documents


def test_utf8_length_and_hash_match_encoding_the_whole_text():
    import hashlib

    texts = [
        "",
        "ascii only",
        "Grüße 東京 🦊",
        "ab🦊" * (sources.UTF8_PIECE_CHARS // 2),
        "x" * (sources.UTF8_PIECE_CHARS + 7),
    ]
    for text in texts:
        encoded = text.encode("utf-8")
        assert sources.utf8_length(text) == len(encoded)
        assert b"".join(sources.utf8_pieces(text)) == encoded
        assert all(len(p) <= 4 * sources.UTF8_PIECE_CHARS for p in sources.utf8_pieces(text))
        # the hash of a document is what it was when computed over the whole encoding at once
        digest = hashlib.blake2b(encoded, digest_size=8, key=b"split:3").digest()
        assert sources.unit_hash(text, 3, "split") == int.from_bytes(digest, "big") / 2.0**64


def test_jsonl_records_keep_their_meaning(tmp_path):
    folder = tmp_path / "d" / "train"
    folder.mkdir(parents=True)
    lines = [
        b'\xef\xbb\xbf{"text": "after a byte-order mark"}',
        b"   \t",
        b'{"text": "pair \\ud83e\\udd8a"}',
        b'{"text": "lone \\ud800"}',
        b'{"text": " \\n\\t "}',
        b'{"text": "last"}',
    ]
    (folder / "alpha-0.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    write_jsonl(folder / "beta-0.jsonl", ["fine"])
    for domain in ("alpha", "beta"):
        write_jsonl(tmp_path / "d" / "valid" / f"{domain}-0.jsonl", ["valid"])
    config = make_config(
        ["alpha", "beta"], {"kind": "jsonl", "path": str(tmp_path / "d")}, max_undecodable_fraction=0.5
    )
    stats = sources.ReadStats()
    got = docs(config, "alpha", "train", stats=stats)
    assert got == ["after a byte-order mark", "pair 🦊", "last"]
    assert (stats.records, stats.unreadable, stats.empty) == (5, 1, 1)
    assert "alpha-0.jsonl:4: text has unpaired surrogates" in stats.first_unreadable


@pytest.mark.parametrize("kind", ["jsonl", "text"])
def test_a_huge_line_is_held_at_most_twice_while_read(tmp_path, kind):
    import tracemalloc

    text = "word " * 1_000_000 + "end"  # 5 MB on one line
    folder = tmp_path / "d"
    if kind == "jsonl":
        write_jsonl(folder / "train" / "alpha-0.jsonl", [text])
        write_jsonl(folder / "train" / "beta-0.jsonl", ["b"])
        source = {"kind": "jsonl", "path": str(folder), "valid_dir": None}
    else:
        folder.mkdir()
        (folder / "alpha.txt").write_text(text + "\n")
        (folder / "beta.txt").write_text("b\n")
        files = {d: {"train": str(folder / f"{d}.txt")} for d in ("alpha", "beta")}
        source = {"kind": "text", "files": files, "text_unit": "line"}
    config = make_config(["alpha", "beta"], source, valid_fraction=0.01)
    settings = {**settings_of(config), "seed": 0}
    assert not sources.in_valid_split(text, 0, 0.01)
    tracemalloc.start()
    try:
        for document in sources.iter_documents(settings, None, "alpha", "train"):
            assert document == text
            held_while_consumed = tracemalloc.get_traced_memory()[0]
            del document
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the raw line is gone while the consumer holds the text, and never were line, decoded line and text all alive
    assert held_while_consumed < 1.3 * len(text) and peak < 2.3 * len(text)
