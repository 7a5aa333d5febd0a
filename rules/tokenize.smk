# Stages 2-3: the tokenizer, one token file per domain and split, and the prior.


rule train_tokenizer:
    input:
        documents=source_files("train"),
        code=code_files("tokenizer"),
    output:
        directory(f"{R}/tokenizer"),
    params:
        settings=settings("tokenizer"),
    log:
        f"{R}/logs/train_tokenizer.log",
    shell:
        "regmix train-tokenizer --settings {params.settings:q} --corpus {R}/corpus --out {output} > {log} 2>&1"


rule tokenize_domain:
    input:
        documents=lambda w: sources.input_files(config, w.domain, w.split),
        tokenizer=f"{R}/tokenizer",
        code=code_files("tokenize"),
    output:
        tokens=f"{R}/data/{{domain}}/{{split}}.bin",
        sidecar=f"{R}/data/{{domain}}/{{split}}.json",
    params:
        settings=settings("tokenize"),
        min_tokens=lambda w: min_valid_tokens(config) if w.split == "valid" else 0,
    threads: config["data"]["workers"]
    log:
        f"{R}/logs/tokenize/{{domain}}_{{split}}.log",
    shell:
        "regmix tokenize --settings {params.settings:q} --corpus {R}/corpus --tokenizer {input.tokenizer}"
        " --domain {wildcards.domain} --split {wildcards.split} --min-tokens {params.min_tokens}"
        " --out {output.tokens} > {log} 2>&1"


rule compute_prior:
    input:
        sidecars=expand(f"{R}/data/{{domain}}/{{split}}.json", domain=DOMAINS, split=SPLITS),
        code=code_files("tokenize"),
    output:
        prior=f"{R}/data/prior.yaml",
        counts=f"{R}/data/token_counts.json",
    params:
        settings=settings("tokenize"),
    log:
        f"{R}/logs/compute_prior.log",
    shell:
        "regmix prior --settings {params.settings:q} --data {R}/data"
        " --out-prior {output.prior} --out-counts {output.counts} > {log} 2>&1"
