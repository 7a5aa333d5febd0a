# Stages 7-8: regression from mixture weights to the target loss, then the choice.


rule import_swarm:
    input:
        mixtures=lambda w: swarm_settings(config, w.swarm)["swarm"]["mixtures"],
        losses=lambda w: swarm_settings(config, w.swarm)["swarm"]["losses"],
        code=code_files("import_swarm"),
    output:
        mixtures=L.swarm("{swarm}").mixtures,
        losses=L.swarm("{swarm}").losses,
        source=L.swarm("{swarm}").source,
    log:
        L.log("import_swarm", "{swarm}"),
    container:
        CONTAINER
    params:
        settings=lambda w: json.dumps(swarm_settings(config, w.swarm), sort_keys=True),
        out=lambda w, output: os.path.dirname(output.source),
    shell:
        "regmix import-swarm --settings {params.settings:q} --mixtures {input.mixtures:q}"
        " --losses {input.losses:q} --out {params.out:q} > {log:q} 2>&1"


_FIT_FILES = [
    "model.pkl",
    "cv.json",
    "cv_predictions.csv",
    "settings.json",
    "pred_vs_true.png",
]


rule fit_regression:
    input:
        mixtures=L.proxy_mixtures_csv,
        losses=L.proxy_losses_csv,
        swarms=[L.swarm(name).source for name in SWARMS],
        swarm_tables=[
            path
            for name in SWARMS
            for path in (L.swarm(name).mixtures, L.swarm(name).losses)
        ],
        code=code_files("regression"),
    output:
        model=L.regression("model.pkl"),
        cv=L.regression("cv.json"),
        predictions=L.regression("cv_predictions.csv"),
        settings=L.regression("settings.json"),
        plot=L.regression("pred_vs_true.png"),
        targets=[
            L.regression_target(slug, name)
            for slug in TARGET_SLUGS
            for name in _FIT_FILES
        ],
    log:
        L.log("fit_regression"),
    priority: 10
    container:
        CONTAINER
    params:
        # the settings carry regression.target (a set, mean, or a {set: weight} objective)
        # and the regressor
        settings=settings("regression"),
        swarms=lambda w, input: (
            "--swarm "
            + " ".join(shlex.quote(os.path.dirname(p)) for p in input.swarms)
            if input.swarms
            else ""
        ),
        out=lambda w, output: os.path.dirname(output.model),
    shell:
        "regmix fit --settings {params.settings:q} --mixtures {input.mixtures:q} --losses {input.losses:q}"
        " {params.swarms} --out {params.out:q} > {log:q} 2>&1"


rule choose_mixture:
    input:
        model=L.regression("model.pkl"),
        prior=L.prior,
        counts=L.token_counts,
        code=code_files("choose"),
    output:
        chosen=L.chosen,
        topk=L.topk,
        plot=L.chosen_plot,
    log:
        L.log("choose_mixture"),
    priority: 10
    container:
        CONTAINER
    params:
        model=lambda w, input: os.path.dirname(input.model),
        settings=settings("choose"),
    shell:
        "regmix choose --settings {params.settings:q} --model {params.model:q} --prior {input.prior:q}"
        " --tokens-available {input.counts:q} --out {output.chosen:q} --topk-out {output.topk:q}"
        " --plot {output.plot:q} > {log:q} 2>&1"
