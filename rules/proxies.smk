# Stage 5: proxy models. One rule per pack: the pack's K mixtures train together in one
# process (stacked weights), and each mixture still gets its own loss file and model.
# All packs share the group "proxies", so a cluster profile can bundle several per job.

PROXY_SAVE_MODEL = config["proxy"]["save_model"]

for _pack, _mixes in PACKS.items():

    rule:
        name:
            f"train_proxies_{_pack}"
        input:
            mixtures=[L.mixture(m) for m in _mixes],
            data=token_files(),
            tokenizer=L.tokenizer,
            code=code_files("proxy"),
        output:
            losses=[L.proxy(m).losses for m in _mixes],
            logs=[L.proxy(m).train_log for m in _mixes],
            models=(
                [directory(L.proxy(m).model) for m in _mixes]
                if PROXY_SAVE_MODEL
                else []
            ),
        log:
            L.log("train_proxies", _pack),
        # the critical path: the fit, the choice and the regmix candidate wait for every
        # proxy, while the baselines' training and evaluation can fill the cores meanwhile
        priority: 10
        group:
            "proxies"
        container:
            CONTAINER
        threads: config["proxy"]["threads"]
        resources:
            **rule_resources(config, "proxy"),
        params:
            settings=settings("proxy"),
            data=lambda w: L.data.root,
            out_dirs=lambda w, output: [os.path.dirname(p) for p in output.losses],
        shell:
            "regmix train-proxies --settings {params.settings:q} --data {params.data:q}"
            " --tokenizer {input.tokenizer:q} --mixtures {input.mixtures:q} --out-dirs {params.out_dirs:q}"
            " > {log:q} 2>&1"


rule collect_proxy_results:
    input:
        losses=[L.proxy_losses(m) for m in MIX_IDS],
        code=code_files("collect_proxies"),
    output:
        mixtures=L.proxy_mixtures_csv,
        losses=L.proxy_losses_csv,
    log:
        L.log("collect_proxy_results"),
    priority: 10
    container:
        CONTAINER
    shell:
        "regmix collect-proxies --losses {input.losses:q} --out-mixtures {output.mixtures:q}"
        " --out-losses {output.losses:q} > {log:q} 2>&1"
