# Stage 1: the offline demo corpus (only when data.source.kind is demo; other sources
# are read in place by the tokenizer and tokenize rules).


if config["data"]["source"]["kind"] == "demo":

    rule build_demo_corpus:
        input:
            code=code_files("corpus"),
        output:
            documents=expand(f"{R}/corpus/{{domain}}/{{split}}.jsonl", domain=DOMAINS, split=SPLITS),
            manifest=f"{R}/corpus/manifest.json",
        params:
            settings=settings("corpus"),
        log:
            f"{R}/logs/build_demo_corpus.log",
        shell:
            "regmix corpus --settings {params.settings:q} --out {R}/corpus > {log} 2>&1"
