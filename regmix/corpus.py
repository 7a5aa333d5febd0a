"""The offline demo corpus: six domains of real text the install itself puts on disk.

  code        Python source files (standard library and installed packages)
  docstrings  module/class/function docstrings pulled out with `ast` (technical prose)
  docs        Markdown/reST shipped in packages and the README bodies of dist-info METADATA
  structured  YAML/JSON/TOML files shipped in packages
  legal       LICENSE/COPYING/NOTICE texts, including dist-info licences
  arithmetic  generated question/answer drills, like the Pile's DM Mathematics

The corpus is a function of the installed files and the seed: file lists are sorted,
every choice is seeded, files are taken round-robin across packages (so one big package
cannot fill a domain), documents are deduplicated by exact hash, split train/valid by a
seeded hash, and each domain is capped at `data.demo_max_bytes_per_domain`.
Python files are split between `code` and `docstrings` by a hash of their path, so the
two domains never share a file.

For the other source kinds `regmix corpus` writes only the manifest (their documents are
read in place by `regmix.sources.iter_documents`), except a huggingface source with
`materialize: true`, which it reads once into R/corpus/<domain>/<split>.jsonl.zst so that
the per-domain jobs after it do not each read the whole dataset. `corpus_outputs(config)`
lists what it writes.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import random
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from regmix import files, sources
from regmix.layout import CorpusDir, Layout
from regmix.settings import parse_settings
from regmix.settings.data import DataSettings
from regmix.sources import CorpusStep

DEMO_DOMAINS = sources.DEMO_DOMAINS
MAX_DOCUMENT_BYTES = 100_000  # bigger files are mostly generated data tables, not text
MIN_DOCUMENTS_PER_DOMAIN = 20  # a small cap also caps file size, so both splits get documents
MIN_DOCUMENT_CHARS = 64
_SKIP_DIRS = {"__pycache__", ".git"}
_DOC_SUFFIXES = {".md", ".markdown", ".rst"}
_STRUCTURED_SUFFIXES = {".yaml", ".yml", ".json", ".toml"}
_LEGAL_STEMS = ("LICENSE", "LICENCE", "COPYING", "NOTICE", "COPYRIGHT")


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class SourceFile:
    root: Path
    relative: str  # posix path under root; sorting and grouping use it

    @property
    def path(self) -> Path:
        return self.root / self.relative

    @property
    def group(self) -> str:
        """The package a file belongs to (round-robin unit)."""
        parts = self.relative.split("/")
        if parts[0] in ("site-packages", "dist-packages") and len(parts) > 2:
            return "/".join(parts[:2])
        return parts[0]


def install_roots() -> list[Path]:
    """Folders of the standard library and installed packages (nested ones dropped)."""
    paths = sysconfig.get_paths()
    roots: list[Path] = []
    for key in ("stdlib", "purelib", "platlib"):
        path = Path(paths[key]).resolve()
        if path.is_dir() and path not in roots:
            roots.append(path)
    return [r for r in roots if not any(r != o and o in r.parents for o in roots)]


def _own_install(relative: str) -> bool:
    # this project's own files must not feed the corpus it builds (editable installs)
    parts = relative.split("/")
    top = parts[1] if parts[0] in ("site-packages", "dist-packages") and len(parts) > 1 else parts[0]
    return top == "regmix" or top.startswith(
        ("regmix_pipeline", "__editable__.regmix_pipeline", "__editable___regmix_pipeline")
    )


def scan_files(roots: list[Path]) -> list[SourceFile]:
    found: list[SourceFile] = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            for name in filenames:
                relative = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not _own_install(relative):
                    found.append(SourceFile(root, relative))
    found.sort(key=lambda f: (str(f.root), f.relative))
    return found


def file_domain(source: SourceFile, seed: int) -> str | None:
    """Which demo domain a file feeds, if any."""
    relative = source.relative
    name = relative.rsplit("/", 1)[-1]
    stem = name.split(".", 1)[0]
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    parent = relative.rsplit("/", 2)[-2] if relative.count("/") >= 1 else ""
    if stem.upper().startswith(_LEGAL_STEMS) and suffix in ("", ".txt", ".md", ".rst"):
        return "legal"
    if parent == "licenses" and ".dist-info/" in relative:
        return "legal"
    if suffix == ".py":
        return "code" if sources.unit_hash(relative, seed, "code-or-docstrings") < 0.5 else "docstrings"
    if suffix in _DOC_SUFFIXES or (name == "METADATA" and parent.endswith(".dist-info")):
        return "docs"
    if suffix in _STRUCTURED_SUFFIXES:
        return "structured"
    return None


# --------------------------------------------------------------------------- documents


def _docstrings(text: str) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes etc. in third-party code
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return None
    found, stack = [], [tree]
    while stack:  # statements only: docstrings never sit inside expressions
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                found.append(doc.strip())
        for name in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, name, None)
            if isinstance(children, list):
                stack.extend(reversed(children))
    return "\n\n".join(found) if found else None


def _metadata_body(text: str) -> str | None:
    # METADATA is an email message: headers, a blank line, then the long description
    _, sep, body = text.partition("\n\n")
    return body if sep and body.strip() else None


def _extract(domain: str, source: SourceFile, text: str) -> str | None:
    if domain == "docstrings":
        return _docstrings(text)
    if domain == "docs" and source.relative.endswith("METADATA"):
        return _metadata_body(text)
    return text


# --------------------------------------------------------------------------- arithmetic


def _arithmetic_question(rng: random.Random, module: str) -> tuple[str, str]:  # noqa: C901 (one branch per question kind)
    n = lambda lo, hi: rng.randint(lo, hi)  # noqa: E731
    if module == "add_sub":
        a, b = n(-9999, 9999), n(-9999, 9999)
        if rng.random() < 0.5:
            return f"What is {a} + {b}?", str(a + b)
        return f"Calculate {a} - {b}.", str(a - b)
    if module == "mul":
        a, b = n(-999, 999), n(-99, 99)
        return rng.choice([f"What is {a} times {b}?", f"Multiply {a} and {b}.", f"Calculate {a}*{b}."]), str(a * b)
    if module == "div":
        b, q = n(2, 99), n(-999, 999)
        if rng.random() < 0.5:
            return f"Divide {b * q} by {b}.", str(q)
        a = n(100, 99999)
        return f"What is the remainder when {a} is divided by {b}?", str(a % b)
    if module == "linear":
        x, a, b = n(-30, 30), rng.choice([i for i in range(-12, 13) if i]), n(-99, 99)
        var = rng.choice("xyzwkabc")
        return f"Solve {a}*{var} + {b} = {a * x + b} for {var}.", str(x)
    if module == "gcd_lcm":
        f = n(2, 40)
        a, b = f * n(1, 50), f * n(1, 50)
        if rng.random() < 0.5:
            return f"What is the greatest common divisor of {a} and {b}?", str(math.gcd(a, b))
        return f"Calculate the lowest common multiple of {a} and {b}.", str(math.lcm(a, b))
    if module == "polynomial":
        c = [n(-9, 9) for _ in range(3)]
        x = n(-6, 6)
        var = rng.choice("xtgqr")
        return (
            f"Let f({var}) = {c[0]}*{var}**2 + {c[1]}*{var} + {c[2]}. What is f({x})?".replace("+ -", "- "),
            str(c[0] * x * x + c[1] * x + c[2]),
        )
    if module == "round":
        value = rng.randint(-(10**7), 10**7) / 10**4
        places = rng.choice([0, 1, 2, -1, -2])
        where = {
            0: "the nearest integer",
            1: "one decimal place",
            2: "two decimal places",
            -1: "the nearest ten",
            -2: "the nearest one hundred",
        }[places]
        rounded = round(Fraction(str(value)), places)
        return f"Round {value} to {where}.", str(int(rounded) if places <= 0 else float(rounded))
    if module == "sort":
        values = rng.sample(range(-99, 100), n(3, 6))
        order = rng.choice(["increasing", "decreasing"])
        result = sorted(values, reverse=order == "decreasing")
        return f"Sort {', '.join(map(str, values))} in {order} order.", ", ".join(map(str, result))
    if module == "base":
        value, base = n(2, 4095), rng.choice([2, 3, 5, 7, 8, 16])
        digits, v = "", value
        while v:
            digits = "0123456789abcdef"[v % base] + digits
            v //= base
        return f"Convert {value} (base 10) to base {base}.", digits
    if module == "primes":
        value = n(2, 5000)
        factors, v, p = [], value, 2
        while p * p <= v:
            while v % p == 0:
                factors.append(p)
                v //= p
            p += 1
        if v > 1:
            factors.append(v)
        if rng.random() < 0.5:
            return f"Is {value} a prime number?", "True" if factors == [value] else "False"
        return f"List the prime factors of {value}.", ", ".join(map(str, sorted(set(factors))))
    # derivative of a polynomial
    coeffs = {k: n(-9, 9) for k in range(rng.randint(1, 4), -1, -1)}

    def terms(cs):
        return (
            " + ".join(  # noqa: E731
                f"{c}*x**{k}" if k > 1 else f"{c}*x" if k == 1 else str(c) for k, c in cs.items() if c
            ).replace("+ -", "- ")
            or "0"
        )

    derived = {k - 1: c * k for k, c in coeffs.items() if k > 0}
    return f"Find the first derivative of {terms(coeffs)} wrt x.", terms(derived)


ARITHMETIC_MODULES = (
    "add_sub",
    "mul",
    "div",
    "linear",
    "gcd_lcm",
    "polynomial",
    "round",
    "sort",
    "base",
    "primes",
    "derivative",
)


def arithmetic_documents(seed: int) -> Iterator[str]:
    """Endless seeded documents, each a run of questions from one module."""
    rng = random.Random(f"{seed}:arithmetic")
    while True:
        module = rng.choice(ARITHMETIC_MODULES)
        pairs = [_arithmetic_question(rng, module) for _ in range(rng.randint(4, 12))]
        yield "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in pairs).rstrip("\n")


# --------------------------------------------------------------------------- building


@dataclass
class DomainBuild:
    documents: list[str] = field(default_factory=list)
    bytes: int = 0
    sources: list[dict] = field(default_factory=list)
    skipped: dict[str, int] = field(
        default_factory=lambda: {"too_large": 0, "undecodable": 0, "no_text": 0, "too_short": 0, "duplicate": 0}
    )


def _round_robin(files: list[SourceFile], rng: random.Random) -> Iterator[SourceFile]:
    groups: dict[str, list[SourceFile]] = {}
    for f in files:
        groups.setdefault(f.group, []).append(f)
    order = sorted(groups)
    rng.shuffle(order)
    queues = []
    for name in order:
        members = list(groups[name])
        rng.shuffle(members)
        queues.append(iter(members))
    while queues:
        alive = []
        for queue in queues:
            item = next(queue, None)
            if item is not None:
                alive.append(queue)
                yield item
        queues = alive


def _add(build: DomainBuild, text: str, seen: set[bytes], cap: int) -> bool:
    """Add a document unless it is short or a duplicate; return whether the cap is reached."""
    if len(text.strip()) < MIN_DOCUMENT_CHARS:
        build.skipped["too_short"] += 1
        return False
    encoded = text.encode("utf-8")
    digest = hashlib.sha256(encoded).digest()
    if digest in seen:
        build.skipped["duplicate"] += 1
        return False
    seen.add(digest)
    build.documents.append(text)
    build.bytes += len(encoded)
    return build.bytes >= cap


def build_domain(domain: str, files: list[SourceFile], seed: int, cap: int, seen: set[bytes]) -> DomainBuild:
    build = DomainBuild()
    if domain == "arithmetic":
        build.sources.append(
            {"generator": "regmix.corpus.arithmetic_documents", "seed": seed, "modules": list(ARITHMETIC_MODULES)}
        )
        for text in arithmetic_documents(seed):
            if _add(build, text, seen, cap):
                break
        return build
    rng = random.Random(f"{seed}:{domain}")
    max_bytes = min(MAX_DOCUMENT_BYTES, cap // MIN_DOCUMENTS_PER_DOMAIN)
    for source in _round_robin(files, rng):
        try:
            size = source.path.stat().st_size
            if size > max_bytes:
                build.skipped["too_large"] += 1
                continue
            raw = source.path.read_bytes()
        except OSError:
            build.skipped["undecodable"] += 1
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            build.skipped["undecodable"] += 1
            continue
        document = _extract(domain, source, text) if "\x00" not in text else None
        if document is None:
            build.skipped["no_text"] += 1
            continue
        before = len(build.documents)
        full = _add(build, document, seen, cap)
        if len(build.documents) > before:
            build.sources.append(
                {"path": str(source.path), "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
            )
        if full:
            break
    return build


def build_demo(settings: DataSettings, out_dir: str | Path) -> dict:
    """Build every configured demo domain, check it, then write it; return the manifest."""
    seed, data = settings.seed, settings.data
    domains, cap = settings.domains, data.demo_max_bytes_per_domain
    roots = install_roots()
    source_files = scan_files(roots)
    by_domain: dict[str, list[SourceFile]] = {d: [] for d in DEMO_DOMAINS}
    for f in source_files:
        d = file_domain(f, seed)
        if d is not None:
            by_domain[d].append(f)
    seen: set[bytes] = set()
    builds: dict[str, DomainBuild] = {}
    splits: dict[str, dict[str, list[str]]] = {}
    for domain in domains:
        build = build_domain(domain, by_domain[domain], seed, cap, seen)
        if not build.documents:
            raise ValueError(
                f"demo domain {domain!r}: no documents found in {[str(r) for r in roots]} "
                f"({len(by_domain[domain])} candidate files)"
            )
        split: dict[str, list[str]] = {"train": [], "valid": []}
        for text in build.documents:
            split["valid" if sources.in_valid_split(text, seed, data.valid_fraction) else "train"].append(text)
        for name, docs in split.items():
            if not docs:
                raise ValueError(
                    f"demo domain {domain!r}: the {name} split is empty ({len(build.documents)} documents, "
                    f"valid_fraction {data.valid_fraction}); raise data.demo_max_bytes_per_domain"
                )
        builds[domain], splits[domain] = build, split
    out_dir = Path(out_dir)
    manifest: dict[str, Any] = {
        "kind": "demo",
        "seed": seed,
        "python": sys.version.split()[0],
        "roots": [str(r) for r in roots],
        "max_bytes_per_domain": cap,
        "domains": {},
    }
    for domain in domains:
        entry: dict[str, Any] = {"documents": {}, "bytes": {}, "files": {}}
        for name, docs in splits[domain].items():
            path = sources.corpus_file(out_dir, data.source, domain, name)
            files.write_text(path, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs))
            entry["documents"][name] = len(docs)
            entry["bytes"][name] = sum(len(t.encode("utf-8")) for t in docs)
            entry["files"][name] = {"path": path.relative_to(out_dir).as_posix(), "sha256": files.sha256_file(path)}
        entry["skipped"] = builds[domain].skipped
        entry["sources"] = builds[domain].sources
        manifest["domains"][domain] = entry
    files.write_json(CorpusDir(str(out_dir)).manifest, manifest)
    return manifest


def build_validation_set(settings: DataSettings, out_dir: str | Path, name: str) -> dict:
    """A demo validation-only set: the held-out slice (the documents data.valid_fraction's
    seeded hash puts in valid) of a demo domain that is not a training domain, written to
    CorpusDir.validation_set(name). Returns its record for the log."""
    spec, data, seed = settings.validation_sets[name], settings.data, settings.seed
    domain = spec["domain"]
    if not sources.kind_of(spec).builds_validation_sets:
        raise ValueError(f"validation set {name!r}: kind {spec['kind']!r} is read in place, not built")
    if domain in settings.domains:
        raise ValueError(f"validation set {name!r}: demo domain {domain!r} is a training domain")
    roots = install_roots()
    candidates = [f for f in scan_files(roots) if file_domain(f, seed) == domain]
    build = build_domain(domain, candidates, seed, data.demo_max_bytes_per_domain, set())
    held_out = [t for t in build.documents if sources.in_valid_split(t, seed, data.valid_fraction)]
    if not held_out:
        raise ValueError(
            f"validation set {name!r}: no held-out documents of demo domain {domain!r} "
            f"({len(build.documents)} documents, valid_fraction {data.valid_fraction})"
        )
    path = CorpusDir(str(out_dir)).validation_set(name)
    files.write_text(path, "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in held_out))
    return {"name": name, "domain": domain, "documents": len(held_out), "bytes": sum(len(t.encode()) for t in held_out)}


def materialize_dataset(settings: DataSettings, out_dir: str | Path) -> dict:
    """Read a many-domain dataset once into R/corpus/<domain>/<split>.jsonl.zst.

    Every file is written under a temporary name and renamed only after the whole
    dataset was read and every domain split got documents.
    """
    import zstandard

    source, domains = settings.data.source, settings.domains
    out_dir = Path(out_dir)
    temps: dict[tuple[str, str], tuple[Path, Any]] = {}
    counts = {
        d: {"documents": dict.fromkeys(sources.SPLITS, 0), "bytes": dict.fromkeys(sources.SPLITS, 0)} for d in domains
    }
    try:
        for domain in domains:
            for split in sources.SPLITS:
                final = sources.corpus_file(out_dir, source, domain, split)
                tmp = files.temp_file(final)
                writer = zstandard.ZstdCompressor(level=3).stream_writer(tmp.open("wb"), closefd=True)
                temps[(domain, split)] = (tmp, writer)
        for domain, split, text in sources.kind_of(source).materialized_documents(settings):
            temps[(domain, split)][1].write((json.dumps({"text": text}, ensure_ascii=False) + "\n").encode("utf-8"))
            counts[domain]["documents"][split] += 1
            counts[domain]["bytes"][split] += sources.utf8_length(text)
        for _tmp, writer in temps.values():
            writer.close()
        manifest: dict[str, Any] = {
            "kind": source["kind"],
            "materialized": True,
            "seed": settings.seed,
            "source": source,
            "domains": {},
        }
        for (domain, split), (tmp, _) in temps.items():
            final = sources.corpus_file(out_dir, source, domain, split)
            files.commit_file(tmp, final)
            entry = manifest["domains"].setdefault(domain, {**counts[domain], "files": {}})
            entry["files"][split] = {"path": f"{domain}/{final.name}", "sha256": files.sha256_file(final)}
    finally:
        for tmp, writer in temps.values():
            if not writer.closed:
                writer.close()
            tmp.unlink(missing_ok=True)
    files.write_json(CorpusDir(str(out_dir)).manifest, manifest)
    return manifest


def corpus_outputs(config: dict) -> list[str]:
    """Files `regmix corpus` writes for this config (the corpus rule's outputs)."""
    source, corpus = config["data"]["source"], Layout(config["results_dir"]).corpus
    outputs = [corpus.manifest]
    if sources.copies_corpus(source):
        outputs += [
            str(sources.corpus_file(corpus.root, source, d, sp)) for d in config["domains"] for sp in sources.SPLITS
        ]
    return outputs


def describe_source(settings: DataSettings, out_dir: str | Path) -> dict:
    """Manifest for a source read in place: its settings and local files (with sizes)."""
    source = settings.data.source
    manifest: dict[str, Any] = {
        "kind": source["kind"],
        "seed": settings.seed,
        "source": source,
        "domains": {},
    }
    for domain in settings.domains:
        manifest["domains"][domain] = {
            split: [{"path": p, "bytes": os.path.getsize(p)} for p in sources.local_files(source, domain, split)]
            for split in sources.SPLITS
        }
    files.write_json(CorpusDir(str(out_dir)).manifest, manifest)
    return manifest


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix corpus", description=__doc__.split("\n")[0])
    parser.add_argument("--settings", required=True, help="JSON of regmix.config.stage_settings(config, 'corpus')")
    parser.add_argument("--out", required=True, help="corpus folder (R/corpus)")
    parser.add_argument(
        "--validation-set",
        help="build only this demo validation-only set (settings: regmix.config.validation_set_settings)",
    )
    args = parser.parse_args(argv)
    settings = DataSettings.from_json(
        parse_settings(args.settings), "validation_set" if args.validation_set else "corpus"
    )
    step = sources.corpus_step(settings.data.source)
    if args.validation_set:
        record = build_validation_set(settings, args.out, args.validation_set)
        print(
            f"validation set {record['name']} (held-out {record['domain']}): "
            f"{record['documents']} docs {record['bytes']:,d} B"
        )
    elif step is CorpusStep.MATERIALIZE:
        manifest = materialize_dataset(settings, args.out)
        for domain, entry in manifest["domains"].items():
            print(
                f"{domain:20s} train {entry['documents']['train']:9d} docs   valid "
                f"{entry['documents']['valid']:7d} docs"
            )
    elif step is CorpusStep.BUILD:
        manifest = build_demo(settings, args.out)
        for domain, entry in manifest["domains"].items():
            print(
                f"{domain:12s} train {entry['documents']['train']:6d} docs {entry['bytes']['train']:>10,d} B   "
                f"valid {entry['documents']['valid']:5d} docs {entry['bytes']['valid']:>9,d} B"
            )
    else:
        describe_source(settings, args.out)
    return 0
