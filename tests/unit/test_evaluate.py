"""Local lm-eval tasks from held-out documents, and lm-eval on a tiny random checkpoint."""

import json
import os
import random
from pathlib import Path

import pytest
import yaml

from regmix import evaluate as ev
from regmix.cli import main as cli_main
from regmix.settings.outputs import EvalTasksSettings, Evaluation

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

DOMAINS = ["prose", "numbers"]
DATA = {"source": {"kind": "demo"}, "valid_fraction": 0.05, "max_undecodable_fraction": 0.01}
EVAL_DEFAULTS = {
    "suite": "local",
    "tasks": [],
    "num_fewshot": [0],
    "limit": None,
    "docs_per_task": 12,
    "perplexity_docs_per_task": 12,
    "max_doc_chars": 400,
    "mc_choices": 4,
    "mc_context_chars": 80,
    "mc_continuation_chars": 40,
    "batch_size": 8,
    "log_samples": False,
    "device": "cpu",
    "threads": 1,
}


def settings(**evaluate) -> dict:
    return {"seed": 0, "domains": DOMAINS, "data": DATA, "evaluate": {**EVAL_DEFAULTS, **evaluate}, "window": 64}


def task_settings(**evaluate) -> EvalTasksSettings:
    return EvalTasksSettings.from_json(settings(**evaluate))


def _prose(rng: random.Random) -> str:
    words = "the model reads a long sentence about data mixtures and then writes another one".split()
    return " ".join(rng.choice(words) for _ in range(rng.randint(40, 80))) + "."


def _numbers(rng: random.Random) -> str:
    """One sum per line (a line-structured domain: it gets a next-line task)."""
    return "\n".join(f"{rng.randint(0, 99)} + {rng.randint(0, 99)} =" for _ in range(rng.randint(20, 40)))


