#!/usr/bin/env bash
# The GPU checks, as one prepared script for a machine with a CUDA GPU: the GPU tests,
# then the training benchmark of the paper's proxy (tinyllama_1M: bf16, flash SDPA,
# fused AdamW; eager and torch.compile; K=1, K=8 and the HF Trainer side by side).
# Needs only torch, transformers, accelerate, numpy, pyyaml and pytest (a stock CUDA
# PyTorch image), run from the repository root without installing this package.
# Output goes to the terminal and to ${OUT:-results/gpu_check}/.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
out="${OUT:-results/gpu_check}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
"$py" -m pytest -q tests/workflow/test_gpu.py tests/unit/test_model.py 2>&1 | tee "$out/tests.txt"
# batch 32 x 2048 tokens per model and step; K=8 stacks 8 of them in one step
"$py" benchmarks/train_throughput.py --model tinyllama_1M --batch 32 --micro 32 --pack 8 --steps 10 --warmup 3 \
    --small-micro 0 --device cuda 2>&1 | tee "$out/throughput_eager.txt"
"$py" benchmarks/train_throughput.py --model tinyllama_1M --batch 32 --micro 32 --pack 8 --steps 10 --warmup 5 \
    --small-micro 0 --device cuda --compile --skip-trainer 2>&1 | tee "$out/throughput_compiled.txt"
