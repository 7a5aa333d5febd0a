"""`snakemake -n --profile slurm --configfile config/paper.yaml` builds the paper's job
graph: the right number of jobs per rule and the right cluster resources for each."""

import re

import pytest
import yaml

from regmix.config import load_config
from tests.helpers import REPO_DIR, run_snakemake
from tests.helpers.cluster import GPU_RULE, NO_CONTAINER, by_rule, copy_cluster_workflow, parse_dry_run, profile

PAPER = yaml.safe_load((REPO_DIR / "config" / "paper.yaml").read_text())
DOMAINS = PAPER["domains"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_cluster_workflow(tmp_path_factory.mktemp("paper") / "workflow")


@pytest.fixture(scope="module")
def paper_jobs(workdir):
    proc = run_snakemake(
        workdir, "-n", "--profile", "slurm", *NO_CONTAINER, "--configfile", "config/paper.yaml", timeout=300
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return by_rule(parse_dry_run(proc.stdout + proc.stderr))


def _ints(job, *keys):
    return {k: int(job.resources[k]) for k in keys}


def test_paper_study_is_the_papers():
    assert len(DOMAINS) == 17 and "pile_cc" in DOMAINS
    assert PAPER["tokenizer"] == {"kind": "pretrained", "name": "EleutherAI/gpt-neox-20b"}
    proxy, large = PAPER["proxy"], PAPER["large"]
    assert (proxy["model"], proxy["steps"], proxy["global_batch"], proxy["lr"], proxy["warmup_steps"]) == (
        "tinyllama_1M",
        1000,
        512,
        4e-4,
        100,
    )
    assert large["model"] == "tinyllama_1B"
    tokens = large["steps"] * large["global_batch"] * 2048
    assert abs(tokens - 25e9) / 25e9 < 1e-4
    assert PAPER["evaluate"]["num_fewshot"] == [0, 1, 2, 3, 4, 5] and len(PAPER["evaluate"]["tasks"]) == 13


def test_named_mixtures_are_the_papers_normalised(paper_data):
    for name in ("human", "doremi", "pile_cc_only"):
        raw = yaml.safe_load((paper_data / "config_1b" / f"{name}.yaml").read_text())["train"]
        total = sum(raw.values())
        expected = {key.removeprefix("train_the_pile_"): value / total for key, value in raw.items()}
        ours = PAPER["large"]["named"][name]
        assert set(ours) == set(expected) <= set(DOMAINS), name
        for domain, weight in expected.items():
            assert ours[domain] == pytest.approx(weight, abs=1e-6), (name, domain)


def test_job_counts(paper_jobs):
    packs = {rule: jobs for rule, jobs in paper_jobs.items() if rule.startswith("train_proxies_pack_")}
    pack_size = PAPER["proxy"]["pack_size"]
    assert len(packs) == 512 // pack_size
    assert all(len(jobs) == 1 and jobs[0].group == "proxies" for jobs in packs.values())
    # every one of the 512 mixtures is trained, exactly once
    trained = [
        m for jobs in packs.values() for m in re.findall(r"--mixtures ((?:\S+\.yaml ?)+)", jobs[0].shell)[0].split()
    ]
    assert len(trained) == 512 and len(set(trained)) == 512
    assert sorted(trained)[-1].endswith("mix_0511.yaml")

    assert len(paper_jobs["tokenize_domain"]) == 2 * len(DOMAINS)
    candidates = {"regmix", "human", "doremi", "pile_cc_only"} | {f"random_{i:03d}" for i in range(64)}
    for rule in ("write_candidate", "train_large", "evaluate_candidate"):
        assert {job.wildcards["candidate"] for job in paper_jobs[rule]} == candidates, rule
        assert len(paper_jobs[rule]) == 68, rule
    for rule in (
        "train_tokenizer",
        "compute_prior",
        "synthesize_mixtures",
        "collect_proxy_results",
        "fit_regression",
        "choose_mixture",
        "summarize",
        "build_database",
    ):
        assert len(paper_jobs[rule]) == 1, rule
    # the paper's tasks come from lm-eval's registry, not from held-out documents
    assert "make_eval_tasks" not in paper_jobs


def test_selection_settings_reach_the_commands(paper_jobs):
    (fit,) = paper_jobs["fit_regression"]
    regressor = load_config(REPO_DIR / "config" / "paper.yaml")["regression"]["regressor"]
    # target and regressor reach the fit once, in its settings
    assert '"target": "pile_cc"' in fit.shell and f'"regressor": "{regressor}"' in fit.shell
    assert "--target" not in fit.shell and "--regressor" not in fit.shell
    (choose,) = paper_jobs["choose_mixture"]
    # settings-only: every value reaches `regmix choose` in its --settings JSON
    assert '"samples": 1000000' in choose.shell and '"top_k": 100' in choose.shell
    assert '"large_train_tokens": 25000148992' in choose.shell and '"max_epochs": ' in choose.shell


def test_gpu_stages_ask_for_their_configured_resources(paper_jobs):
    expected = {
        "train_proxies_pack_": PAPER["proxy"]["resources"],
        "train_large": PAPER["large"]["resources"],
        "evaluate_candidate": PAPER["evaluate"]["resources"],
    }
    for rule, jobs in paper_jobs.items():
        if not GPU_RULE.match(rule):
            continue
        block = next(v for k, v in expected.items() if rule.startswith(k))
        for job in jobs:
            assert _ints(job, "gpu", "cpus_per_task", "mem_mb", "runtime") == {
                "gpu": block["gpus"] * block.get("nodes", 1),
                "cpus_per_task": block["cpus_per_task"],
                "mem_mb": block["mem_mb"],
                "runtime": block["runtime"],
            }, (rule, job.resources)
            assert "nodes" not in job.resources and "gpu_model" not in job.resources
    # eight GPUs on one node: torchrun with one process per GPU
    for job in paper_jobs["train_large"]:
        assert job.shell.startswith("torchrun --standalone --nproc_per_node 8 -m regmix.cli train-large ")


def test_cpu_stages_ask_for_no_gpu_and_the_profiles_resources(paper_jobs):
    defaults, per_rule = profile()["default-resources"], profile()["set-resources"]
    cpu_rules = [rule for rule in paper_jobs if not GPU_RULE.match(rule) and rule != "all"]
    assert {"tokenize_domain", "fit_regression", "choose_mixture", "summarize"} <= set(cpu_rules)
    for rule in cpu_rules:
        want = {**defaults, **per_rule.get(rule, {})}
        for job in paper_jobs[rule]:
            assert "gpu" not in job.resources and "gpu_model" not in job.resources, rule
            assert _ints(job, "mem_mb", "runtime") == {k: want[k] for k in ("mem_mb", "runtime")}, rule
            # Slurm's --cpus-per-task is then the rule's threads
            assert "cpus_per_task" not in job.resources, rule
            assert job.resources["slurm_extra"] == "--signal=TERM@300", rule


def test_multi_node_large_runs_and_gpu_model(workdir):
    """Two 8-GPU nodes for the large model: 16 GPUs of the given model, one torchrun per node."""
    overlay = workdir / "two-nodes.yaml"
    overlay.write_text(yaml.safe_dump({"large": {"resources": {"gpus": 8, "nodes": 2, "gpu_model": "a100"}}}))
    target = "results/large/human/losses.json"  # human needs no proxies: a small graph
    proc = run_snakemake(
        workdir,
        target,
        "-n",
        "--profile",
        "slurm",
        *NO_CONTAINER,
        "--configfile",
        "config/paper.yaml",
        overlay.name,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    jobs = by_rule(parse_dry_run(proc.stdout + proc.stderr))
    assert not any(rule.startswith("train_proxies") for rule in jobs)
    (large,) = jobs["train_large"]
    assert large.resources["gpu"] == "16" and large.resources["nodes"] == "2" and large.resources["gpu_model"] == "a100"
    assert large.shell.startswith("srun --ntasks-per-node 1 torchrun --nnodes 2 --nproc_per_node 8 ")
