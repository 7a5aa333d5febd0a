# Stage 9: large models on each candidate mixture (the chosen one and the baselines).


rule write_candidate:
    input:
        unpack(candidate_inputs),
    output:
        L.candidate("{candidate}"),
    log:
        L.log("write_candidate", "{candidate}"),
    container:
        CONTAINER
    params:
        settings=lambda w: settings("candidates", w.candidate),
        chosen=lambda w, input: option(
            "--chosen", input.chosen if "chosen" in input.keys() else None
        ),
    shell:
        "regmix candidate --settings {params.settings:q} --name {wildcards.candidate:q} --prior {input.prior:q}"
        " --token-counts {input.counts:q} {params.chosen} --out {output:q} > {log:q} 2>&1"


rule train_large:
    input:
        mixture=L.candidate("{candidate}"),
        data=token_files(),
        tokenizer=L.tokenizer,
        code=code_files("large"),
    output:
        model=directory(L.large("{candidate}").model),
        losses=L.large("{candidate}").losses,
        log=L.large("{candidate}").train_log,
    log:
        L.log("train_large", "{candidate}"),
    container:
        CONTAINER
    threads: config["large"]["threads"]
    resources:
        **rule_resources(config, "large"),
    params:
        settings=settings("large"),
        launcher=large_launcher(config),
        data=lambda w: L.data.root,
        out_dir=lambda w, output: os.path.dirname(output.losses),
    shell:
        "{params.launcher} train-large --settings {params.settings:q} --data {params.data:q}"
        " --tokenizer {input.tokenizer:q} --mixture {input.mixture:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
