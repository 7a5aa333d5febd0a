"""The demo corpus: real installed text, six distinct domains, deterministic, deduplicated."""

from __future__ import annotations

import ast
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from regmix import corpus, files, sources
from regmix.config import stage_settings, validate_config

CAP = 50_000


def demo_settings(seed=0, cap=CAP):
    # a large valid share keeps both splits non-empty at this tiny size
    config = validate_config({"seed": seed, "data": {"demo_max_bytes_per_domain": cap, "valid_fraction": 0.5}})
    return stage_settings(config, "corpus")


def read_split(root, domain, split):
    return [json.loads(line)["text"] for line in (root / domain / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "corpus"
    assert corpus.main(["--settings", json.dumps(demo_settings()), "--out", str(root)]) == 0
    return root, files.read_json(root / "manifest.json")


def test_every_domain_has_both_splits_and_a_consistent_manifest(built):
    root, manifest = built
    assert list(manifest["domains"]) == list(corpus.DEMO_DOMAINS)
    for domain, entry in manifest["domains"].items():
        total = 0
        for split in ("train", "valid"):
            texts = read_split(root, domain, split)
            assert texts and entry["documents"][split] == len(texts)
            assert entry["bytes"][split] == sum(len(t.encode()) for t in texts)
            assert entry["files"][split]["sha256"] == files.sha256_file(root / domain / f"{split}.jsonl")
            assert all(sources.in_valid_split(t, 0, 0.5) == (split == "valid") for t in texts)
            total += entry["bytes"][split]
        assert CAP <= total <= CAP + CAP // corpus.MIN_DOCUMENTS_PER_DOMAIN
        assert entry["sources"]


def test_sources_are_listed_with_their_sha256(built):
    _, manifest = built
    for domain in ("code", "legal", "docs"):
        for source in manifest["domains"][domain]["sources"][:3]:
            assert files.sha256_file(source["path"]) == source["sha256"]
    code_files = {s["path"] for s in manifest["domains"]["code"]["sources"]}
    docstring_files = {s["path"] for s in manifest["domains"]["docstrings"]["sources"]}
    assert not code_files & docstring_files
    assert not any("/regmix/" in path for path in code_files | docstring_files)


def test_documents_are_unique_across_domains_and_splits(built):
    root, _ = built
    texts = [t for d in corpus.DEMO_DOMAINS for s in ("train", "valid") for t in read_split(root, d, s)]
    assert len(texts) == len(set(texts))


def test_domains_have_their_own_character(built):
    root, _ = built
    docs = {d: read_split(root, d, "train") + read_split(root, d, "valid") for d in corpus.DEMO_DOMAINS}
    parsed = 0
    for text in docs["code"]:
        try:
            ast.parse(text)
            parsed += 1
        except SyntaxError:
            pass
    assert parsed >= 0.8 * len(docs["code"])
    assert all("def " not in t.split("\n", 1)[0] or "(" in t for t in docs["docstrings"])
    assert sum(bool(re.search(r"licen[cs]e|copyright|permission", t, re.I)) for t in docs["legal"]) >= 0.9 * len(
        docs["legal"]
    )
    loadable = 0
    for text in docs["structured"]:
        try:
            yaml.safe_load(text)  # JSON is YAML too
            loadable += 1
        except yaml.YAMLError:
            try:
                import tomllib

                tomllib.loads(text)
                loadable += 1
            except ValueError:
                pass
    assert loadable >= 0.8 * len(docs["structured"])
    assert all(t.startswith("Question: ") and "\nAnswer: " in t for t in docs["arithmetic"])


def test_arithmetic_answers_are_correct():
    for text in [next(corpus.arithmetic_documents(seed)) for seed in range(50)]:
        for a, b, answer in re.findall(r"What is (-?\d+) \+ (-?\d+)\?\nAnswer: (-?\d+)", text):
            assert int(a) + int(b) == int(answer)
        for x, b, q in re.findall(r"Divide (-?\d+) by (\d+)\.\nAnswer: (-?\d+)", text):
            assert int(x) == int(b) * int(q)
        for a, _var, b, rhs, _var2, answer in re.findall(
            r"Solve (-?\d+)\*(\w) \+ (-?\d+) = (-?\d+) for (\w)\.\nAnswer: (-?\d+)", text
        ):
            assert int(a) * int(answer) + int(b) == int(rhs)
    rng = random.Random(0)
    for module in corpus.ARITHMETIC_MODULES:
        question, answer = corpus._arithmetic_question(rng, module)
        assert question and answer


def test_build_is_deterministic_and_seeded(built, tmp_path):
    root, manifest = built
    again = corpus.build_demo(demo_settings(), tmp_path / "again")
    for domain in corpus.DEMO_DOMAINS:
        assert again["domains"][domain]["files"] == manifest["domains"][domain]["files"]
    other = corpus.build_demo(demo_settings(seed=1), tmp_path / "seed1")
    assert other["domains"]["arithmetic"]["files"] != manifest["domains"]["arithmetic"]["files"]
    assert other["domains"]["code"]["sources"] != manifest["domains"]["code"]["sources"]


def test_file_classification():
    def domain(relative):
        return corpus.file_domain(corpus.SourceFile(Path("/x"), relative), 0)

    assert domain("site-packages/foo-1.0.dist-info/licenses/LICENSE") == "legal"
    assert domain("site-packages/foo-1.0.dist-info/licenses/vendored.txt") == "legal"
    assert domain("site-packages/foo/LICENSE.txt") == "legal"
    assert domain("site-packages/foo-1.0.dist-info/METADATA") == "docs"
    assert domain("site-packages/foo/README.md") == "docs"
    assert domain("site-packages/foo/tasks/x.yaml") == "structured"
    assert domain("site-packages/foo/pyproject.toml") == "structured"
    assert domain("json/decoder.py") in ("code", "docstrings")
    assert domain("site-packages/foo/license.py") in ("code", "docstrings")
    assert domain("site-packages/foo/data.bin") is None
    assert corpus.SourceFile(Path("/x"), "site-packages/numpy/core/a.py").group == "site-packages/numpy"
    assert corpus._own_install("site-packages/regmix/corpus.py")
    assert corpus._own_install("site-packages/regmix_pipeline-0.1.0.dist-info/METADATA")
    assert not corpus._own_install("site-packages/regex/_main.py")


def test_docstrings_come_from_modules_classes_and_functions():
    source = '''"""Module doc."""
import os
if os:
    def inner():
        """Inner doc."""
class A:
    """Class doc."""
    def method(self):
        """Method doc."""
        x = "not a docstring"
'''
    assert corpus._docstrings(source) == "Module doc.\n\nInner doc.\n\nClass doc.\n\nMethod doc."
    assert corpus._docstrings("def broken(:\n") is None


def test_a_domain_without_documents_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "scan_files", lambda roots: [])
    with pytest.raises(ValueError, match="demo domain 'code': no documents"):
        corpus.build_demo(demo_settings(), tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


def test_other_source_kinds_get_a_manifest_of_their_files(tmp_path):
    for domain in ("alpha", "beta"):
        for split in ("train", "valid"):
            path = tmp_path / "data" / split / f"{domain}-0.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"text": f"{domain} {split}"}) + "\n")
    config = validate_config(
        {
            "domains": ["alpha", "beta"],
            "regression": {"target": "mean"},
            "data": {"source": {"kind": "jsonl", "path": str(tmp_path / "data")}},
        }
    )
    assert (
        corpus.main(["--settings", json.dumps(stage_settings(config, "corpus")), "--out", str(tmp_path / "corpus")])
        == 0
    )
    manifest = files.read_json(tmp_path / "corpus" / "manifest.json")
    assert manifest["kind"] == "jsonl"
    assert manifest["domains"]["beta"]["valid"] == [
        {"path": str(tmp_path / "data" / "valid" / "beta-0.jsonl"), "bytes": 23}
    ]
    assert sorted(p.name for p in (tmp_path / "corpus").iterdir()) == ["manifest.json"]
