# Scores per model, teacher selection per generation, and the generation's metrics table.


rule record_settings:
    output:
        "results/{exp}/gen{gen}/settings.json",
    log:
        "results/logs/{exp}/gen{gen}/record_settings.log",
    benchmark:
        "results/benchmarks/{exp}/gen{gen}/record_settings.tsv"
    params:
        settings=lambda w: as_json(
            {"experiment": w.exp, "generation": generation(w), **imc.generation_settings(experiment(w), int(w.gen))}
        ),
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        ENV
    shell:
        "python -m im_core.cli record-settings --settings {params.settings:q} --out {output} --log {log}"


rule score_model:
    input:
        predictions="results/{exp}/gen{gen}/models/m{idx}/predictions.zarr",
        data=data_store,
    output:
        "results/{exp}/gen{gen}/models/m{idx}/scores.json",
    log:
        "results/logs/{exp}/gen{gen}/score_m{idx}.log",
    benchmark:
        "results/benchmarks/{exp}/gen{gen}/score_m{idx}.tsv"
    params:
        dev=dev_arguments,
        code=code_version("score"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        ENV
    shell:
        "python -m im_core.cli score --predictions {input.predictions} --data {input.data} {params.dev}"
        " --out {output} --log {log}"


rule select_teachers:
    input:
        unpack(selection_inputs),
    output:
        "results/{exp}/gen{gen}/selection.json",
    log:
        "results/logs/{exp}/gen{gen}/select_teachers.log",
    benchmark:
        "results/benchmarks/{exp}/gen{gen}/select_teachers.tsv"
    params:
        settings=lambda w: as_json(imc.selection_settings(experiment(w), int(w.gen)).to_params()),
        previous=lambda w, input: f"--previous {input.previous}" if "previous" in input.keys() else "",
        code=code_version("select"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m im_core.cli select --scores {input.scores} {params.previous} --settings {params.settings:q}"
        " --generation {wildcards.gen} --out {output} --log {log}"


rule generation_metrics:
    input:
        unpack(metrics_inputs),
    output:
        table=report(
            "results/{exp}/gen{gen}/metrics.csv",
            caption="../report/metrics.rst",
            category="Metrics",
            subcategory="{exp}",
            labels={"experiment": "{exp}", "generation": "{gen}"},
        ),
        confusions=directory("results/{exp}/gen{gen}/test_confusions.zarr"),
    log:
        "results/logs/{exp}/gen{gen}/generation_metrics.log",
    benchmark:
        "results/benchmarks/{exp}/gen{gen}/generation_metrics.tsv"
    params:
        pseudo=pseudo_arguments,
        teachers=lambda w, input: ("--teacher-predictions " + " ".join(input.teachers)) if "teachers" in input.keys() else "",
        code=code_version("metrics"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    conda:
        ENV
    shell:
        "python -m im_core.cli metrics --scores {input.scores} --selection {input.selection}"
        " --generation {wildcards.gen} {params.pseudo} --checkpoints {input.checkpoints}"
        " {params.teachers} --predictions {input.predictions} --data {input.data} --out {output.table}"
        " --confusions-out {output.confusions} --log {log}"
