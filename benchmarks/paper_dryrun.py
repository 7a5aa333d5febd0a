#!/usr/bin/env python3
"""How long `snakemake -n --profile slurm --configfile config/paper.yaml` takes to build
the paper's job graph, and how many jobs of each rule it holds.

    python benchmarks/paper_dryrun.py [--repeat N]

Runs in a temporary copy of the workflow (never in the checkout). Prints the wall time
of each repeat and the job count per rule (proxy packs summed into one line).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from tests.cluster import NO_CONTAINER, copy_cluster_workflow, parse_dry_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = copy_cluster_workflow(Path(tmp) / "workflow")
        cmd = ["snakemake", "-n", "--profile", "slurm", *NO_CONTAINER, "--configfile", "config/paper.yaml"]
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            proc = subprocess.run(["timeout", "-s", "KILL", "600", *cmd], cwd=workdir, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
    jobs = parse_dry_run(proc.stdout + proc.stderr)
    counts = Counter(re.sub(r"_pack_\d+$", "_pack_*", job.rule) for job in jobs)
    print(f"{' '.join(cmd)}")
    print("wall seconds: " + "  ".join(f"{t:.1f}" for t in times))
    width = max(map(len, counts))
    for rule, count in sorted(counts.items()):
        print(f"  {rule:<{width}}  {count:>5}")
    print(f"  {'total':<{width}}  {sum(counts.values()):>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
