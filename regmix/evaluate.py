"""Downstream evaluation with lm-evaluation-harness.

`make-tasks` turns held-out (valid split) documents into local lm-eval tasks, per domain:
- `regmix_ppl_<domain>`: perplexity / bits per byte (`loglikelihood_rolling`);
- `regmix_mc_<domain>`: pick the true continuation of a document among continuations cut
  from other held-out documents of the same domain (coherence, not telling domains apart);
- `regmix_line_<domain>`: pick the true next line of a document among lines of other
  held-out documents of the same domain (a line-structured domain: code, data, arithmetic).
Every choice is capped in UTF-8 bytes below the model's window: a byte-level BPE never
makes more tokens than bytes, and lm-eval refuses a continuation longer than the window.
`evaluate` runs `lm_eval.simple_evaluate` on a Hugging Face checkpoint for every
configured shot count and writes lm-eval's own result dicts to one fixed path (the lm-eval
CLI would add a timestamp to the name).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from regmix import files, sources
from regmix.settings import parse_settings
from regmix.settings.outputs import EvalTasksSettings, EvaluateSettings, Evaluation, TaskBuilding

TASKS_INDEX = "tasks.json"
PERPLEXITY = "perplexity"
MULTIPLE_CHOICE = "multiple_choice"
NEXT_LINE = "next_line"
# a line shorter than this (stripped) says too little to be a question or a distractor
MIN_LINE_CHARS = 4


# ---------------------------------------------------------------------------- tasks


def _split_point(text: str, context_chars: int) -> int | None:
    """Index of a whitespace near `context_chars` where the continuation starts."""
    if len(text) < 8:
        return None
    target = min(context_chars, len(text) // 2)
    for offset in range(0, target):
        for pos in (target - offset, target + offset):
            if 0 < pos < len(text) - 1 and text[pos].isspace() and not text[pos - 1].isspace():
                return pos
    return None


def _segments(text: str, size: int) -> list[str]:
    """Consecutive pieces of at most `size` characters, cut after whitespace where possible."""
    pieces = []
    while text.strip():
        cut = len(text) if len(text) <= size else (text.rfind(" ", size // 2, size) + 1 or size)
        if text[:cut].strip():
            pieces.append(text[:cut])
        text = text[cut:]
    return pieces


def _interleave(docs: list[list[str]], limit: int) -> list[tuple[int, str]]:
    """(document number, segment) taking each document's first segment, then each second, ...

    A long document cannot crowd out the others, and a domain with few held-out
    documents (source files are long) still yields `limit` segments.
    """
    out = []
    for depth in range(max(map(len, docs), default=0)):
        out += [(d, segs[depth]) for d, segs in enumerate(docs) if depth < len(segs)]
    return out[:limit]


def _choice_items(
    segments: list[tuple[int, str]], pool: list[tuple[int, str]], ev: TaskBuilding, rng: random.Random
) -> list[dict]:
    """Multiple-choice items: a segment's context, its true continuation, and continuations
    cut from segments of *other* documents in `pool` (same domain) as distractors."""

    def cut(text: str) -> tuple[str, str] | None:
        pos = _split_point(text, ev.mc_context_chars)
        if pos is None:
            return None
        context, continuation = (
            text[max(0, pos - ev.mc_context_chars) : pos],
            _cap_bytes(text[pos : pos + ev.mc_continuation_chars], ev.mc_continuation_chars),
        )
        return (context, continuation) if context.strip() and continuation.strip() else None

    candidates = [(doc, c) for doc, text in pool if (c := cut(text))]
    items = []
    for doc, text in segments:
        if not (piece := cut(text)):
            continue
        context, continuation = piece
        others = sorted({c[1] for d, c in candidates if d != doc and c[1] != continuation})
        if len(others) < ev.mc_choices - 1:
            continue
        choices = [continuation, *rng.sample(others, ev.mc_choices - 1)]
        rng.shuffle(choices)
        items.append({"context": context, "choices": choices, "label": choices.index(continuation)})
    return items


def _cap_bytes(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` UTF-8 bytes (never inside a character)."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def _line_context(before: list[str], max_chars: int) -> str:
    """The last whole lines of `before` that fit in `max_chars` (ending in a newline); the
    end of the last line alone when even that one is longer."""
    taken: list[str] = []
    size = 0
    for line in reversed(before):
        if size + len(line) + 1 > max_chars:
            break
        taken.insert(0, line)
        size += len(line) + 1
    if not taken:
        return before[-1][-(max_chars - 1) :] + "\n"
    return "\n".join(taken) + "\n"


def _line_items(
    docs: list[tuple[int, str]], pool: list[tuple[int, str]], ev: TaskBuilding, limit: int, rng: random.Random
) -> list[dict]:
    """Next-line items: the lines before a cut as context, the true next line, and lines of
    *other* documents in `pool` (same domain) as distractors; at most `limit`, taking each
    document's first item, then each second, ... Context and choices are capped in bytes."""
    cap = ev.mc_continuation_chars

    def lines(text: str) -> list[str]:
        return text.split("\n")

    pool_lines = sorted(
        {(d, _cap_bytes(line, cap)) for d, text in pool for line in lines(text) if len(line.strip()) >= MIN_LINE_CHARS}
    )
    per_doc = []
    for doc, text in docs:
        rows = lines(text)
        positions = [
            i for i in range(1, len(rows)) if len(rows[i].strip()) >= MIN_LINE_CHARS and "".join(rows[:i]).strip()
        ]
        rng.shuffle(positions)
        per_doc.append((doc, rows, positions, {_cap_bytes(line, cap).strip() for line in rows}))
    items: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for depth in range(max((len(p[2]) for p in per_doc), default=0)):
        for doc, rows, positions, own in per_doc:
            if depth >= len(positions) or len(items) >= limit:
                continue
            i = positions[depth]
            truth = _cap_bytes(rows[i], cap)
            context = _line_context(rows[:i], ev.mc_context_chars)
            # a distractor never occurs in the item's own document (it could be a right answer)
            others = sorted({line for d, line in pool_lines if d != doc and line.strip() not in own})
            # lm-eval moves a context's trailing whitespace into the continuation and refuses an
            # empty context, so a context of blank lines alone is no item
            if not context.strip() or len(others) < ev.mc_choices - 1 or (context, truth) in seen:
                continue
            seen.add((context, truth))
            choices = [truth, *rng.sample(others, ev.mc_choices - 1)]
            rng.shuffle(choices)
            items.append({"context": context, "choices": choices, "label": choices.index(truth)})
    return items


