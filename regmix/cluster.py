"""How the workflow's jobs run beyond one process: a rule's Slurm resources, the launcher
of multi-GPU training (torchrun, srun across nodes), and the hub-offline environment."""

from __future__ import annotations


def rule_resources(config: dict, stage: str | None) -> dict:
    """Snakemake resources of a rule: a GPU stage's configured block, or nothing extra
    (CPU stages run with the profile's default resources)."""
    if stage is None:
        return {}
    block = config[stage]["resources"]
    resources = {
        "mem_mb": block["mem_mb"],
        "runtime": block["runtime"],
        "cpus_per_task": block["cpus_per_task"],
    }
    if block["gpus"]:
        resources["gpu"] = block["gpus"] * block["nodes"]  # --gpus counts the whole job
        if block["gpu_model"]:
            resources["gpu_model"] = block["gpu_model"]
    if block["nodes"] > 1:
        resources["nodes"] = block["nodes"]
    return resources


def large_launcher(config: dict) -> str:
    """`regmix` for one process; torchrun with one process per GPU when a job has several."""
    block = config["large"]["resources"]
    if block["gpus"] <= 1 and block["nodes"] == 1:
        return "regmix"
    if block["nodes"] == 1:
        return f"torchrun --standalone --nproc_per_node {block['gpus']} -m regmix.cli"
    # one torchrun per node under srun; the first node of the allocation hosts the rendezvous
    return (
        f"srun --ntasks-per-node 1 torchrun --nnodes {block['nodes']} --nproc_per_node {block['gpus']} "
        "--rdzv_backend c10d --rdzv_endpoint $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1):29500 "
        "-m regmix.cli"
    )


def offline_environment(config: dict) -> dict[str, str]:
    """The demo never touches a hub; a study that names hub data or a hub tokenizer may."""
    uses_hub = (
        config["data"]["source"]["kind"] == "huggingface"
        or config["tokenizer"]["kind"] == "pretrained"
        or config["evaluate"]["suite"] == "lm_eval"
    )
    return {} if uses_hub else {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
