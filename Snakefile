# histexpr: predict spatial gene expression from H&E histology.
#
#   snakemake --cores N                                  # the embedded demo (config/config.yaml)
#   snakemake --cores N --configfile config/her2st.yaml  # HER2ST
#   snakemake --cores N results/her2st/vit/raw/fold_1/metrics.tsv --configfile config/her2st.yaml
#   snakemake --cores N --configfile config/lymphoma.yaml  # attention sampling, lymphoma subtypes

import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


# The default config is config/config.yaml of the working directory (-d .test runs the catalog's test study),
# else the repository's demo config. A --configfile replaces it rather than merging into it, so no demo
# setting leaks into another study.
DEFAULT_CONFIG = (
    "config/config.yaml"
    if os.path.exists("config/config.yaml")
    else os.path.join(workflow.basedir, "config", "config.yaml")
)
if not workflow.overwrite_configfiles:

    configfile: DEFAULT_CONFIG


# A study is either spatial expression (the default) or megapixel image
# classification (task: classification, e.g. config/lymphoma.yaml).
if config.get("task", "expression") == "classification":

    include: "workflow/rules/common_classify.smk"
    include: "workflow/rules/classify.smk"

    rule all:
        input:
            classify_targets,
        default_target: True


# A spot-size sweep (tiling.spot_sweep): this workflow once per pseudo-spot size, as modules, and their table.
elif config.get("tiling", {}).get("spot_sweep"):

    include: "workflow/rules/common_sweep.smk"
    include: "workflow/rules/spot_sweep.smk"

    rule all:
        input:
            rules.spot_sweep.output,
        default_target: True

else:

    include: "workflow/rules/common.smk"
    include: "workflow/rules/data.smk"
    include: "workflow/rules/folds.smk"
    include: "workflow/rules/extractor.smk"
    include: "workflow/rules/exemplars.smk"
    include: "workflow/rules/train.smk"
    include: "workflow/rules/evaluate.smk"
    include: "workflow/rules/report.smk"
    include: "workflow/rules/predict.smk"

    rule all:
        input:
            final_targets,
        default_target: True


# A read-only or full results folder stops the run before its first job (a dry run writes nothing).
onstart:
    from histexpr.errors import InputError, check_writable

    try:
        check_writable(f"results/{config['study']}")
    except InputError as err:
        raise WorkflowError(f"histexpr error: {err}") from None


# The end of a successful run answers: the verdict lines and where the table is (histexpr.show prints all).
onsuccess:
    from histexpr.show import closing_lines

    for line in closing_lines(f"results/{config['study']}"):
        print(line)