def _perplexity_yaml(task: str, data: Path) -> dict:
    return {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "text",
        "num_fewshot": 0,
        "metric_list": [
            {"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "byte_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
            {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False},
        ],
        "metadata": {"version": 1.0},
    }


def _choice_yaml(task: str, data: Path, fewshot: Path) -> dict:
    return {
        "task": task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve()), "fewshot": str(fewshot.resolve())}},
        "test_split": "test",
        "fewshot_split": "fewshot",
        "output_type": "multiple_choice",
        # feature names, not Jinja templates: lm-eval then reads the field as it is; a
        # template is compiled anew for every item and was a fifth of an evaluation's time
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        # continuations keep their own leading whitespace; lm-eval must not add a space
        "target_delimiter": "",
        "fewshot_delimiter": "\n\n",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    files.write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def make_tasks(settings: EvalTasksSettings, corpus_dir: str | Path, out_dir: str | Path) -> dict:
    """Write local lm-eval tasks and `tasks.json`; return the index."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # written to a staging folder and swapped in whole, so a failure leaves no partial suite;
    # the YAML files already name the final paths
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    staging.chmod(0o755)
    try:
        index = _write_tasks(settings, corpus_dir, out_dir, staging)
    except BaseException:
        shutil.rmtree(staging)
        raise
    files.replace_dir(staging, out_dir)
    return index


def _write_tasks(settings: EvalTasksSettings, corpus_dir: Path, out_dir: Path, staging: Path) -> dict:
    ev = settings.tasks
    if ev.mc_continuation_chars >= settings.window:
        raise ValueError(
            f"config key 'evaluate.mc_continuation_chars' = {ev.mc_continuation_chars}: a choice must fit the "
            f"large model's window of {settings.window} tokens (choices are capped in bytes, at most one token each)"
        )
    index: dict[str, Any] = {"tasks": [], "kinds": {}, "domains": {}, "documents": {}, "skipped": {}}
    for domain in settings.domains:
        docs = [t for t in sources.iter_documents(settings.reading, corpus_dir, domain, "valid") if t.strip()]
        if not docs:
            raise ValueError(f"domain {domain!r} has no held-out (valid) documents in {corpus_dir}")
        rng = random.Random(f"{settings.seed}:{domain}")
        rng.shuffle(docs)
        # few-shot examples come from documents that no test item uses (no leaked answers)
        n_fewshot = max(1, len(docs) // 8)
        if len(docs) < n_fewshot + ev.mc_choices:
            raise ValueError(
                f"domain {domain!r} has {len(docs)} held-out documents; the local tasks need at least "
                f"{n_fewshot + ev.mc_choices} (evaluate.mc_choices = {ev.mc_choices} for distinct choices, "
                f"{n_fewshot} for few-shot examples)"
            )
        size = ev.max_doc_chars
        fewshot_docs = [_segments(t, size) for t in docs[:n_fewshot]]
        test_docs = [_segments(t, size) for t in docs[n_fewshot:]]
        segments = _interleave(test_docs, ev.docs_per_task)
        texts = [{"text": text} for _, text in _interleave(test_docs, ev.perplexity_docs_per_task)]
        ppl_task = f"regmix_ppl_{domain}"
        _write_jsonl(staging / f"{ppl_task}.jsonl", texts)
        files.write_yaml(staging / f"{ppl_task}.yaml", _perplexity_yaml(ppl_task, out_dir / f"{ppl_task}.jsonl"))

        mc_task = f"regmix_mc_{domain}"
        test_pool = [(d, text) for d, segs in enumerate(test_docs) for text in segs]
        items = _choice_items(segments, test_pool, ev, rng)
        if len(items) < min(len(segments), ev.mc_choices):
            raise ValueError(
                f"domain {domain!r}: only {len(items)} held-out segments can be cut into context and continuation "
                f"with {ev.mc_choices - 1} distractors from other documents"
            )
        # a few-shot example shows only its true continuation, so distractors may come from anywhere
        shot_segments = _interleave(fewshot_docs, 16)
        shot_pool = [(-1 - d, text) for d, segs in enumerate(fewshot_docs) for text in segs] + test_pool
        shots = _choice_items(shot_segments, shot_pool, ev, rng)
        if not shots:
            raise ValueError(f"domain {domain!r}: no few-shot example could be cut from {n_fewshot} held-out documents")
        _write_jsonl(staging / f"{mc_task}.jsonl", items)
        _write_jsonl(staging / f"{mc_task}.fewshot.jsonl", shots)
        files.write_yaml(
            staging / f"{mc_task}.yaml",
            _choice_yaml(mc_task, out_dir / f"{mc_task}.jsonl", out_dir / f"{mc_task}.fewshot.jsonl"),
        )
        built = [(ppl_task, PERPLEXITY, len(texts)), (mc_task, MULTIPLE_CHOICE, len(items))]

        line_task = f"regmix_line_{domain}"
        whole = list(enumerate(docs[n_fewshot:]))
        line_items = _line_items(whole, whole, ev, ev.docs_per_task, rng)
        # like the continuation task's shots: from the few-shot documents, distractors from anywhere
        shot_docs = [(-1 - d, t) for d, t in enumerate(docs[:n_fewshot])]
        line_shots = _line_items(shot_docs, shot_docs + whole, ev, 16, rng)
        if len(line_items) >= ev.mc_choices and line_shots:
            _write_jsonl(staging / f"{line_task}.jsonl", line_items)
            _write_jsonl(staging / f"{line_task}.fewshot.jsonl", line_shots)
            files.write_yaml(
                staging / f"{line_task}.yaml",
                _choice_yaml(line_task, out_dir / f"{line_task}.jsonl", out_dir / f"{line_task}.fewshot.jsonl"),
            )
            built.append((line_task, NEXT_LINE, len(line_items)))
        else:  # prose without line breaks has no next line to choose: said in the index and the log
            index["skipped"][line_task] = (
                f"{len(line_items)} next-line items and {len(line_shots)} few-shot examples from the held-out "
                f"documents of {domain!r} (needs {ev.mc_choices} and 1: documents of several lines of at least "
                f"{MIN_LINE_CHARS} characters)"
            )
        for task, kind, n in built:
            index["tasks"].append(task)
            index["kinds"][task] = kind
            index["domains"][task] = domain
            index["documents"][task] = n
    index["provenance"] = files.provenance(settings.raw, [corpus_dir])
    files.write_json(staging / TASKS_INDEX, index)
    return index


def make_tasks_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix make-tasks", description=make_tasks.__doc__)
    parser.add_argument("--settings", required=True, help="JSON of stage_settings(config, 'eval_tasks')")
    parser.add_argument("--corpus", required=True, help="corpus directory (R/corpus)")
    parser.add_argument("--out", required=True, help="task directory (R/eval_tasks)")
    args = parser.parse_args(argv)
    index = make_tasks(EvalTasksSettings.from_json(parse_settings(args.settings)), args.corpus, args.out)
    print(f"wrote {len(index['tasks'])} tasks to {args.out}: {', '.join(index['tasks'])}")
    for task, why in index["skipped"].items():
        print(f"no task {task}: {why}")
    return 0


# ------------------------------------------------------------------------- evaluate


def _device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _task_plan(ev: Evaluation, tasks_dir: Path | None) -> dict[int, list[str]]:
    """Tasks to run at each shot count (perplexity has no shots: only at the first)."""
    shots = sorted(set(ev.num_fewshot))
    if not shots:
        raise ValueError("evaluate.num_fewshot is empty: give at least one shot count")
    if ev.suite == "lm_eval":
        if not ev.tasks:
            raise ValueError("evaluate.tasks is empty: suite 'lm_eval' needs task names")
        return {n: list(ev.tasks) for n in shots}
    if tasks_dir is None:
        raise ValueError("evaluate.suite is 'local': give --tasks (the directory written by make-tasks)")
    index_path = tasks_dir / TASKS_INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"task index not found: {index_path} (run `regmix make-tasks` first)")
    index = files.read_json(index_path)
    plan = {}
    for i, n in enumerate(shots):
        plan[n] = [t for t in index["tasks"] if i == 0 or index["kinds"][t] != PERPLEXITY]
    return {n: tasks for n, tasks in plan.items() if tasks}


def evaluate(
    settings: EvaluateSettings,
    model_dir: str | Path,
    tasks_dir: str | Path | None,
    out: str | Path,
    tokenizer_dir: str | Path | None = None,
    samples_out: str | Path | None = None,
) -> dict:
    """Run lm-eval on a checkpoint at every shot count; write one JSON of lm-eval's results."""
    import lm_eval
    import lm_eval.utils
    from lm_eval.tasks import TaskManager

    ev = settings.evaluate
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"not a Hugging Face checkpoint directory (no config.json): {model_dir}")
    for weights_file in sorted(model_dir.glob("*.safetensors")):
        files.check_safetensors(weights_file, "retrain the model (its rule reruns when the file is removed)")
    tokenizer_dir = Path(tokenizer_dir).resolve() if tokenizer_dir else model_dir
    if ev.log_samples and samples_out is None:
        raise ValueError("evaluate.log_samples is true: give --samples-out for the per-sample log")
    tasks_dir = Path(tasks_dir).resolve() if tasks_dir else None
    plan = _task_plan(ev, tasks_dir)
    if ev.suite == "local":
        task_manager = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    else:
        task_manager = TaskManager()
    device = _device(ev.device)
    if device == "cpu":
        import torch

        torch.set_num_threads(ev.threads)
    runs, samples = {}, []
    for shots, tasks in plan.items():
        result = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={model_dir},tokenizer={tokenizer_dir},dtype=float32",
            tasks=tasks,
            num_fewshot=shots,
            batch_size=ev.batch_size,
            device=device,
            limit=ev.limit,
            log_samples=ev.log_samples,
            task_manager=task_manager,
            random_seed=settings.seed,
            numpy_random_seed=settings.seed,
            torch_random_seed=settings.seed,
            fewshot_random_seed=settings.seed,
        )
        if result is None:  # only non-zero ranks of a distributed run return None
            raise RuntimeError("lm_eval.simple_evaluate returned no results")
        for task, task_samples in (result.pop("samples", None) or {}).items():
            # `arguments` repeats the context once per choice: the item itself is in `doc`
            samples += [
                {"shots": shots, "task": task, **{k: v for k, v in s.items() if k != "arguments"}} for s in task_samples
            ]
        # round-trip through lm-eval's own serializer so the stored dict is what it would write
        runs[str(shots)] = json.loads(json.dumps(result, default=lm_eval.utils.handle_non_serializable))
    inputs = [model_dir] + ([tasks_dir] if tasks_dir else [])
    output = {
        "model": str(model_dir),
        "suite": ev.suite,
        "num_fewshot": sorted(plan),
        "runs": runs,
        "provenance": files.provenance(settings.raw, inputs),
    }
    if samples_out is not None:
        with files.atomic_path(samples_out) as tmp:
            with tmp.open("w") as handle:
                for row in samples:
                    handle.write(json.dumps(row, default=lm_eval.utils.handle_non_serializable) + "\n")
    files.write_json(out, output)
    return output


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="regmix evaluate", description=evaluate.__doc__)
    parser.add_argument("--settings", required=True, help="JSON of stage_settings(config, 'evaluate')")
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory (R/large/C/model)")
    parser.add_argument("--tasks", help="local task directory from make-tasks (suite local)")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    parser.add_argument("--out", required=True, help="result JSON (R/eval/C.json)")
    parser.add_argument("--samples-out", help="per-sample JSONL log (needed when evaluate.log_samples)")
    args = parser.parse_args(argv)
    settings = EvaluateSettings.from_json(parse_settings(args.settings))
    output = evaluate(settings, args.model, args.tasks, args.out, args.tokenizer, args.samples_out)
    for shots, run in output["runs"].items():
        for task, metrics in sorted(run["results"].items()):
            shown = {k.split(",")[0]: v for k, v in metrics.items() if "," in k and "stderr" not in k}
            print(
                f"{shots}-shot {task}: " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items() if isinstance(v, float))
            )
    return 0
