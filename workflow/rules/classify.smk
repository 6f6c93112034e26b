# Megapixel classification by attention sampling: sheet -> folds -> one job per
# (setting, seed, fold), and the colour_hist floor -> accuracy table, confusion matrix, attention maps.


if SYNTHETIC:

    rule make_synthetic_images:
        output:
            directory(images_source()),
        params:
            synthetic=config["synthetic"],
        log:
            f"{R}/logs/make_synthetic_images.log",
        benchmark:
            f"{R}/benchmarks/make_synthetic_images.tsv"
        conda:
            ENV_DATA
        script:
            "../../scripts/make_synthetic_images.py"


rule image_sheet:
    input:
        images_source(),
    output:
        f"{R}/images.tsv",
    log:
        f"{R}/logs/image_sheet.log",
    benchmark:
        f"{R}/benchmarks/image_sheet.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/image_sheet.py"


rule class_folds:
    input:
        f"{R}/images.tsv",
    output:
        f"{R}/folds.tsv",
    params:
        folds=config["folds"],
    log:
        f"{R}/logs/class_folds.log",
    benchmark:
        f"{R}/benchmarks/class_folds.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/class_folds.py"


rule train_classifier:
    input:
        folds=f"{R}/folds.tsv",
    output:
        model=f"{R}/{{setting}}/seed_{{seed}}/fold_{{fold}}/model.pt",
        history=f"{R}/{{setting}}/seed_{{seed}}/fold_{{fold}}/history.tsv",
        predictions=f"{R}/{{setting}}/seed_{{seed}}/fold_{{fold}}/predictions.tsv",
    params:
        train=config["train"],
        ats=config["ats"],
        view_scale=config["view_scale"],
        evaluation=config["evaluation"],
    threads: 1
    log:
        f"{R}/logs/train/{{setting}}/seed_{{seed}}/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{setting}}/seed_{{seed}}/fold_{{fold}}.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/train_classifier.py"


rule classification_floor:
    input:
        folds=f"{R}/folds.tsv",
    output:
        history=f"{R}/colour_hist/seed_{{seed}}/fold_{{fold}}/history.tsv",
        predictions=f"{R}/colour_hist/seed_{{seed}}/fold_{{fold}}/predictions.tsv",
    log:
        f"{R}/logs/train/colour_hist/seed_{{seed}}/fold_{{fold}}.log",
    benchmark:
        f"{R}/benchmarks/train/colour_hist/seed_{{seed}}/fold_{{fold}}.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/classification_floor.py"


rule aggregate_classification:
    input:
        predictions=run_files("predictions.tsv"),
        histories=run_files("history.tsv"),
    output:
        accuracy=f"{R}/accuracy.tsv",
        per_fold=f"{R}/accuracy_per_fold.tsv",
        confusion=f"{R}/confusion.tsv",
        figure=report(f"{R}/figures/confusion.png", caption="../report/confusion.rst", category="Classification"),
    log:
        f"{R}/logs/aggregate_classification.log",
    benchmark:
        f"{R}/benchmarks/aggregate_classification.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/aggregate_classification.py"


rule attention_maps:
    input:
        model=f"{R}/{{setting}}/seed_{SEEDS[0]}/fold_1/model.pt",
        predictions=f"{R}/{{setting}}/seed_{SEEDS[0]}/fold_1/predictions.tsv",
    output:
        maps=report(
            f"{R}/figures/attention/{{setting}}.png", caption="../report/attention.rst", category="Classification"
        ),
        concentration_figure=report(
            f"{R}/figures/attention/{{setting}}_concentration.png",
            caption="../report/attention_concentration.rst",
            category="Classification",
        ),
        concentration=f"{R}/attention/{{setting}}.tsv",
    params:
        per_class=config["attention_maps"]["per_class"],
        view_scale=config["view_scale"],
        eval_seed=config["evaluation"]["seed"],
    log:
        f"{R}/logs/attention_maps/{{setting}}.log",
    benchmark:
        f"{R}/benchmarks/attention_maps/{{setting}}.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/attention_maps.py"
