# Stage 5: proxy models. One rule per pack: the pack's K mixtures train together in one
# process (stacked weights), and each mixture still gets its own loss file and model.
# All packs share the group "proxies", so a cluster profile can bundle several per job.

PROXY_SAVE_MODEL = config["proxy"]["save_model"]

for _pack, _mixes in PACKS.items():

    rule:
        name:
            f"train_proxies_{_pack}"
        input:
            mixtures=[f"{R}/mixtures/{m}.yaml" for m in _mixes],
            data=token_files(),
            tokenizer=f"{R}/tokenizer",
            code=code_files("proxy"),
        output:
            losses=[f"{R}/proxies/{m}/losses.json" for m in _mixes],
            logs=[f"{R}/proxies/{m}/train_log.jsonl" for m in _mixes],
            models=[directory(f"{R}/proxies/{m}/model") for m in _mixes] if PROXY_SAVE_MODEL else [],
        params:
            settings=settings("proxy"),
            out_dirs=" ".join(f"{R}/proxies/{m}" for m in _mixes),
        threads: config["proxy"]["threads"]
        resources:
            **rule_resources(config, "proxy"),
        group:
            "proxies"
        log:
            f"{R}/logs/train_proxies/{_pack}.log",
        shell:
            "regmix train-proxies --settings {params.settings:q} --data {R}/data --tokenizer {input.tokenizer}"
            " --mixtures {input.mixtures} --out-dirs {params.out_dirs} > {log} 2>&1"


rule collect_proxy_results:
    input:
        losses=expand(f"{R}/proxies/{{mix}}/losses.json", mix=MIX_IDS),
        code=code_files("collect_proxies"),
    output:
        mixtures=f"{R}/proxies/mixtures.csv",
        losses=f"{R}/proxies/losses.csv",
    log:
        f"{R}/logs/collect_proxy_results.log",
    shell:
        "regmix collect-proxies --losses {input.losses} --out-mixtures {output.mixtures}"
        " --out-losses {output.losses} > {log} 2>&1"
