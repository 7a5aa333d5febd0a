# Stages 2-3: the tokenizer, one token file per domain and split, and the prior.


rule train_tokenizer:
    input:
        documents=source_files("train"),
        code=code_files("tokenizer"),
    output:
        directory(L.tokenizer),
    log:
        L.log("train_tokenizer"),
    container:
        CONTAINER
    params:
        settings=settings("tokenizer"),
        corpus=lambda w: L.corpus.root,
    shell:
        "regmix train-tokenizer --settings {params.settings:q} --corpus {params.corpus:q} --out {output:q}"
        " > {log:q} 2>&1"


rule tokenize_domain:
    input:
        documents=lambda w: sources.input_files(config, w.domain, w.split),
        tokenizer=L.tokenizer,
        code=code_files("tokenize"),
    output:
        tokens=L.data.tokens("{domain}", "{split}"),
        sidecar=L.data.sidecar("{domain}", "{split}"),
    log:
        L.log("tokenize", "{domain}_{split}"),
    container:
        CONTAINER
    threads: config["data"]["workers"]
    params:
        settings=settings("tokenize"),
        corpus=lambda w: L.corpus.root,
        min_tokens=lambda w: min_valid_tokens(config) if w.split == "valid" else 0,
    shell:
        "regmix tokenize --settings {params.settings:q} --corpus {params.corpus:q} --tokenizer {input.tokenizer:q}"
        " --domain {wildcards.domain:q} --split {wildcards.split:q} --min-tokens {params.min_tokens}"
        " --out {output.tokens:q} > {log:q} 2>&1"


# Validation-only sets: a demo set's held-out documents are built on their own (adding a
# set does not rebuild the domains' corpus); every set is tokenized with the study's
# tokenizer into R/data/<set>/valid.bin, where the trainers' validation finds it.
rule build_validation_set:
    input:
        code=code_files("corpus"),
    output:
        L.corpus.validation_set("{vset}"),
    log:
        L.log("build_validation_set", "{vset}"),
    container:
        CONTAINER
    params:
        settings=lambda w: set_settings(w.vset),
        corpus=lambda w: L.corpus.root,
    shell:
        "regmix corpus --settings {params.settings:q} --out {params.corpus:q} --validation-set {wildcards.vset:q}"
        " > {log:q} 2>&1"


rule tokenize_validation_set:
    input:
        documents=lambda w: sources.validation_set_files(config, w.vset),
        tokenizer=L.tokenizer,
        code=code_files("tokenize"),
    output:
        tokens=L.data.tokens("{vset}", "valid"),
        sidecar=L.data.sidecar("{vset}", "valid"),
    log:
        L.log("tokenize_validation_set", "{vset}"),
    container:
        CONTAINER
    threads: config["data"]["workers"]
    params:
        settings=lambda w: set_settings(w.vset),
        corpus=lambda w: L.corpus.root,
        min_tokens=min_valid_tokens(config),
    shell:
        "regmix tokenize --settings {params.settings:q} --corpus {params.corpus:q} --tokenizer {input.tokenizer:q}"
        " --validation-set {wildcards.vset:q} --min-tokens {params.min_tokens} --out {output.tokens:q} > {log:q} 2>&1"


rule compute_prior:
    input:
        sidecars=[L.data.sidecar(d, s) for d in DOMAINS for s in SPLITS],
        code=code_files("tokenize"),
    output:
        prior=L.prior,
        counts=L.token_counts,
    log:
        L.log("compute_prior"),
    container:
        CONTAINER
    params:
        settings=settings("tokenize"),
        data=lambda w: L.data.root,
    shell:
        "regmix prior --settings {params.settings:q} --data {params.data:q}"
        " --out-prior {output.prior:q} --out-counts {output.counts:q} > {log:q} 2>&1"
