#!/usr/bin/env bash
# Snakemake runs this inside envs/regmix.yaml's environment right after creating it,
# from the workflow directory: install the project itself (editable, so the env runs
# the checkout's code and regmix.config finds config/).
set -euo pipefail
python -m pip install --no-deps --no-build-isolation -e .
