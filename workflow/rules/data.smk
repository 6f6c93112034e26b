# Raw data in, one tiled sample out: demo generation, HER2ST download, the
# validated sample sheet, and tiling each section into windows + counts.


# Only for a config with a demo: section (common.smk, MAKES_DEMO): a study that merely reads the demo's sheet
# never redraws it.
if MAKES_DEMO:

    rule make_demo:
        output:
            sheet=DEMO_SHEET,
            groups=f"{DEMO_DIR}/gene_groups.tsv",
            readme=f"{DEMO_DIR}/SYNTHETIC_DATA.txt",
            images=demo_files("image"),
            counts=demo_files("counts"),
            spots=demo_files("spots"),
        params:
            demo=config.get("demo", {}),
        log:
            f"{DEMO_DIR}/logs/make_demo.log",
        benchmark:
            f"{DEMO_DIR}/benchmarks/make_demo.tsv"
        conda:
            ENV_DATA
        script:
            "../../scripts/make_demo.py"


rule fetch_her2st:
    output:
        directory(HER2ST_CLONE),
    params:
        repository=config["samples"].get("repository", "") if isinstance(config["samples"], dict) else "",
    log:
        "resources/logs/fetch_her2st.log",
    benchmark:
        "resources/benchmarks/fetch_her2st.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/fetch_her2st.py"


rule sample_sheet:
    input:
        sheet_source(),
    output:
        f"{R}/samples.tsv",
    params:
        layout=sheet_layout(),
        schema=os.path.join(SCHEMAS, "samples.schema.yaml"),
        expression=config["expression"],
        max_image_megapixels=config["tiling"]["max_image_megapixels"],
        bin_um=config["tiling"]["bin_um"],
    log:
        f"{R}/logs/sample_sheet.log",
    benchmark:
        f"{R}/benchmarks/sample_sheet.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/sample_sheet.py"


rule tile:
    input:
        unpack(tile_inputs),
    output:
        windows=f"{R}/tiles/{{sample}}{TILE_SUFFIX}",
        adata=f"{R}/samples/{{sample}}.h5ad",
        qc=report(
            f"{R}/qc/{{sample}}.png",
            category="Spot QC",
            labels={"sample": "{sample}"},
            caption="../report/qc.rst",
        ),
    params:
        tiling=config["tiling"],
        min_counts=config["expression"]["min_counts"],
        sheet=sheet_source(),
    log:
        f"{R}/logs/tile/{{sample}}.log",
    benchmark:
        f"{R}/benchmarks/tile/{{sample}}.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/tile.py"
