# A spot-size sweep (tiling.spot_sweep): the whole study once per pseudo-spot side, each a module of this
# workflow with its own config (study <study>/spot_<um>um, tiling.spot_um <um>), then one table and one figure
# of per-section PCC@M against spot size.
for _spot in SPOTS:
    _point = f"spot_{_spot.replace('.', '_')}um"
    _rules = f"{_point}_"

    # what `module <name>: snakefile: ..., config: ...` compiles to, with the name in a variable (snakefmt 0.10
    # does not parse a module's `name:` keyword)
    workflow.module(_point, snakefile=os.path.join(workflow.basedir, "Snakefile"), config=point_config(_spot))

    use rule * from _point as _rules*


rule spot_sweep:
    input:
        expand(f"{R}/spot_{{spot}}um/metrics_by_section.tsv", spot=SPOTS),
    output:
        table=f"{R}/spot_sweep.tsv",
        figure=report(f"{R}/figures/spot_sweep.png", caption="../report/spot_sweep.rst", category="Spot sizes"),
    params:
        spots=[float(s) for s in SPOTS],
        reference=REFERENCE,
        oracle=ORACLE,
    log:
        f"{R}/logs/spot_sweep.log",
    benchmark:
        f"{R}/benchmarks/spot_sweep.tsv"
    conda:
        ENV_DATA
    script:
        "../../scripts/spot_sweep.py"
