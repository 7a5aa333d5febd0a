"""Where every output of a run lives, relative to `results_dir`: the one statement of it.

The rules' inputs and outputs, the trainer, the archive and the sources all take paths
from here, so renaming an output is one edit. Paths are strings (what Snakemake's
`input:`/`output:` take); a name may be a wildcard such as "{candidate}" or a glob "*",
so `Layout("")` gives the patterns the archive packs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def _join(*parts: str | os.PathLike) -> str:
    return os.path.join(*[os.fspath(p) for p in parts if os.fspath(p) not in ("", ".")]) or "."


@dataclass(frozen=True)
class RunDir:
    """What one training run (a proxy or a large model) writes into its folder."""

    root: str

    @property
    def losses(self) -> str:
        return _join(self.root, "losses.json")

    @property
    def train_log(self) -> str:
        return _join(self.root, "train_log.jsonl")

    @property
    def model(self) -> str:
        return _join(self.root, "model")

    @property
    def state(self) -> str:
        """Resumable state (checkpoints and the running log); removed when the run is done."""
        return _join(self.root, ".state")


@dataclass(frozen=True)
class CorpusDir:
    """`regmix corpus`'s folder: a manifest, and one file per domain split when it copies data."""

    root: str

    @property
    def manifest(self) -> str:
        return _join(self.root, "manifest.json")

    def file(self, domain: str, split: str, compressed: bool) -> str:
        return _join(self.root, domain, f"{split}.jsonl.zst" if compressed else f"{split}.jsonl")

    def validation_set(self, name: str) -> str:
        """A demo validation-only set's documents (the `-` keeps it apart from any domain's folder)."""
        return _join(self.root, "validation-sets", f"{name}.jsonl")


@dataclass(frozen=True)
class TokenDir:
    """Token files and their sidecars, one pair per domain and split, plus the prior."""

    root: str

    def tokens(self, domain: str, split: str) -> str:
        return _join(self.root, domain, f"{split}.bin")

    def sidecar(self, domain: str, split: str) -> str:
        return _join(self.root, domain, f"{split}.json")

    @property
    def prior(self) -> str:
        return _join(self.root, "prior.yaml")

    @property
    def token_counts(self) -> str:
        return _join(self.root, "token_counts.json")


@dataclass(frozen=True)
class SwarmDir:
    """An imported swarm (`regmix import-swarm`): RegMix-format CSVs in the study's domains,
    and a record of where they came from and what the import changed."""

    root: str

    @property
    def mixtures(self) -> str:
        return _join(self.root, "mixtures.csv")

    @property
    def losses(self) -> str:
        return _join(self.root, "losses.csv")

    @property
    def source(self) -> str:
        return _join(self.root, "source.json")


@dataclass(frozen=True)
class RegressionDir:
    """`regmix fit`'s folder: one model's files, and a folder like it per extra target."""

    root: str

    def file(self, name: str) -> str:
        """model.pkl, cv.json, cv_predictions.csv, settings.json or pred_vs_true.png."""
        return _join(self.root, name)

    def target(self, slug: str) -> RegressionDir:
        """The folder of one more target of `regression.targets` (slug: `regmix.targets.target_slug`)."""
        return RegressionDir(_join(self.root, "targets", slug))


@dataclass(frozen=True)
class ParquetDir:
    """`regmix collect`'s Parquet copies of the database: one file per table and view."""

    root: str

    def table(self, name: str) -> str:
        return _join(self.root, f"{name}.parquet")


