"""Issue 12's bad inputs and faults, one test each, through the `regmix` entry point.

Each asserts the exit status (2: the config, 1: a file), one line `regmix <cmd>: ...`
naming the key, file or domain, no traceback, and that nothing that looks complete is
left behind.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from regmix.cli import main as cli_main
from regmix.config import REPO_DIR, stage_settings, validate_config
from tests.helpers import assert_one_line

MICRO = yaml.safe_load((REPO_DIR / "config" / "micro.yaml").read_text())


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def set_key(config: dict, dotted: str, value) -> dict:
    config = copy.deepcopy(config)
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return config


# --------------------------------------------------------------------------- config

# id -> (key set, value, what the one line must name)
CONFIG_CASES = {
    "named_escapes_results": ("large.named", {"../../evil": {"docs": 1.0}}, ["large.named", "'../../evil'"]),
    "named_with_dot": ("large.named", {"a.b": {"docs": 1.0}}, ["large.named", "'a.b'"]),
    "named_with_slash": ("large.named", {"sub/dir": {"docs": 1.0}}, ["large.named", "'sub/dir'"]),
    "named_with_space": ("large.named", {"my mix": {"docs": 1.0}}, ["large.named", "'my mix'"]),
    "named_too_long": ("large.named", {"m" * 65: {"docs": 1.0}}, ["large.named", "not a valid name"]),
    "named_builtin": ("large.named", {"Uniform": {"docs": 1.0}}, ["large.named.Uniform", "reserved"]),
    "named_random": ("large.named", {"random_007": {"docs": 1.0}}, ["large.named.random_007", "reserved"]),
    "named_case_twins": (
        "large.named",
        {"Heavy": {"docs": 1.0}, "heavy": {"code": 1.0}},
        ["large.named", "'Heavy' and 'heavy' differ only in case"],
    ),
    "domain_mean": ("domains", ["code", "docstrings", "docs", "structured", "legal", "mean"], ["domains", "'mean'"]),
    "domain_index": ("domains", ["code", "docstrings", "docs", "structured", "legal", "index"], ["domains", "'index'"]),
    "domain_reserved_any_case": ("domains", ["code", "Mix_ID"], ["domains", "'Mix_ID'", "reserved"]),
    "domain_case_twins": ("domains", ["code", "Code"], ["domains", "'code' and 'Code'"]),
    "domain_path": ("domains", ["code", "../docs"], ["domains.1", "'../docs'"]),
    "domain_leading_digit": ("domains", ["code", "2docs"], ["domains.1", "'2docs'"]),
    "task_with_slash": ("evaluate.tasks", ["../../etc"], ["evaluate.tasks.0", "'../../etc'"]),
    "count_float": ("mixtures.count", 8.0, ["mixtures.count", "8.0", "whole number"]),
    "steps_float": ("proxy.steps", 12.0, ["proxy.steps", "12.0", "whole number"]),
    "batch_float": ("large.global_batch", 8.0, ["large.global_batch", "whole number"]),
    "lr_nan": ("proxy.lr", float("nan"), ["proxy.lr", "nan", "finite"]),
    "temperature_inf": ("mixtures.temperature", float("inf"), ["mixtures.temperature", "inf", "finite"]),
    "weight_nan": ("large.named", {"odd": {"docs": float("nan")}}, ["large.named.odd.docs", "finite"]),
    "count_below_folds": ("regression.cv_folds", 9, ["mixtures.count", "= 8", "cv_folds = 9"]),
    "count_below_min_rows": ("mixtures.count", 3, ["mixtures.count", "= 3", "at least 4"]),
    "concentration_inverted": ("mixtures.concentration_min", 9.0, ["mixtures.concentration_min", "concentration_max"]),
    "batch_over_gpus": ("large.resources", {"gpus": 3}, ["large.global_batch", "3 processes"]),
    "batch_not_multiple": ("proxy.micro_batch", 3, ["proxy.global_batch", "proxy.micro_batch = 3"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_check_config_refuses_naming_the_key(tmp_path, capsys, case):
    key, value, named = CONFIG_CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(set_key(MICRO, key, value)))
    code, out, err = run(capsys, ["check-config", str(path)])
    assert code == 2 and out == ""
    assert_one_line(err, "check-config", *named)


def test_the_micro_config_itself_passes(tmp_path, capsys):
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO))
    code, out, _ = run(capsys, ["check-config", str(path)])
    assert code == 0 and json.loads(out)["mixtures"]["count"] == 8


def test_check_config_names_a_yaml_syntax_error_line_and_column(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("seed: 0\nmixtures:\n  count: [8\nproxy: {steps: 12}\n")
    code, out, err = run(capsys, ["check-config", str(path)])
    assert code == 2 and out == ""
    assert_one_line(err, "check-config", f"{path}, line ", ", column ", "YAML syntax error")


def test_snakemake_refuses_an_escaping_name_before_any_job(tmp_path):
    """The workflow validates the same way while it loads: nothing is written, anywhere."""
    work = tmp_path / "work"
    work.mkdir()
    config = set_key(MICRO, "large.named", {"../../evil": {"docs": 1.0}})
    (work / "bad.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-s", str(REPO_DIR / "Snakefile"), "--configfile", "bad.yaml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "config key 'large.named': name '../../evil' is not a valid name" in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("evil*")) and not (work / "results").exists()


# --------------------------------------------------------------------------- corrupt data files


def write_jsonl(path: Path, texts: list[str], opener=open) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wt") as handle:
        for text in texts:
            handle.write(json.dumps({"text": text}) + "\n")


def zst_open(path, mode):
    import zstandard

    return io.TextIOWrapper(zstandard.ZstdCompressor().stream_writer(open(path, "wb")), encoding="utf-8")


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_corrupt_compressed_input_names_the_file(tmp_path, capsys, suffix):
    root = tmp_path / "data"
    texts = [f"document {i} " * 40 for i in range(400)]
    for domain in ("alpha", "beta"):
        write_jsonl(root / "train" / f"{domain}-0.jsonl", texts)
        write_jsonl(root / "valid" / f"{domain}-0.jsonl", texts)
    bad = root / "valid" / f"alpha-0{suffix}"
    (root / "valid" / "alpha-0.jsonl").unlink()
    write_jsonl(bad, texts, opener=gzip.open if suffix.endswith(".gz") else zst_open)
    blob = bad.read_bytes()
    # a transfer cut short (.gz), or bytes garbled in the middle (.zst)
    bad.write_bytes(blob[: len(blob) // 2] if suffix.endswith(".gz") else blob[:20] + b"\xa5" * (len(blob) - 20))
    source = {"kind": "jsonl", "path": str(root)}
    config = validate_config(
        {"domains": ["alpha", "beta"], "regression": {"target": "mean"}, "data": {"source": source}}
    )
    out = tmp_path / "eval_tasks"
    code, _, err = run(
        capsys,
        [
            "make-tasks",
            "--settings",
            json.dumps(stage_settings(config, "eval_tasks")),
            "--corpus",
            "x",
            "--out",
            str(out),
        ],
    )
    assert code == 1
    assert_one_line(err, "make-tasks", str(bad), "truncated or corrupt compressed file")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_bad_losses_json_names_the_file(tmp_path, capsys, damage):
    good = {"mix_id": "mix_0000", "weights": {"a": 0.5, "b": 0.5}, "val_loss": {"a": 3.0, "b": 3.1}}
    first, second = tmp_path / "mix_0000" / "losses.json", tmp_path / "mix_0001" / "losses.json"
    for path, mix_id in ((first, "mix_0000"), (second, "mix_0001")):
        path.parent.mkdir()
        path.write_text(json.dumps({**good, "mix_id": mix_id}))
    second.write_text(second.read_text()[:40] if damage == "truncated" else "")
    out = tmp_path / "out"
    argv = ["collect-proxies", "--losses", str(first), str(second)]
    code, _, err = run(capsys, [*argv, "--out-mixtures", str(out / "m.csv"), "--out-losses", str(out / "l.csv")])
    assert code == 1
    assert_one_line(err, "collect-proxies", str(second), "not valid JSON" if damage == "truncated" else "empty file")
    assert not (out / "m.csv").exists() and not (out / "l.csv").exists()


def test_yaml_syntax_error_in_a_prior_names_file_line_and_column(tmp_path, capsys):
    prior = tmp_path / "prior.yaml"
    prior.write_text("code: 0.2\ndocs: [0.3\nlegal: 0.5\n")
    settings = stage_settings(validate_config({}), "mixtures")
    out = tmp_path / "mixtures"
    code, _, err = run(
        capsys, ["mixtures", "--settings", json.dumps(settings), "--prior", str(prior), "--out", str(out)]
    )
    assert code == 1
    assert_one_line(err, "mixtures", f"{prior}, line ", ", column ", "YAML syntax error")
    assert not (out / "mixtures.csv").exists()


# --------------------------------------------------------------------------- swarm CSVs and fitted models

FIT_SETTINGS = {
    "seed": 0,
    "domains": ["a", "b", "c"],
    "regression": {"regressor": "linear", "target": "b", "cv_folds": 3, "seed": 0},
}


def swarm_csvs(folder: Path) -> tuple[Path, Path]:
    rows = [(i, (i % 3 + 1) / 6, (3 - i % 3) / 6, 1 / 3) for i in range(8)]
    mixtures, losses = folder / "mixtures.csv", folder / "losses.csv"
    mixtures.write_text("index,a,b,c\n" + "".join(f"{i},{a:.4f},{b:.4f},{c:.4f}\n" for i, a, b, c in rows))
    losses.write_text("index,a,b,c\n" + "".join(f"{i},{3 + a:.4f},{3 - b:.4f},{3 + c:.4f}\n" for i, a, b, c in rows))
    return mixtures, losses


@pytest.mark.parametrize(
    "damage, named",
    [
        pytest.param("text_weight", ["mixtures.csv", "column 'a'", "'lots'"]),
        pytest.param("empty", ["mixtures.csv", "empty file"]),
    ],
)
def test_bad_swarm_csv_names_file_and_column(tmp_path, capsys, damage, named):
    mixtures, losses = swarm_csvs(tmp_path)
    lines = mixtures.read_text().splitlines()
    lines[3] = "2,lots,0.5,0.3333"
    mixtures.write_text("\n".join(lines) + "\n" if damage == "text_weight" else "")
    out = tmp_path / "fit"
    argv = ["fit", "--mixtures", str(mixtures), "--losses", str(losses), "--out", str(out)]
    code, _, err = run(capsys, [*argv, "--settings", json.dumps(FIT_SETTINGS)])
    assert code == 1
    assert_one_line(err, "fit", str(tmp_path), *named)
    assert not (out / "model.pkl").exists()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\x80\x05\x95", id="truncated"),
        pytest.param(b"I am not a pickle\n", id="garbage"),
        pytest.param(pickle.dumps({"a": 1}), id="foreign"),
    ],
)
def test_bad_model_pickle_names_the_file_and_the_fix(tmp_path, capsys, content):
    mixtures, _ = swarm_csvs(tmp_path)
    model = tmp_path / "fit"
    model.mkdir()
    (model / "model.pkl").write_bytes(content)
    out = tmp_path / "predictions.csv"
    try:
        code, _, err = run(capsys, ["predict", "--model", str(model), "--mixtures", str(mixtures), "--out", str(out)])
    finally:
        assert not out.exists()
    assert code == 1
    assert_one_line(err, "predict", str(model / "model.pkl"), "rerun `regmix fit`")


def test_truncated_safetensors_given_to_evaluate_names_the_file(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}}).encode()
    (model / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 100)
    settings = stage_settings(validate_config({}), "evaluate")
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--settings", json.dumps(settings), "--model", str(model), "--tasks", str(tmp_path)]
    code, _, err = run(capsys, [*argv, "--out", str(out)])
    assert code == 1
    assert_one_line(err, "evaluate", str(model / "model.safetensors"), "truncated")
    assert not out.exists()


# --------------------------------------------------------------------------- archives


@pytest.mark.parametrize("member", ["regmix-run/../evil.txt", "/tmp/evil.txt"])
def test_verify_archive_refuses_a_member_outside_its_folder(tmp_path, capsys, member):
    path = tmp_path / "run.tar.gz"
    data = b"payload"
    listed = member.removeprefix("regmix-run/")
    manifest = f"{hashlib.sha256(data).hexdigest()}  {listed}\n".encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in (("regmix-run/MANIFEST.sha256", manifest), (member, data)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    code, out, err = run(capsys, ["verify-archive", str(path)])
    assert code == 1 and "match the manifest" not in out
    assert str(path) in err and "refused" in err and repr(member) in err
    assert not list(tmp_path.rglob("evil*"))
