# Stage 4: proxy mixtures sampled around the prior.


rule synthesize_mixtures:
    input:
        prior=L.prior,
        counts=L.token_counts,
        code=code_files("mixtures"),
    output:
        mixtures=[L.mixture(m) for m in MIX_IDS],
        table=L.mixtures_table,
    log:
        L.log("synthesize_mixtures"),
    container:
        CONTAINER
    params:
        settings=settings("mixtures"),
        out=lambda w, output: os.path.dirname(output.table),
    shell:
        "regmix mixtures --settings {params.settings:q} --prior {input.prior:q}"
        " --token-counts {input.counts:q} --out {params.out:q} > {log:q} 2>&1"
