# Stage 10: downstream evaluation of every large model with lm-evaluation-harness.

LOCAL_SUITE = config["evaluate"]["suite"] == "local"
LOG_SAMPLES = config["evaluate"]["log_samples"]

if LOCAL_SUITE:

    rule make_eval_tasks:
        input:
            documents=source_files("valid"),
            code=code_files("eval_tasks"),
        output:
            directory(L.eval_tasks),
        log:
            L.log("make_eval_tasks"),
        container:
            CONTAINER
        params:
            settings=settings("eval_tasks"),
            corpus=lambda w: L.corpus.root,
        shell:
            "regmix make-tasks --settings {params.settings:q} --corpus {params.corpus:q} --out {output:q} > {log:q} 2>&1"


rule evaluate_candidate:
    input:
        model=L.large_model("{candidate}"),
        tasks=L.eval_tasks if LOCAL_SUITE else [],
        code=code_files("evaluate"),
    output:
        results=L.eval("{candidate}"),
        samples=L.eval_samples("{candidate}") if LOG_SAMPLES else [],
    log:
        L.log("evaluate", "{candidate}"),
    container:
        CONTAINER
    threads: config["evaluate"]["threads"]
    resources:
        **rule_resources(config, "evaluate"),
    params:
        settings=settings("evaluate"),
        tasks=lambda w, input: option("--tasks", input.tasks),
        samples=lambda w, output: option("--samples-out", output.samples),
    shell:
        "regmix evaluate --settings {params.settings:q} --model {input.model:q} {params.tasks}"
        " --out {output.results:q} {params.samples} > {log:q} 2>&1"
