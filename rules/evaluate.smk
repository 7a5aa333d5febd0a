# Stage 10: downstream evaluation of every large model with lm-evaluation-harness.

LOCAL_SUITE = config["evaluate"]["suite"] == "local"
LOG_SAMPLES = config["evaluate"]["log_samples"]

if LOCAL_SUITE:

    rule make_eval_tasks:
        input:
            documents=source_files("valid"),
            code=code_files("eval_tasks"),
        output:
            directory(f"{R}/eval_tasks"),
        params:
            settings=settings("eval_tasks"),
        log:
            f"{R}/logs/make_eval_tasks.log",
        shell:
            "regmix make-tasks --settings {params.settings:q} --corpus {R}/corpus --out {output} > {log} 2>&1"


rule evaluate_candidate:
    input:
        model=f"{R}/large/{{candidate}}/model",
        tasks=f"{R}/eval_tasks" if LOCAL_SUITE else [],
        code=code_files("evaluate"),
    output:
        results=f"{R}/eval/{{candidate}}.json",
        samples=f"{R}/eval/{{candidate}}.samples.jsonl" if LOG_SAMPLES else [],
    params:
        settings=settings("evaluate"),
        tasks=f"--tasks {R}/eval_tasks" if LOCAL_SUITE else "",
        samples=lambda w, output: f"--samples-out {output.samples}" if LOG_SAMPLES else "",
    threads: config["evaluate"]["threads"]
    resources:
        **rule_resources(config, "evaluate"),
    log:
        f"{R}/logs/evaluate/{{candidate}}.log",
    shell:
        "regmix evaluate --settings {params.settings:q} --model {input.model} {params.tasks}"
        " --out {output.results} {params.samples} > {log} 2>&1"
