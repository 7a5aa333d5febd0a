# Stage 9: large models on each candidate mixture (the chosen one and the baselines).


rule write_candidate:
    input:
        unpack(candidate_inputs),
    output:
        f"{R}/candidates/{{candidate}}.yaml",
    params:
        settings=lambda w: json.dumps(candidate_settings(config, w.candidate), sort_keys=True),
        chosen=lambda w, input: f"--chosen {input.chosen}" if "chosen" in input.keys() else "",
    log:
        f"{R}/logs/write_candidate/{{candidate}}.log",
    shell:
        "regmix candidate --settings {params.settings:q} --name {wildcards.candidate} --prior {input.prior}"
        " --token-counts {input.counts} {params.chosen} --out {output} > {log} 2>&1"


rule train_large:
    input:
        mixture=f"{R}/candidates/{{candidate}}.yaml",
        data=token_files(),
        tokenizer=f"{R}/tokenizer",
        code=code_files("large"),
    output:
        model=directory(f"{R}/large/{{candidate}}/model"),
        losses=f"{R}/large/{{candidate}}/losses.json",
        log=f"{R}/large/{{candidate}}/train_log.jsonl",
    params:
        settings=settings("large"),
        launcher=large_launcher(config),
    threads: config["large"]["threads"]
    resources:
        **rule_resources(config, "large"),
    log:
        f"{R}/logs/train_large/{{candidate}}.log",
    shell:
        "{params.launcher} train-large --settings {params.settings:q} --data {R}/data --tokenizer {input.tokenizer}"
        " --mixture {input.mixture} --out-dir {R}/large/{wildcards.candidate} > {log} 2>&1"
