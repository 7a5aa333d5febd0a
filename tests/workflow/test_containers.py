"""The lock, the conda env, the Apptainer definition and the Containerfile describe
the same software, and agree with pyproject.toml."""

import importlib.util
import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import REPO_DIR

LOCK = REPO_DIR / "requirements.lock"
CONTAINERFILE = REPO_DIR / "containers" / "Containerfile"
CONDA_ENV = REPO_DIR / "envs" / "regmix.yaml"
IMAGE_TAG = "localhost/regmix-pipeline-test:latest"


def _load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock_tool = _load_module(REPO_DIR / "tools" / "lock.py", "lock_tool")


def _pyproject():
    return tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]


def _lock_pins():
    return lock_tool.parse_lock(LOCK.read_text())


def _def_sections(text):
    """Apptainer definition: header lines and %section bodies."""
    sections, current = {"header": []}, "header"
    for line in text.splitlines():
        match = re.match(r"^%(\w+)", line)
        if match:
            current = match.group(1)
            sections[current] = []
        else:
            sections[current].append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def _def_base(text):
    header = _def_sections(text)["header"]
    bootstrap = re.search(r"^Bootstrap:\s*(\S+)", header, re.M).group(1)
    base = re.search(r"^From:\s*(\S+)", header, re.M).group(1)
    return bootstrap, base


def _containerfile_base(text):
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(bases) == 1, f"Containerfile: expected one FROM, found {bases}"
    return bases[0]


def _strip_registry(ref):
    """docker.io/library/python:tag@sha -> python:tag@sha (how Apptainer's docker:// spells it)."""
    return re.sub(r"^(docker\.io/)?(library/)?", "", ref)


def test_lock_is_exact_and_current():
    pins = _lock_pins()
    assert len(pins) > 50  # the whole closure, not just the direct dependencies
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[a-z0-9][a-z0-9.\-]*==[A-Za-z0-9.+!\-]+", line), line
    # regenerating from the installed environment gives the committed files
    proc = subprocess.run(
        [sys.executable, str(REPO_DIR / "tools" / "lock.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_lock_agrees_with_pyproject_pins():
    pins = _lock_pins()
    project = _pyproject()
    declared = project["dependencies"] + [
        r for extra in lock_tool.LOCKED_EXTRAS for r in project["optional-dependencies"][extra]
    ]
    for spec in declared:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in requirements.lock"
        (exact,) = [s.version for s in req.specifier if s.operator == "=="]
        assert pins[name] == exact, f"{req.name}: pyproject pins {exact}, lock has {pins[name]}"


def test_lock_resolver_follows_extras_and_markers(tmp_path):
    # lm-eval[hf] pulls transformers through the extra; a package behind an extra
    # nobody asks for (lm-eval's vllm) stays out
    pins = lock_tool.resolve([Requirement("lm-eval[hf]==0.4.13")])
    assert "transformers" in pins and "accelerate" in pins
    assert "vllm" not in pins
    bare = lock_tool.resolve([Requirement("lm-eval==0.4.13")])
    assert "accelerate" not in bare
    with pytest.raises(SystemExit, match="does not satisfy"):
        lock_tool.resolve([Requirement("numpy==0.0.1")])


def test_conda_env_pins_exactly_the_lock():
    env = yaml.safe_load(CONDA_ENV.read_text())
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python")]
    assert python == [f"python={sys.version_info.major}.{sys.version_info.minor}"]
    (pip_section,) = [d["pip"] for d in deps if isinstance(d, dict)]
    conda_pins = {canonicalize_name(r.split("==")[0]): r.split("==")[1] for r in pip_section}
    assert conda_pins == _lock_pins()
    # Snakemake runs the post-deploy script to install the project itself into the env
    post_deploy = CONDA_ENV.with_name("regmix.post-deploy.sh").read_text()
    assert "--no-deps" in post_deploy and "-e ." in post_deploy


def test_verify_install_accepts_this_environment():
    script = REPO_DIR / "containers" / "verify_install.py"
    ok = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "torch" in ok.stdout and "lm_eval" in ok.stdout and "regmix --help ok" in ok.stdout


def test_verify_install_names_a_drifted_or_missing_distribution():
    verify = _load_module(REPO_DIR / "containers" / "verify_install.py", "verify_install")
    pins = _lock_pins()
    assert verify.version_mismatches(pins) == []
    drifted = {**pins, "numpy": "0.0.1", "no-such-distribution": "1.0"}
    problems = verify.version_mismatches(drifted)
    assert any(p.startswith("numpy: locked 0.0.1, installed ") for p in problems), problems
    assert "no-such-distribution: locked 1.0, not installed" in problems
    assert len(problems) == 2


@pytest.mark.slow
def test_missing_local_image_is_a_config_error_naming_the_key_and_build_command(tmp_path):
    from regmix.config import ConfigError
    from regmix.container import check_image

    with pytest.raises(ConfigError, match=r"^container: image file build/x\.sif not found.*containers/build\.sh"):
        check_image("build/x.sif", True, tmp_path)
    check_image("build/x.sif", False, tmp_path)  # no apptainer: the image is not needed
    check_image("docker://ghcr.io/x/y:1", True, tmp_path)  # Apptainer pulls URIs itself
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "x.sif").write_text("image")
    check_image("build/x.sif", True, tmp_path)


def test_default_container_is_the_file_build_sh_writes():
    version = _pyproject()["version"]
    schema = yaml.safe_load((REPO_DIR / "config" / "schema.yaml").read_text())
    assert schema["properties"]["container"]["default"] == f"build/regmix-{version}.sif"
    assert f'org.opencontainers.image.version="{version}"' in CONTAINERFILE.read_text()


def test_runtime_line_only_inside_the_regmix_image(monkeypatch):
    from regmix.container import runtime_line

    for var in ("REGMIX_IMAGE", "APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(var, raising=False)
    # a host that is itself a container must not get the line (it would break one-line errors)
    assert runtime_line() is None
    monkeypatch.setenv("REGMIX_IMAGE", "regmix-pipeline:0.1.0")
    assert runtime_line().startswith("regmix: in container regmix-pipeline:0.1.0: ")
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/regmix-0.1.0.sif")
    assert "in container /images/regmix-0.1.0.sif: " in runtime_line()
