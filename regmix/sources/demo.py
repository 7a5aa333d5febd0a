"""The demo kind: R/corpus/<domain>/<split>.jsonl, which `regmix corpus` builds from the
files the install itself puts on disk (regmix.corpus); a validation-only set is the
held-out slice of a demo domain that is not trained on (CorpusDir.validation_set(name))."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from regmix.layout import CorpusDir
from regmix.settings import ConfigError
from regmix.sources.base import CorpusStep, ReadStats, Record, SourceKind, Spec, jsonl_records

# the domains `regmix corpus` builds from installed packages
DEMO_DOMAINS = ("code", "docstrings", "docs", "structured", "legal", "arithmetic")


class Demo(SourceKind):
    name = "demo"
    keys = frozenset()
    validation_keys = frozenset({"domain"})
    compressed_corpus = False
    builds_validation_sets = True

    def corpus_step(self, spec: Spec) -> CorpusStep:
        return CorpusStep.BUILD

    def check(self, spec: Spec, domains: list[str]) -> None:
        unknown = sorted(set(domains) - set(DEMO_DOMAINS))
        if unknown:
            raise ConfigError(
                f"config key 'domains': {unknown} not built by the demo source (demo domains: {list(DEMO_DOMAINS)})"
            )

    def check_validation_set(self, spec: Spec, key: str, domains: list[str]) -> None:
        if spec["domain"] not in DEMO_DOMAINS:
            raise ConfigError(
                f"config key '{key}.domain' = {spec['domain']!r}: not a demo domain (demo domains: "
                f"{list(DEMO_DOMAINS)})"
            )
        if spec["domain"] in domains:
            raise ConfigError(
                f"config key '{key}.domain' = {spec['domain']!r}: a training domain; a validation-only set "
                "must be text no mixture trains on"
            )

    def files(self, spec: Spec, domain: str, split: str) -> list[str]:
        raise ValueError("the demo source reads the corpus folder: pass corpus_dir")

    def records(self, spec: Spec, domain: str, split: str, stats: ReadStats) -> tuple[Iterator[Record], bool]:
        raise ValueError("the demo source reads the corpus folder: pass corpus_dir")

    def validation_files(self, spec: Spec, name: str, corpus_dir: str | Path) -> list[str]:
        return [CorpusDir(str(corpus_dir)).validation_set(name)]

    def validation_records(
        self, spec: Spec, name: str, corpus_dir: str | Path | None, stats: ReadStats
    ) -> Iterator[Record]:
        label = f"validation set {name!r}"
        if corpus_dir is None:
            raise ValueError(f"{label}: a demo set reads the corpus folder: pass corpus_dir")
        path = CorpusDir(str(corpus_dir)).validation_set(name)
        if not Path(path).is_file():
            raise ValueError(f"{label}: documents file {path!r} does not exist (regmix corpus --validation-set)")
        stats.sources.append(path)
        return jsonl_records([path], "text")


KIND = Demo()
