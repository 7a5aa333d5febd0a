# Stage 11 and the evidence: ranked summary, the results database, figures, archive.

FIGURES = []


rule summarize:
    input:
        candidates=expand(f"{R}/candidates/{{candidate}}.yaml", candidate=CANDIDATES),
        losses=expand(f"{R}/large/{{candidate}}/losses.json", candidate=CANDIDATES),
        evals=expand(f"{R}/eval/{{candidate}}.json", candidate=CANDIDATES),
        model=f"{R}/regression/model.pkl",
        code=code_files("summary"),
    output:
        md=f"{R}/summary.md",
        csv=f"{R}/summary.csv",
    params:
        settings=settings("summary"),
    log:
        f"{R}/logs/summarize.log",
    shell:
        "regmix summary --settings {params.settings:q} --candidates-dir {R}/candidates --large-dir {R}/large"
        " --eval-dir {R}/eval --model {R}/regression --out-md {output.md} --out-csv {output.csv} > {log} 2>&1"


rule build_database:
    input:
        summary=f"{R}/summary.csv",
        mixtures=expand(f"{R}/mixtures/{{mix}}.yaml", mix=MIX_IDS),
        proxies=expand(f"{R}/proxies/{{mix}}/losses.json", mix=MIX_IDS),
        cv=f"{R}/regression/cv.json",
        chosen=f"{R}/chosen/regmix.yaml",
        topk=f"{R}/chosen/topk.csv",
        evals=expand(f"{R}/eval/{{candidate}}.json", candidate=CANDIDATES),
        code=code_files("collect"),
    output:
        database=f"{R}/regmix.duckdb",
        parquet=directory(f"{R}/db"),
    log:
        f"{R}/logs/build_database.log",
    shell:
        "regmix collect --results {R} --out {output.database} --parquet-dir {output.parquet} > {log} 2>&1"
