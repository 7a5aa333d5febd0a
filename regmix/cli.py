"""The `regmix` command: one sub-command per pipeline step, each owned by its module.

Modules are imported only for the command that runs, so `regmix --help` stays fast and
a CPU stage never pays for importing torch.
"""

from __future__ import annotations

import importlib
import os
import sys

# command -> ("module:function", one-line help). Each function takes argv (list[str]).
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("regmix.config:main", "validate a config file and print it with defaults filled"),
    "corpus": ("regmix.corpus:main", "build the offline demo corpus from installed packages"),
    "train-tokenizer": ("regmix.tokenizer:main", "train a byte-level BPE (or save a pretrained one) to a directory"),
    "tokenize": ("regmix.tokenization:main", "tokenize one domain split into a uint16/uint32 token file"),
    "prior": ("regmix.tokenization:prior_main", "token shares of the train splits (the prior)"),
    "mixtures": ("regmix.mixtures:main", "synthesize proxy mixtures around the prior"),
    "train-proxies": ("regmix.train:proxies_main", "train a pack of proxy models (one per mixture)"),
    "collect-proxies": ("regmix.collect.proxies:main", "gather proxy mixtures and losses into RegMix-format CSVs"),
    "import-swarm": (
        "regmix.regression.swarm_import:main",
        "check a public swarm (mixtures + metrics CSVs) and write it as a swarm of the study",
    ),
    "fit": ("regmix.regression:fit_main", "fit a regressor from mixture weights to a target loss"),
    "predict": ("regmix.regression:predict_main", "predict the target for mixtures with a fitted regressor"),
    "choose": ("regmix.choose:main", "simulate candidate mixtures, predict them and choose one by choose.rule"),
    "candidate": ("regmix.candidates:main", "write one large-model candidate mixture"),
    "train-large": ("regmix.train:large_main", "train a large model on a candidate mixture"),
    "make-tasks": ("regmix.evaluate:make_tasks_main", "generate local lm-eval tasks from held-out data"),
    "evaluate": ("regmix.evaluate:main", "run lm-evaluation-harness on a checkpoint"),
    "summary": ("regmix.summary:main", "rank candidates on the target loss and every task"),
    "collect": ("regmix.collect.database:main", "rebuild results/regmix.duckdb and Parquet exports from the files"),
    "plots": ("regmix.plots:main", "draw the report's figures"),
    "archive": ("regmix.archive:main", "write one verifiable archive of a run"),
    "verify-archive": ("regmix.archive:verify_main", "recompute every checksum of an archive"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: regmix COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`regmix COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        import regmix

        print(regmix.__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"regmix: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from regmix.container import runtime_line

    if line := runtime_line():
        print(line, file=sys.stderr)  # the job's log then shows which image ran it
    target, _ = COMMANDS[command]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except Exception as err:
        status = user_error_status(err)
        if status is None or os.environ.get("REGMIX_TRACEBACK"):
            raise  # a bug, not the user's input: the traceback is what fixes it
        print(f"regmix {command}: {error_message(err)}", file=sys.stderr)
        return status


def user_error_status(err: BaseException) -> int | None:
    """Exit status of an error a user's config or file caused (2: the config, 1: a file or
    value), or None for anything else, which is a bug and keeps its traceback."""
    from regmix.config import ConfigError

    if isinstance(err, ConfigError):
        return 2
    # BadFileError and CorruptFileError are ValueErrors; OSError covers missing, unreadable
    # and full-disk files (their messages name the path)
    if isinstance(err, (ValueError, OSError, EOFError)):
        return 1
    return None


def error_message(err: BaseException) -> str:
    """The error's own message (one line naming the key or file; a verifier's list of
    problems keeps a line each), with the path an OSError names but does not print."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
