# Pictures for people: a preview montage per generation, generation plots, and the
# captions of `snakemake --report report.html`.


rule preview_pseudo_labels:
    input:
        pseudo="results/{exp}/gen{gen}/pseudo.zarr",
        data=data_store,
    output:
        report(
            "results/{exp}/gen{gen}/preview.png",
            caption="../report/preview.rst",
            category="Pseudo-labels",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "generation": "{gen}"},
        ),
    log:
        "results/logs/{exp}/gen{gen}/preview_pseudo_labels.log",
    benchmark:
        "results/benchmarks/{exp}/gen{gen}/preview_pseudo_labels.tsv"
    params:
        images=CONFIG["report"]["preview_images"],
        code=code_version("visualize"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m im_core.cli preview --pseudo {input.pseudo} --data {input.data} --count {params.images}"
        " --out {output} --log {log}"


rule plot_experiment:
    input:
        experiment_tables,
    output:
        report(
            "results/{exp}/generations.png",
            caption="../report/generations.rst",
            category="Generations",
            labels={"experiment": "{exp}"},
        ),
    log:
        "results/logs/{exp}/plot_experiment.log",
    benchmark:
        "results/benchmarks/{exp}/plot_experiment.tsv"
    params:
        tables=lambda w, input: f"{w.exp}={','.join(input)}",
        code=code_version("visualize"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m im_core.cli plot --tables {params.tables} --out {output} --log {log}"


rule plot_paths:
    input:
        experiment_tables,
    output:
        report(
            "results/{exp}/paths.png",
            caption="../report/paths.rst",
            category="Paths",
            labels={"experiment": "{exp}"},
        ),
    log:
        "results/logs/{exp}/plot_paths.log",
    benchmark:
        "results/benchmarks/{exp}/plot_paths.tsv"
    params:
        code=code_version("visualize"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m im_core.cli plot-paths --tables {input} --out {output} --title {wildcards.exp:q} --log {log}"

rule plot_experiments:
    input:
        unpack(all_experiment_tables),
    output:
        report(
            "results/experiments.png",
            caption="../report/experiments.rst",
            category="Generations",
            labels={"experiment": "all"},
        ),
    log:
        "results/logs/plot_experiments.log",
    benchmark:
        "results/benchmarks/plot_experiments.tsv"
    params:
        tables=lambda w, input: " ".join(f"{name}={','.join(input[name])}" for name in input.keys()),
        code=code_version("visualize"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m im_core.cli plot --tables {params.tables} --out {output} --log {log}"


rule compare_methods:
    input:
        unpack(comparison_runs),
        paths=comparison_path_plots,
    output:
        table=report(
            "results/{dataset}/compare.csv",
            caption="../report/compare.rst",
            category="Comparison",
            labels={"data set": "{dataset}", "figure": "table"},
        ),
        plot=report(
            "results/{dataset}/compare.png",
            caption="../report/compare.rst",
            category="Comparison",
            labels={"data set": "{dataset}", "figure": "plot"},
        ),
    log:
        "results/logs/{dataset}/compare_methods.log",
    benchmark:
        "results/benchmarks/{dataset}/compare_methods.tsv"
    params:
        runs=lambda w, input: " ".join(f"{run}={','.join(input[run])}" for run in input.keys() if run != "paths"),
        reference=lambda w: (f"--reference {CONFIG['comparisons'][w.dataset]['reference']}"
                             if CONFIG["comparisons"].get(w.dataset, {}).get("reference") else ""),
        code=code_version("compare"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m im_core.cli compare --runs {params.runs} --title {wildcards.dataset} {params.reference}"
        " --out {output.table} --plot {output.plot} --log {log}"
