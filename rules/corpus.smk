# Stage 1: the corpus. The demo source is built from installed packages; a Hugging Face
# source with `materialize: true` is read once into per-domain files; other sources are
# read in place by the tokenizer and tokenize rules, and only get a manifest here.
from regmix.corpus import corpus_outputs


rule build_corpus:
    input:
        sources=(
            []
            if sources.copies_corpus(config["data"]["source"])
            else source_files("train") + source_files("valid")
        ),
        code=code_files("corpus"),
    output:
        corpus_outputs(config),
    log:
        L.log("build_corpus"),
    container:
        CONTAINER
    params:
        settings=settings("corpus"),
        corpus=lambda w: L.corpus.root,
    shell:
        "regmix corpus --settings {params.settings:q} --out {params.corpus:q} > {log:q} 2>&1"
