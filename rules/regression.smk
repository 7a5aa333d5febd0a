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
        settings=settings("regression"),
        target=config["regression"]["target"],
        regressor=config["regression"]["regressor"],
        out=lambda w, output: os.path.dirname(output.model),
    shell:
        "regmix fit --mixtures {input.mixtures:q} --losses {input.losses:q} --target {params.target:q}"
        " --regressor {params.regressor:q} --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"


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
        settings=settings("choose"),
    shell:
        "regmix choose --settings {params.settings:q} --model {params.model:q} --prior {input.prior:q}"
        " --tokens-available {input.counts:q} --out {output.chosen:q} --topk-out {output.topk:q}"
        " --plot {output.plot:q} > {log:q} 2>&1"