def write_corpus(root: Path, n_docs: int = 30) -> Path:
    rng = random.Random(1)
    for domain, make in (("prose", _prose), ("numbers", _numbers)):
        (root / domain).mkdir(parents=True)
        lines = [json.dumps({"text": make(rng)}) for _ in range(n_docs)]
        (root / domain / "valid.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random LlamaForCausalLM with a byte-level BPE, saved as one HF directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_model")
    rng = random.Random(0)
    text = [_prose(rng) for _ in range(50)] + [_numbers(rng) for _ in range(50)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        text,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.save_pretrained(out)
    torch.manual_seed(0)
    eos = fast.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def test_make_tasks_writes_perplexity_and_choice_tasks(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    index = ev.make_tasks(task_settings(), corpus, tmp_path / "tasks")
    assert index["tasks"] == [
        "regmix_ppl_prose",
        "regmix_mc_prose",
        "regmix_ppl_numbers",
        "regmix_mc_numbers",
        "regmix_line_numbers",
    ]
    # one-line prose has no next line to choose: the index says so rather than dropping it silently
    assert list(index["skipped"]) == ["regmix_line_prose"]
    spec = yaml.safe_load((tmp_path / "tasks" / "regmix_ppl_numbers.yaml").read_text())
    data = Path(spec["dataset_kwargs"]["data_files"]["test"])
    assert data.is_absolute() and spec["output_type"] == "loglikelihood_rolling"
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines()]
    assert len(texts) == 12 and all(len(t) <= 400 for t in texts)
    held_out = [json.loads(line)["text"] for line in (corpus / "numbers" / "valid.jsonl").read_text().splitlines()]
    assert all(any(t in doc for doc in held_out) for t in texts)

    mc = yaml.safe_load((tmp_path / "tasks" / "regmix_mc_prose.yaml").read_text())
    items = [json.loads(line) for line in Path(mc["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()]
    shots = [json.loads(line) for line in Path(mc["dataset_kwargs"]["data_files"]["fewshot"]).read_text().splitlines()]
    docs = [json.loads(line)["text"] for line in (corpus / "prose" / "valid.jsonl").read_text().splitlines()]
    for item in items:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        truth = item["choices"][item["label"]]
        # the labelled choice really continues the context in one held-out document ...
        source = [doc for doc in docs if item["context"] + truth in doc]
        assert source
        # ... and the distractors come from other documents
        assert not [c for c in item["choices"] if c != truth and c in source[0]]
    # few-shot examples never share a context with a test item
    assert not {s["context"] for s in shots} & {i["context"] for i in items}
    labels = [i["label"] for i in items]
    assert len(set(labels)) > 1, "the true continuation must not always sit at the same position"


def test_next_line_items_hold_the_true_line_and_fit_the_window(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    path = corpus / "numbers" / "valid.jsonl"
    docs = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    # long lines of multi-byte characters: a cap in characters would let them overflow the window
    docs = [d.replace(" + ", " ÷ " * 12, 1) for d in docs]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    index = ev.make_tasks(task_settings(docs_per_task=40, mc_context_chars=30), corpus, tmp_path / "tasks")
    assert index["kinds"]["regmix_line_numbers"] == "next_line" and index["documents"]["regmix_line_numbers"] == 40
    items = [json.loads(line) for line in (tmp_path / "tasks/regmix_line_numbers.jsonl").read_text().splitlines()]
    assert len({(i["context"], i["choices"][i["label"]]) for i in items}) == len(items)
    for item in items:
        assert len(set(item["choices"])) == 4 and item["context"].endswith("\n") and item["context"].strip()
        assert len(item["context"]) <= 30
        assert all(len(c.encode("utf-8")) <= EVAL_DEFAULTS["mc_continuation_chars"] for c in item["choices"])
        truth = item["choices"][item["label"]]
        sources = [d for d in docs if item["context"] + truth in d]
        assert sources, item
        assert not [c for c in item["choices"] if c != truth and "\n" + c + "\n" in "\n" + sources[0] + "\n"]
    assert len({i["label"] for i in items}) > 1


def test_make_tasks_refuses_choices_longer_than_the_window(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    with pytest.raises(ValueError, match="evaluate.mc_continuation_chars"):
        ev.make_tasks(
            EvalTasksSettings.from_json({**settings(mc_continuation_chars=64), "window": 64}),
            corpus,
            tmp_path / "tasks",
        )


def test_make_tasks_is_deterministic(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    ev.make_tasks(task_settings(), corpus, tmp_path / "a")
    ev.make_tasks(task_settings(), corpus, tmp_path / "b")
    for name in ("regmix_mc_prose.jsonl", "regmix_ppl_numbers.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_make_tasks_names_a_domain_without_documents(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "numbers" / "valid.jsonl").write_text("")
    with pytest.raises(ValueError, match="'numbers'"):
        ev.make_tasks(task_settings(), corpus, tmp_path / "tasks")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no partial suite, no staging left


def test_make_tasks_replaces_an_old_suite_whole(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "regmix_ppl_gone.yaml").write_text("task: regmix_ppl_gone\n")
    ev.make_tasks(task_settings(), corpus, tmp_path / "tasks")
    assert not (tmp_path / "tasks" / "regmix_ppl_gone.yaml").exists()
    spec = yaml.safe_load((tmp_path / "tasks" / "regmix_mc_prose.yaml").read_text())
    assert (
        Path(spec["dataset_kwargs"]["data_files"]["fewshot"])
        == (tmp_path / "tasks" / "regmix_mc_prose.fewshot.jsonl").resolve()
    )


def test_make_tasks_names_a_domain_with_too_few_documents(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", n_docs=4)
    with pytest.raises(ValueError, match="'prose' has 4 held-out"):
        ev.make_tasks(task_settings(), corpus, tmp_path / "tasks")


def test_few_long_documents_still_fill_a_task(tmp_path):
    """Source files are long and few: tasks use several segments of each, interleaved."""
    corpus = write_corpus(tmp_path / "corpus", n_docs=6)
    for domain in DOMAINS:  # six documents of ~3000 characters each
        path = corpus / domain / "valid.jsonl"
        docs = [json.loads(line)["text"] for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({"text": " ".join([d] * 8)}) + "\n" for d in docs))
    index = ev.make_tasks(task_settings(docs_per_task=12), corpus, tmp_path / "tasks")
    assert index["documents"]["regmix_ppl_prose"] == 12
    assert index["documents"]["regmix_mc_prose"] == 12
    texts = [json.loads(line)["text"] for line in (tmp_path / "tasks/regmix_ppl_prose.jsonl").read_text().splitlines()]
    docs = [json.loads(line)["text"] for line in (corpus / "prose/valid.jsonl").read_text().splitlines()]
    used = {next(i for i, d in enumerate(docs) if t in d) for t in texts}
    assert len(used) == 5  # every document but the one kept for few-shot examples


def test_evaluate_runs_lm_eval_and_merges_shot_counts(tmp_path, tiny_model):
    corpus = write_corpus(tmp_path / "corpus")
    ev.make_tasks(task_settings(docs_per_task=6), corpus, tmp_path / "tasks")
    s = settings(num_fewshot=[0, 1], limit=6, log_samples=True)
    code = cli_main(
        [
            "evaluate",
            "--settings",
            json.dumps(s),
            "--model",
            str(tiny_model),
            "--tasks",
            str(tmp_path / "tasks"),
            "--out",
            str(tmp_path / "eval" / "c.json"),
            "--samples-out",
            str(tmp_path / "eval" / "c.samples.jsonl"),
        ]
    )
    assert code == 0
    out = json.loads((tmp_path / "eval" / "c.json").read_text())
    assert out["num_fewshot"] == [0, 1]
    zero, one = out["runs"]["0"]["results"], out["runs"]["1"]["results"]
    choice = {"regmix_mc_prose", "regmix_mc_numbers", "regmix_line_numbers"}
    assert set(zero) == {"regmix_ppl_prose", "regmix_ppl_numbers", *choice}
    # perplexity has no shots: it runs once, at the first shot count
    assert set(one) == choice
    assert out["runs"]["1"]["n-shot"]["regmix_mc_prose"] == 1
    # a random model over a ~300-token vocabulary: about log2(320) bits per token, > 1 bit per byte
    assert zero["regmix_ppl_prose"]["bits_per_byte,none"] > 1.0
    assert 0.0 <= zero["regmix_mc_prose"]["acc,none"] <= 1.0
    assert isinstance(zero["regmix_mc_prose"]["acc_stderr,none"], float)
    assert out["provenance"]["settings"] == s
    samples = [json.loads(line) for line in (tmp_path / "eval" / "c.samples.jsonl").read_text().splitlines()]
    assert {(r["shots"], r["task"]) for r in samples} >= {(0, "regmix_mc_prose"), (1, "regmix_mc_numbers")}


def test_evaluate_rejects_a_directory_that_is_not_a_checkpoint(tmp_path):
    code = cli_main(
        [
            "evaluate",
            "--settings",
            json.dumps(settings()),
            "--model",
            str(tmp_path),
            "--tasks",
            str(tmp_path),
            "--out",
            str(tmp_path / "x.json"),
        ]
    )
    assert code == 1 and not (tmp_path / "x.json").exists()


def test_shot_plan_runs_perplexity_once_and_registry_tasks_at_every_count(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    ev.make_tasks(task_settings(), corpus, tmp_path / "tasks")
    plan = ev._task_plan(Evaluation.from_dict({**EVAL_DEFAULTS, "num_fewshot": [5, 0, 1]}), tmp_path / "tasks")
    assert list(plan) == [0, 1, 5]
    assert plan[0] == [
        "regmix_ppl_prose",
        "regmix_mc_prose",
        "regmix_ppl_numbers",
        "regmix_mc_numbers",
        "regmix_line_numbers",
    ]
    assert plan[1] == plan[5] == ["regmix_mc_prose", "regmix_mc_numbers", "regmix_line_numbers"]
    paper = ev._task_plan(
        Evaluation.from_dict({**EVAL_DEFAULTS, "suite": "lm_eval", "tasks": ["piqa", "sciq"], "num_fewshot": [0, 5]}),
        None,
    )
    assert paper == {0: ["piqa", "sciq"], 5: ["piqa", "sciq"]}
    with pytest.raises(FileNotFoundError, match="tasks.json"):
        ev._task_plan(Evaluation.from_dict(EVAL_DEFAULTS), tmp_path)
