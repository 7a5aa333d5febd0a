# Stage 11 and the evidence: the results database (every number, rebuilt from the
# files), the ranked summary and the report's figures drawn from it, and the archive.
from regmix.plots import FIGURES as _FIGURE_CAPTIONS

FIGURES = [f"{R}/figures/{name}" for name in _FIGURE_CAPTIONS]


rule build_database:
    input:
        prior=f"{R}/data/prior.yaml",
        counts=f"{R}/data/token_counts.json",
        mixtures=expand(f"{R}/mixtures/{{mix}}.yaml", mix=MIX_IDS),
        proxies=expand(f"{R}/proxies/{{mix}}/losses.json", mix=MIX_IDS),
        regression=f"{R}/regression/model.pkl",
        chosen=f"{R}/chosen/regmix.yaml",
        topk=f"{R}/chosen/topk.csv",
        candidates=expand(f"{R}/candidates/{{candidate}}.yaml", candidate=CANDIDATES),
        large=expand(f"{R}/large/{{candidate}}/losses.json", candidate=CANDIDATES),
        evals=expand(f"{R}/eval/{{candidate}}.json", candidate=CANDIDATES),
        samples=expand(f"{R}/eval/{{candidate}}.samples.jsonl", candidate=CANDIDATES) if LOG_SAMPLES else [],
        code=code_files("collect"),
    output:
        database=f"{R}/regmix.duckdb",
        parquet=directory(f"{R}/db"),
    params:
        settings=settings("collect"),
    log:
        f"{R}/logs/build_database.log",
    shell:
        "regmix collect --settings {params.settings:q} --results {R} --out {output.database}"
        " --parquet-dir {output.parquet} > {log} 2>&1"


rule summarize:
    input:
        database=f"{R}/regmix.duckdb",
        code=code_files("summary"),
    output:
        md=f"{R}/summary.md",
        csv=f"{R}/summary.csv",
    params:
        settings=settings("summary"),
    log:
        f"{R}/logs/summarize.log",
    shell:
        "regmix summary --settings {params.settings:q} --db {input.database}"
        " --out-md {output.md} --out-csv {output.csv} > {log} 2>&1"


rule plot_figures:
    input:
        database=f"{R}/regmix.duckdb",
        code=code_files("plots"),
    output:
        [
            report(f"{R}/figures/{name}", caption=f"../report/{caption}", category=category)
            for name, (category, caption) in _FIGURE_CAPTIONS.items()
        ],
    params:
        settings=settings("plots"),
    log:
        f"{R}/logs/plot_figures.log",
    shell:
        "regmix plots --settings {params.settings:q} --db {input.database} --out-dir {R}/figures > {log} 2>&1"


# Not part of `all`: `snakemake archive --cores 1` after a finished run. The report is
# packed when `snakemake --report results/report.html` has been made.
rule archive:
    input:
        final_outputs(),
        code=code_files("archive"),
    output:
        f"{R}/archive/regmix-run.tar.gz",
    params:
        settings=settings("archive"),
        configs=" ".join(dict.fromkeys([*map(str, workflow.configfiles), "config/schema.yaml", "config/models.yaml"])),
    log:
        f"{R}/logs/archive.log",
    shell:
        "regmix archive --settings {params.settings:q} --results {R} --config {params.configs}"
        " --report {R}/report.html --lock requirements.lock --out {output} > {log} 2>&1"
