"""Preemption: a killed or signalled run resumes from .state/ and ends with exactly the
losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from regmix import checkpoint
from tests.helpers import REPO_DIR
from tests.helpers.training import make_workspace, run, settings, train_losses

MIXES = ["mix_0000", "mix_0002"]
# enough steps that the subprocess is still training when the test signals it
OVERRIDES = {"steps": 60, "checkpoint_every": 5, "log_every": 1, "eval_every": 20}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def uninterrupted(ws, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    run(ws, out, MIXES, **OVERRIDES)
    return out


def _start(ws, out: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "regmix.cli",
        "train-proxies",
        "--settings",
        json.dumps(settings(**OVERRIDES)),
        "--data",
        str(ws["data"]),
        "--tokenizer",
        str(ws["tokenizer"]),
        "--mixtures",
        *[str(ws["mixtures"][m]) for m in MIXES],
        "--out-dirs",
        *[str(out / m) for m in MIXES],
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    log = checkpoint.state_dir(out / MIXES[0]) / "train_log.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be interrupted: {proc.stderr.read()[-2000:]}")
        if log.is_file() and sum(1 for _ in log.open()) >= step:
            return
        time.sleep(0.01)
    pytest.fail("training did not reach the step in time")


def _assert_same_as_uninterrupted(out: Path, uninterrupted: Path) -> None:
    for mix_id in MIXES:
        resumed = json.loads((out / mix_id / "losses.json").read_text())
        whole = json.loads((uninterrupted / mix_id / "losses.json").read_text())
        assert resumed["val_loss"] == whole["val_loss"]  # bit-identical
        assert resumed["train_loss"] == whole["train_loss"]
        assert train_losses(out / mix_id) == train_losses(uninterrupted / mix_id)
        log = [json.loads(line) for line in (out / mix_id / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(1, OVERRIDES["steps"] + 1))


def test_sigkill_mid_run_then_rerun_resumes_exactly(ws, uninterrupted, tmp_path):
    proc = _start(ws, tmp_path)
    _wait_for_step(tmp_path, 12, proc)
    proc.kill()
    proc.wait()
    assert not (tmp_path / MIXES[0] / "losses.json").exists()
    step = checkpoint.latest_common_step([tmp_path / m for m in MIXES])
    assert step is not None and step >= 10 and step % 5 == 0
    run(ws, tmp_path, MIXES, **OVERRIDES)
    _assert_same_as_uninterrupted(tmp_path, uninterrupted)
    assert checkpoint.latest_common_step([tmp_path / m for m in MIXES]) is None  # state cleared when done


def test_sigterm_checkpoints_exits_nonzero_and_resumes(ws, uninterrupted, tmp_path):
    proc = _start(ws, tmp_path)
    _wait_for_step(tmp_path, 7, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "checkpointed" in stderr
    assert not (tmp_path / MIXES[0] / "losses.json").exists()
    # the checkpoint is taken at the step the signal arrived, not the last periodic one
    step = checkpoint.latest_common_step([tmp_path / m for m in MIXES])
    assert step is not None and step >= 7
    run(ws, tmp_path, MIXES, **OVERRIDES)
    _assert_same_as_uninterrupted(tmp_path, uninterrupted)


def test_resume_in_another_pack_and_not_from_other_settings(ws, uninterrupted, tmp_path):
    """Each mixture's state is its own: a model stopped in a pack of two resumes alone; a
    state saved under other settings is not resumed."""
    proc = _start(ws, tmp_path)
    _wait_for_step(tmp_path, 7, proc)
    proc.send_signal(signal.SIGUSR1)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGUSR1
    run(ws, tmp_path, [MIXES[1]], **OVERRIDES)
    resumed = json.loads((tmp_path / MIXES[1] / "losses.json").read_text())
    whole = json.loads((uninterrupted / MIXES[1] / "losses.json").read_text())
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-4)
    # MIXES[0] still holds its state; with another learning rate it must start afresh
    fresh = run(ws, tmp_path, [MIXES[0]], **{**OVERRIDES, "lr": 0.005})[0]
    reference = run(ws, tmp_path / "ref", [MIXES[0]], **{**OVERRIDES, "lr": 0.005})[0]
    assert fresh["val_loss"] == reference["val_loss"]