@dataclass(frozen=True)
class Layout:
    """Every output path of a run under `results_dir`."""

    results_dir: str

    def _path(self, *parts: str) -> str:
        return _join(self.results_dir, *parts)

    # stages 1-3: corpus, tokenizer, tokens and the prior
    @property
    def corpus(self) -> CorpusDir:
        return CorpusDir(self._path("corpus"))

    @property
    def tokenizer(self) -> str:
        return self._path("tokenizer")

    @property
    def data(self) -> TokenDir:
        return TokenDir(self._path("data"))

    @property
    def prior(self) -> str:
        return self.data.prior

    @property
    def token_counts(self) -> str:
        return self.data.token_counts

    # stage 4: proxy mixtures
    @property
    def mixtures_dir(self) -> str:
        return self._path("mixtures")

    def mixture(self, mix: str) -> str:
        return self._path("mixtures", f"{mix}.yaml")

    @property
    def mixtures_table(self) -> str:
        return self._path("mixtures", "mixtures.csv")

    # stage 5-6: proxies and their RegMix-format tables
    @property
    def proxies_dir(self) -> str:
        return self._path("proxies")

    def proxy(self, mix: str) -> RunDir:
        return RunDir(self._path("proxies", mix))

    def proxy_losses(self, mix: str) -> str:
        return self.proxy(mix).losses

    @property
    def proxy_mixtures_csv(self) -> str:
        return self._path("proxies", "mixtures.csv")

    @property
    def proxy_losses_csv(self) -> str:
        return self._path("proxies", "losses.csv")

    # imported swarms: someone else's (or an earlier study's) proxy runs
    @property
    def swarms_dir(self) -> str:
        return self._path("swarms")

    def swarm(self, name: str) -> SwarmDir:
        return SwarmDir(self._path("swarms", name))

    # stages 7-8: regression and the chosen mixture
    @property
    def regression_dir(self) -> str:
        return self._path("regression")

    def regression(self, name: str) -> str:
        """A file of the regression folder: model.pkl, cv.json, cv_predictions.csv, settings.json, pred_vs_true.png."""
        return RegressionDir(self.regression_dir).file(name)

    def regression_target(self, slug: str, name: str) -> str:
        """The same files for one more target of `regression.targets` (slug: `regmix.targets.target_slug`)."""
        return RegressionDir(self.regression_dir).target(slug).file(name)

    @property
    def chosen_dir(self) -> str:
        return self._path("chosen")

    @property
    def chosen(self) -> str:
        return self._path("chosen", "regmix.yaml")

    @property
    def topk(self) -> str:
        return self._path("chosen", "topk.csv")

    @property
    def chosen_plot(self) -> str:
        return self._path("chosen", "weights.png")

    # stages 9-10: candidates, large models, evaluation
    @property
    def candidates_dir(self) -> str:
        return self._path("candidates")

    def candidate(self, candidate: str) -> str:
        return self._path("candidates", f"{candidate}.yaml")

    def large(self, candidate: str) -> RunDir:
        return RunDir(self._path("large", candidate))

    def large_model(self, candidate: str) -> str:
        return self.large(candidate).model

    def large_losses(self, candidate: str) -> str:
        return self.large(candidate).losses

    @property
    def eval_tasks(self) -> str:
        return self._path("eval_tasks")

    @property
    def eval_dir(self) -> str:
        return self._path("eval")

    def eval(self, candidate: str) -> str:
        return self._path("eval", f"{candidate}.json")

    def eval_samples(self, candidate: str) -> str:
        return self._path("eval", f"{candidate}.samples.jsonl")

    # stage 11 and the evidence
    @property
    def database(self) -> str:
        return self._path("regmix.duckdb")

    @property
    def parquet_dir(self) -> str:
        return self._path("db")

    @property
    def parquet(self) -> ParquetDir:
        return ParquetDir(self.parquet_dir)

    @property
    def summary_md(self) -> str:
        return self._path("summary.md")

    @property
    def summary_csv(self) -> str:
        return self._path("summary.csv")

    @property
    def figures_dir(self) -> str:
        return self._path("figures")

    def figure(self, name: str) -> str:
        return self._path("figures", name)

    @property
    def report(self) -> str:
        return self._path("report.html")

    @property
    def archive(self) -> str:
        return self._path("archive", "regmix-run.tar.gz")

    def log(self, group: str, job: str | None = None) -> str:
        """A job's log: logs/<group>.log for a one-job rule, logs/<group>/<job>.log otherwise."""
        return self._path("logs", f"{group}.log") if job is None else self._path("logs", group, f"{job}.log")

    @property
    def logs_dir(self) -> str:
        return self._path("logs")
