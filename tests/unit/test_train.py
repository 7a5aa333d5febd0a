"""The trainer: determinism, packing = separate runs, HF export, schedules, bad input, DDP."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from regmix.settings import ConfigError
from regmix.settings.train import TrainSettings
from regmix.train import learning_rate, train
from tests.helpers import REPO_DIR
from tests.helpers.training import (
    DOMAINS,
    SEQ_LEN,
    domain_tokens,
    make_workspace,
    run,
    settings,
    train_losses,
    write_tokens,
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict:
    return make_workspace(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def packed(ws, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed")
    run(ws, out, ["mix_0000", "mix_0001", "mix_0002"])
    return out


def test_outputs_and_learning(ws, packed):
    result = json.loads((packed / "mix_0001" / "losses.json").read_text())
    assert set(result["val_loss"]) == set(DOMAINS)  # every domain, including weight-0 ones
    assert result["mix_id"] == "mix_0001" and result["weights"]["gamma"] == pytest.approx(0.8)
    assert result["tokens_seen"] == 12 * 8 * SEQ_LEN and result["steps"] == 12
    assert result["model"]["vocab_size"] % 64 == 0 and result["model"]["parameters"]["non_embedding"] > 0
    log = [json.loads(line) for line in (packed / "mix_0001" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6, 9, 12]
    assert set(log[1]["val_loss"]) == set(DOMAINS)  # eval_every = 6
    # an untrained model is near ln(vocab); training lowers the loss below it
    assert log[-1]["loss"] < math.log(result["model"]["vocab_size"]) - 0.5
    # the mixture shapes the losses: mix_0001 (80% gamma) beats mix_0000 (no gamma) on gamma
    other = json.loads((packed / "mix_0000" / "losses.json").read_text())
    assert result["val_loss"]["gamma"] < other["val_loss"]["gamma"]
    assert not (packed / "mix_0001" / ".state").exists()  # resumable state removed once complete


def test_same_seed_bit_identical(ws, packed, tmp_path):
    again = run(ws, tmp_path, ["mix_0000", "mix_0001", "mix_0002"])
    for result, mix_id in zip(again, ["mix_0000", "mix_0001", "mix_0002"], strict=False):
        first = json.loads((packed / mix_id / "losses.json").read_text())
        assert result["val_loss"] == first["val_loss"]
        assert train_losses(tmp_path / mix_id) == train_losses(packed / mix_id)


def test_packed_equals_separate_runs(ws, packed, tmp_path):
    for mix_id in ["mix_0000", "mix_0001", "mix_0002"]:
        alone = run(ws, tmp_path / mix_id, [mix_id])[0]
        together = json.loads((packed / mix_id / "losses.json").read_text())
        for domain in DOMAINS:
            assert alone["val_loss"][domain] == pytest.approx(together["val_loss"][domain], rel=1e-4)
        np.testing.assert_allclose(train_losses(tmp_path / mix_id / mix_id), train_losses(packed / mix_id), rtol=1e-4)


def test_hf_checkpoint_gives_the_packed_validation_loss(ws, packed):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from regmix.data import validation_windows

    model_dir = packed / "mix_0002" / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert AutoTokenizer.from_pretrained(model_dir).eos_token == "<|endoftext|>"
    cfg = model.config
    assert (cfg.tie_word_embeddings, cfg.max_position_embeddings, cfg.rms_norm_eps, cfg.eos_token_id) == (
        False,
        SEQ_LEN,
        1e-5,
        0,
    )
    windows = validation_windows(ws["data"], DOMAINS, 4, SEQ_LEN)
    expected = json.loads((packed / "mix_0002" / "losses.json").read_text())["val_loss"]
    for domain, tokens in windows.items():
        ids = torch.from_numpy(tokens)
        with torch.no_grad():
            logits = model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()
        assert loss == pytest.approx(expected[domain], rel=1e-4)


def test_gradient_accumulation_matches_full_batch(ws, tmp_path):
    full = run(ws, tmp_path / "full", ["mix_0002"], micro_batch=8)[0]
    accumulated = run(ws, tmp_path / "acc", ["mix_0002"], micro_batch=2)[0]
    for domain in DOMAINS:
        assert accumulated["val_loss"][domain] == pytest.approx(full["val_loss"][domain], rel=1e-4)


def test_bf16_autocast_path_trains_close_to_float32(ws, packed, tmp_path):
    """The GPU precision path (bf16 autocast, bf16 logits in the chunked loss) run on the CPU."""
    bf16 = run(ws, tmp_path, ["mix_0002"], dtype="bfloat16")[0]
    fp32 = json.loads((packed / "mix_0002" / "losses.json").read_text())
    for domain in DOMAINS:
        assert bf16["val_loss"][domain] == pytest.approx(fp32["val_loss"][domain], rel=0.05)


def test_learning_rate_schedules():
    base = TrainSettings.from_json(settings(), "proxy").hp
    hp = dataclasses.replace(base, warmup_steps=10, steps=110, lr=1e-3, min_lr=1e-5, schedule="cosine")
    assert learning_rate(0, hp) == pytest.approx(1e-4)
    assert learning_rate(9, hp) == pytest.approx(1e-3)
    assert learning_rate(109, hp) == pytest.approx(1e-5)
    assert 1e-5 < learning_rate(60, hp) < 1e-3
    assert learning_rate(109, dataclasses.replace(hp, schedule="constant")) == 1e-3


def test_settings_missing_a_hyper_parameter_names_it():
    broken = settings()
    del broken["proxy"]["grad_clip"]
    with pytest.raises(ConfigError, match=r"'proxy'.*grad_clip"):
        TrainSettings.from_json(broken, "proxy")
    with pytest.raises(ConfigError, match="'model'"):
        TrainSettings.from_json({k: v for k, v in settings().items() if k != "model"}, "proxy")


def test_non_finite_loss_names_the_step_and_writes_nothing(ws, tmp_path):
    with pytest.raises(ValueError, match=r"non-finite training loss at step \d+"):
        run(ws, tmp_path, ["mix_0000"], lr=1e30, grad_clip=0.0)
    assert not (tmp_path / "mix_0000" / "losses.json").exists()


def test_too_few_valid_tokens_names_the_domain(tmp_path):
    ws = make_workspace(tmp_path, valid_tokens=100)
    with pytest.raises(ValueError, match="domain 'alpha'.*valid"):
        run(ws, tmp_path / "out", ["mix_0000"])


def test_bad_mixture_and_batch_settings(ws, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"mix_id": "bad", "weights": {"alpha": 0.5, "delta": 0.5}}))
    with pytest.raises(ConfigError, match="delta"):
        train(settings(), "proxy", ws["data"], ws["tokenizer"], [bad], [tmp_path / "bad"])
    with pytest.raises(ConfigError, match="micro_batch"):
        run(ws, tmp_path, ["mix_0000"], micro_batch=3)


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(ws, tmp_path):
    """DDP over 2 CPU processes (torchrun, gloo) = 1 process with the same global batch."""
    single = run(ws, tmp_path / "one", ["mix_0002"], "large", schedule="cosine")[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_DIR)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "regmix.cli",
        "train-large",
        "--settings",
        json.dumps(settings("large", schedule="cosine")),
        "--data",
        str(ws["data"]),
        "--tokenizer",
        str(ws["tokenizer"]),
        "--mixture",
        str(ws["mixtures"]["mix_0002"]),
        "--out-dir",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    double = json.loads((tmp_path / "two" / "losses.json").read_text())
    assert double["world_size"] == 2
    for domain in DOMAINS:
        assert double["val_loss"][domain] == pytest.approx(single["val_loss"][domain], rel=1e-4)


def test_a_validation_set_is_scored_but_never_trained_on(ws, packed, tmp_path):
    """A validation-only set's windows are scored next to the domains' (an extra loss in
    losses.json and the logs) and change nothing about training."""
    write_tokens(ws["data"], "held", "valid", domain_tokens(2, 2000, 9))
    out_dirs = [tmp_path / m for m in ("mix_0000", "mix_0001", "mix_0002")]
    code = train(
        {**settings(), "validation_sets": ["held"]},
        "proxy",
        ws["data"],
        ws["tokenizer"],
        [ws["mixtures"][m] for m in ("mix_0000", "mix_0001", "mix_0002")],
        out_dirs,
    )
    assert code == 0
    for out in out_dirs:
        with_set = json.loads((out / "losses.json").read_text())
        without = json.loads((packed / out.name / "losses.json").read_text())
        assert list(with_set["val_loss"]) == [*DOMAINS, "held"]
        assert math.isfinite(with_set["val_loss"]["held"])
        for domain in DOMAINS:
            assert with_set["val_loss"][domain] == without["val_loss"][domain]
        assert train_losses(out) == train_losses(packed / out.name)
        logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        assert any("held" in rec.get("val_loss", {}) for rec in logged)


def test_a_validation_set_without_tokens_is_named(ws, tmp_path):
    with pytest.raises(FileNotFoundError, match="validation set 'missing'"):
        train(
            {**settings(), "validation_sets": ["missing"]},
            "proxy",
            ws["data"],
            ws["tokenizer"],
            [ws["mixtures"]["mix_0000"]],
            [tmp_path / "mix_0000"],
        )
