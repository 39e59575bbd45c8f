# Inconsistency-Mask self-training, one cached job per step.
# Usage: snakemake --cores 8 results/demo/gen3/metrics.csv    (see README.md)
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/pseudo_labels.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        default_targets(),
    default_target: True
