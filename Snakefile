# Inconsistency-Mask self-training, one cached job per step.
# Usage: snakemake --cores 8 results/demo/gen3/metrics.csv    (see README.md)
# A bare `snakemake --cores all` builds the default experiments with plots and previews;
# then `snakemake --report report.html` writes the HTML report.
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/pseudo_labels.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/segment.smk"


# Cheap aggregation steps run where snakemake runs, not as cluster jobs.
localrules:
    all,
    select_teachers,
    record_settings,
    generation_metrics,
    preview_pseudo_labels,
    plot_experiment,
    plot_paths,
    plot_experiments,
    compare_methods,


rule all:
    input:
        default_targets(),
    default_target: True
