# Stages 7-8: regression from mixture weights to the target loss, then the choice.


rule fit_regression:
    input:
        mixtures=L.proxy_mixtures_csv,
        losses=L.proxy_losses_csv,
        code=code_files("regression"),
    output:
        model=L.regression("model.pkl"),
        cv=L.regression("cv.json"),
        predictions=L.regression("cv_predictions.csv"),
        settings=L.regression("settings.json"),
        plot=L.regression("pred_vs_true.png"),
    log:
        L.log("fit_regression"),
    container:
        CONTAINER
    params:
        # the settings carry regression.target (a set, mean, or a {set: weight} objective)
        # and the regressor
        settings=settings("regression"),
        out=lambda w, output: os.path.dirname(output.model),
    shell:
        "regmix fit --mixtures {input.mixtures:q} --losses {input.losses:q}"
        " --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"


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
    container:
        CONTAINER
    params:
        model=lambda w, input: os.path.dirname(input.model),
        samples=config["choose"]["samples"],
        top_k=config["choose"]["top_k"],
        max_epochs=config["mixtures"]["max_epochs"],
        train_tokens=stage_settings(config, "choose")["large_train_tokens"],
        seed=config["seed"],
    shell:
        "regmix choose --model {params.model:q} --prior {input.prior:q} --samples {params.samples}"
        " --top-k {params.top_k} --max-epochs {params.max_epochs} --tokens-available {input.counts:q}"
        " --train-tokens {params.train_tokens} --seed {params.seed}"
        " --plot {output.plot:q} --topk-out {output.topk:q} --out {output.chosen:q} > {log:q} 2>&1"
