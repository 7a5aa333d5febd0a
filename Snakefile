# RegMix: choose a pre-training data mixture by regression over small proxy runs.
# The default config is an offline CPU demo; `--configfile config/paper.yaml` is the
# paper's study. Every stage lives in regmix/; the rules only wire files.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/corpus.smk"
include: "rules/tokenize.smk"
include: "rules/mixtures.smk"
include: "rules/proxies.smk"
include: "rules/regression.smk"
include: "rules/large.smk"
include: "rules/evaluate.smk"
include: "rules/results.smk"


conda: "envs/regmix.yaml"


rule all:
    default_target: True
    input:
        final_outputs(),
