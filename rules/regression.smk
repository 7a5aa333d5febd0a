# Stages 7-8: regression from mixture weights to the target loss, then the choice.


rule fit_regression:
    input:
        mixtures=f"{R}/proxies/mixtures.csv",
        losses=f"{R}/proxies/losses.csv",
        code=code_files("regression"),
    output:
        model=f"{R}/regression/model.pkl",
        cv=f"{R}/regression/cv.json",
        predictions=f"{R}/regression/cv_predictions.csv",
        settings=f"{R}/regression/settings.json",
        plot=f"{R}/regression/pred_vs_true.png",
    params:
        settings=settings("regression"),
        target=config["regression"]["target"],
        regressor=config["regression"]["regressor"],
    log:
        f"{R}/logs/fit_regression.log",
    shell:
        "regmix fit --mixtures {input.mixtures} --losses {input.losses} --target {params.target}"
        " --regressor {params.regressor} --settings {params.settings:q} --out {R}/regression > {log} 2>&1"


rule choose_mixture:
    input:
        model=f"{R}/regression/model.pkl",
        prior=f"{R}/data/prior.yaml",
        counts=f"{R}/data/token_counts.json",
        code=code_files("choose"),
    output:
        chosen=f"{R}/chosen/regmix.yaml",
        topk=f"{R}/chosen/topk.csv",
        plot=f"{R}/chosen/weights.png",
    params:
        samples=config["choose"]["samples"],
        top_k=config["choose"]["top_k"],
        max_epochs=config["mixtures"]["max_epochs"],
        train_tokens=stage_settings(config, "choose")["large_train_tokens"],
        seed=config["seed"],
    log:
        f"{R}/logs/choose_mixture.log",
    shell:
        "regmix choose --model {R}/regression --prior {input.prior} --samples {params.samples}"
        " --top-k {params.top_k} --max-epochs {params.max_epochs} --tokens-available {input.counts}"
        " --train-tokens {params.train_tokens} --seed {params.seed}"
        " --plot {output.plot} --topk-out {output.topk} --out {output.chosen} > {log} 2>&1"
