# Stage 4: proxy mixtures sampled around the prior.


rule synthesize_mixtures:
    input:
        prior=f"{R}/data/prior.yaml",
        counts=f"{R}/data/token_counts.json",
        code=code_files("mixtures"),
    output:
        mixtures=expand(f"{R}/mixtures/{{mix}}.yaml", mix=MIX_IDS),
        table=f"{R}/mixtures/mixtures.csv",
    params:
        settings=settings("mixtures"),
    log:
        f"{R}/logs/synthesize_mixtures.log",
    shell:
        "regmix mixtures --settings {params.settings:q} --prior {input.prior}"
        " --token-counts {input.counts} --out {R}/mixtures > {log} 2>&1"
