# Expression for slides with no spatial data (config predict.slides): every tissue window of the slide,
# predicted by one trained run (predict.model, predict.protocol, predict.fold), as .h5ad + heat maps.
#   snakemake --cores N predict --configfile config/her2st.yaml   (after adding predict.slides there)


rule predict:
    input:
        predict_targets,


rule predict_slide:
    input:
        unpack(predict_inputs),
    output:
        h5ad=f"{R}/predict/{{slide}}/{PREDICT_DIR}/predictions.h5ad",
        heatmaps=directory(f"{R}/predict/{{slide}}/{PREDICT_DIR}/heatmaps"),
    params:
        slide=lambda wc: config["predict"]["slides"][wc.slide],
        predict=config["predict"],
        run=PREDICT_RUN,
        tiling=config["tiling"],
        exemplars=config["exemplars"],
        train=config["train"],
    log:
        f"{R}/logs/predict/{{slide}}/{PREDICT_DIR}.log",
    benchmark:
        f"{R}/benchmarks/predict/{{slide}}/{PREDICT_DIR}.tsv"
    conda:
        ENV_TORCH
    script:
        "../../scripts/predict.py"
