# Stage 11 and the evidence: the results database (every number, rebuilt from the
# files), the ranked summary and the report's figures drawn from it, and the archive.
from regmix.plots import FIGURES as _FIGURE_CAPTIONS

FIGURES = [L.figure(name) for name in _FIGURE_CAPTIONS]


rule build_database:
    input:
        prior=L.prior,
        counts=L.token_counts,
        validation_sets=[L.data.sidecar(n, "valid") for n in VALIDATION_SETS],
        mixtures=[L.mixture(m) for m in MIX_IDS],
        proxies=[L.proxy_losses(m) for m in MIX_IDS],
        regression=L.regression("model.pkl"),
        targets=[L.regression_target(slug, "cv.json") for slug in TARGET_SLUGS],
        swarms=[
            path
            for name in SWARMS
            for path in (L.swarm(name).mixtures, L.swarm(name).losses)
        ],
        chosen=L.chosen,
        topk=L.topk,
        candidates=[L.candidate(c) for c in CANDIDATES],
        large=[L.large_losses(c) for c in CANDIDATES],
        evals=[L.eval(c) for c in CANDIDATES],
        samples=[L.eval_samples(c) for c in CANDIDATES] if LOG_SAMPLES else [],
        code=code_files("collect"),
    output:
        database=L.database,
        parquet=directory(L.parquet_dir),
    log:
        L.log("build_database"),
    container:
        CONTAINER
    params:
        settings=settings("collect"),
        results=lambda w: L.results_dir,
    shell:
        "regmix collect --settings {params.settings:q} --results {params.results:q} --out {output.database:q}"
        " --parquet-dir {output.parquet:q} > {log:q} 2>&1"


rule summarize:
    input:
        database=L.database,
        code=code_files("summary"),
    output:
        md=L.summary_md,
        csv=L.summary_csv,
    log:
        L.log("summarize"),
    container:
        CONTAINER
    params:
        settings=settings("summary"),
    shell:
        "regmix summary --settings {params.settings:q} --db {input.database:q}"
        " --out-md {output.md:q} --out-csv {output.csv:q} > {log:q} 2>&1"


rule plot_figures:
    input:
        database=L.database,
        code=code_files("plots"),
    output:
        [
            report(L.figure(name), caption=f"../report/{caption}", category=category)
            for name, (category, caption) in _FIGURE_CAPTIONS.items()
        ],
    log:
        L.log("plot_figures"),
    container:
        CONTAINER
    params:
        settings=settings("plots"),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "regmix plots --settings {params.settings:q} --db {input.database:q} --out-dir {params.out_dir:q}"
        " > {log:q} 2>&1"


# Not part of `all`: `snakemake archive --cores 1` after a finished run. The report is
# packed when `snakemake --report results/report.html` has been made.
rule archive:
    input:
        final_outputs(),
        code=code_files("archive"),
    output:
        L.archive,
    log:
        L.log("archive"),
    container:
        CONTAINER
    params:
        settings=settings("archive"),
        results=lambda w: L.results_dir,
        report=lambda w: L.report,
        configs=list(
            dict.fromkeys(
                [
                    *map(str, workflow.configfiles),
                    "config/schema.yaml",
                    "config/models.yaml",
                ]
            )
        ),
    shell:
        "regmix archive --settings {params.settings:q} --results {params.results:q} --config {params.configs:q}"
        " --report {params.report:q} --lock requirements.lock --out {output:q} > {log:q} 2>&1"
