# Stage 1: the corpus. The demo source is built from installed packages; a Hugging Face
# source with `materialize: true` is read once into per-domain files; other sources are
# read in place by the tokenizer and tokenize rules, and only get a manifest here.
from regmix.corpus import corpus_outputs


rule build_corpus:
    input:
        sources=[] if config["data"]["source"]["kind"] in ("demo", "huggingface") else source_files("train") + source_files("valid"),
        code=code_files("corpus"),
    output:
        corpus_outputs(config),
    params:
        settings=settings("corpus"),
    log:
        f"{R}/logs/build_corpus.log",
    shell:
        "regmix corpus --settings {params.settings:q} --out {R}/corpus > {log} 2>&1"
