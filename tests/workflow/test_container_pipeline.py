"""The micro pipeline through Snakemake's own container path (`--sdm apptainer`), every job
inside the image that containers/build.sh makes.

Apptainer cannot be installed on the machines this project is tested on, so the test puts
tests/workflow/apptainer_standin/apptainer on PATH: a STAND-IN that runs `apptainer exec` with
podman on the built image (binds, working directory and environment as Apptainer would).
What only the stand-in made possible is listed in its docstring.

Skipped, with the reason, where podman cannot run or the image cannot be built; never
silently. The image is built once and reused while requirements.lock is unchanged (the
checkout's code reaches the jobs through PYTHONPATH, as in the Slurm profile).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_DIR, copy_workflow, run_snakemake

pytestmark = [pytest.mark.slow, pytest.mark.container]

STANDIN_DIR = REPO_DIR / "tests" / "workflow" / "apptainer_standin"
PODMAN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
WHEEL_DIRS = [Path("/opt/wheels")]  # where pip's find-links keeps the CPU torch wheel on these machines


def _version() -> str:
    for line in (REPO_DIR / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("no version in pyproject.toml")


def _podman(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


def _image_is_current(tag: str) -> bool:
    """The image exists, was built from this lock, and sets REGMIX_IMAGE (newer Containerfile)."""
    inspected = _podman("image", "inspect", "--format", "{{json .Labels}}|{{json .Config.Env}}", tag)
    if inspected.returncode != 0:
        return False
    labels, env = (json.loads(part) for part in inspected.stdout.strip().split("|", 1))
    lock_sha = hashlib.sha256((REPO_DIR / "requirements.lock").read_bytes()).hexdigest()
    return labels.get("io.regmix.lock-sha256") == lock_sha and any(e.startswith("REGMIX_IMAGE=") for e in env)


def _pip_ca_bundle() -> str | None:
    """The CA bundle the host's pip trusts (a TLS-intercepting proxy's), for pip in the build."""
    if os.environ.get("PIP_CERT"):
        return os.environ["PIP_CERT"]
    listed = subprocess.run(["python", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".cert") and Path(value.strip("'\"")).is_file():
            return value.strip("'\"")
    return None


def _cpu_torch_wheel() -> Path | None:
    for folder in WHEEL_DIRS:
        wheels = sorted(folder.glob("torch-2.13.0+cpu-*.whl")) if folder.is_dir() else []
        if wheels:
            return wheels[0]
    return None


@pytest.fixture(scope="module")
def image_tag() -> str:
    if shutil.which("podman") is None:
        pytest.skip("container test: podman is not installed (apt-get install -y podman runc debootstrap)")
    info = _podman("info")
    if info.returncode != 0:
        pytest.skip(f"container test: podman cannot run here: {info.stderr.strip()[-300:]}")
    tag = f"localhost/regmix-pipeline:{_version()}"
    if not _image_is_current(tag):
        wheel = _cpu_torch_wheel()
        if wheel is None:
            pytest.skip("container test: no CPU torch 2.13.0 wheel on disk; the CUDA build is gigabytes to download")
        cmd = ["bash", str(REPO_DIR / "containers" / "build.sh"), "--base", "local", "--torch-wheel", str(wheel)]
        if ca_bundle := _pip_ca_bundle():
            cmd += ["--ca-bundle", ca_bundle]
        built = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
        if built.returncode != 0 and "debootstrap" in built.stderr and not _podman("image", "exists", tag).returncode:
            pytest.skip(f"container test: cannot make the local base image: {built.stderr.strip()[-300:]}")
        assert built.returncode == 0, f"containers/build.sh failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
    return tag


@pytest.fixture(scope="module")
def sif(image_tag, tmp_path_factory) -> Path:
    """The image as Apptainer gets it: an oci-archive, `apptainer build`-ed (by the stand-in)."""
    folder = tmp_path_factory.mktemp("image")
    archive = folder / "regmix.tar"
    _podman("save", "--format", "oci-archive", "-o", str(archive), image_tag, check=True)
    sif_path = folder / f"regmix-{_version()}.sif"
    env = {**os.environ, "PATH": f"{STANDIN_DIR}:{os.environ['PATH']}"}
    subprocess.run(["apptainer", "build", str(sif_path), f"oci-archive://{archive}"], env=env, check=True)
    archive.unlink()  # the stand-in loaded it into podman's store; the .sif names that image
    return sif_path


def _snakemake(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, "--cores", "2", "--configfile", "config/container.yaml", *extra, timeout=1500)


def _run_in_container(workdir: Path, sif_path: Path) -> subprocess.CompletedProcess:
    os.environ["PATH"] = f"{STANDIN_DIR}:{os.environ['PATH']}"
    try:
        return _snakemake(
            workdir,
            "--config",
            f"container={sif_path}",
            "--sdm",
            "apptainer",
            # as slurm/config.yaml: the checkout's code, not the copy baked into the image
            "--apptainer-args",
            f"--env PYTHONPATH={workdir}",
        )
    finally:
        os.environ["PATH"] = os.environ["PATH"].removeprefix(f"{STANDIN_DIR}:")


@pytest.fixture(scope="module")
def study_config(tmp_path_factory) -> Path:
    """The micro study on jsonl files written once, so both runs read the same documents.

    The demo source reads the text the installation put on disk, and the image's
    installation is not the host's (another Python, no test tools): its corpus would
    differ, and so would every number after it. Demo validation-only sets become jsonl
    sets of the same held-out documents."""
    from regmix.config import load_config, stage_settings
    from regmix.corpus import build_demo

    folder = tmp_path_factory.mktemp("study")
    raw = yaml.safe_load((REPO_DIR / "config" / "micro.yaml").read_text())
    config = load_config(REPO_DIR / "config" / "micro.yaml")
    demo_sets = {n: s["domain"] for n, s in config.get("validation_sets", {}).items() if s["kind"] == "demo"}
    corpus_settings = stage_settings(config, "corpus")
    corpus_settings["domains"] = [*config["domains"], *demo_sets.values()]
    build_demo(corpus_settings, folder / "corpus")
    for split in ("train", "valid"):
        (folder / "data" / split).mkdir(parents=True)
        for domain in config["domains"]:
            shutil.copy(folder / "corpus" / domain / f"{split}.jsonl", folder / "data" / split / f"{domain}-0.jsonl")
    for name, domain in demo_sets.items():
        (folder / "sets").mkdir(exist_ok=True)
        shutil.copy(folder / "corpus" / domain / "valid.jsonl", folder / "sets" / f"{name}.jsonl")
        raw["validation_sets"][name] = {"kind": "jsonl", "files": str(folder / "sets" / f"{name}.jsonl")}
    raw["data"]["source"] = {"kind": "jsonl", "path": str(folder / "data")}
    # inside against outside needs the chosen mixture and one baseline, not the micro run's
    # six candidates: each one more is a large run and an evaluation in both runs
    raw["large"].update(baselines=["prior"], named={}, random_candidates=0)
    del raw["data"]["demo_max_bytes_per_domain"]
    path = folder / "container.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _workflow(tmp_path_factory, name: str, study_config: Path) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp(name) / "workflow")
    shutil.copy(study_config, workdir / "config" / "container.yaml")
    return workdir


@pytest.fixture(scope="module")
def container_run(sif, study_config, tmp_path_factory) -> Path:
    workdir = _workflow(tmp_path_factory, "container", study_config)
    proc = _run_in_container(workdir, sif)
    assert proc.returncode == 0, f"micro pipeline in the container failed:\n{proc.stderr[-6000:]}"
    return workdir


@pytest.fixture(scope="module")
def host_run(study_config, tmp_path_factory) -> Path:
    workdir = _workflow(tmp_path_factory, "host", study_config)
    proc = _snakemake(workdir)
    assert proc.returncode == 0, f"micro pipeline on the host failed:\n{proc.stderr[-6000:]}"
    return workdir


def _rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_every_job_ran_inside_the_image(container_run, sif):
    logs = sorted((container_run / "results" / "logs").rglob("*.log"))
    assert len(logs) > 20
    for log in logs:
        first = log.read_text().splitlines()[0]
        # the line regmix prints only where the image's REGMIX_IMAGE is set
        assert first.startswith(f"regmix: in container {sif}: Debian GNU/Linux 12"), (log, first)
        assert "python /opt/regmix/venv/bin/python" in first, (log, first)
        assert f"from {container_run / 'regmix'}" in first, (log, first)  # the checkout's code


def test_container_outputs_equal_the_host_run(container_run, host_run):
    runs = (container_run, host_run)
    for table in ("proxies/losses.csv", "mixtures/mixtures.csv"):
        inside, outside = _rows(container_run / "results" / table), _rows(host_run / "results" / table)
        assert [r.keys() for r in inside] == [r.keys() for r in outside], table
        for a, b in zip(inside, outside, strict=True):
            for key in a:
                try:
                    assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-6, abs=1e-9), (table, key)
                except ValueError:
                    assert a[key] == b[key], (table, key)
    chosen = [yaml.safe_load((run / "results" / "chosen" / "regmix.yaml").read_text()) for run in runs]
    assert chosen[0]["weights"] == pytest.approx(chosen[1]["weights"], rel=1e-6)
    candidates = sorted(p.name for p in (container_run / "results" / "large").iterdir() if p.is_dir())
    assert candidates == sorted(p.name for p in (host_run / "results" / "large").iterdir() if p.is_dir())
    assert "regmix" in candidates
    for name in candidates:
        losses = [json.loads((run / "results" / "large" / name / "losses.json").read_text()) for run in runs]
        assert losses[0]["val_loss"] == pytest.approx(losses[1]["val_loss"], rel=1e-6), name


def test_a_checkout_change_is_what_runs_in_the_container(container_run, sif):
    summary = container_run / "regmix" / "summary.py"
    source = summary.read_text()
    marker = "checkout edit reached the container"
    assert "\ndef main(" in source
    summary.write_text(source.replace("\ndef main(", f"\nprint({marker!r})\n\n\ndef main(", 1))
    proc = _run_in_container(container_run, sif)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "summarize" in proc.stderr  # the tracked module changed: its rule reran
    assert marker in (container_run / "results" / "logs" / "summarize.log").read_text()
