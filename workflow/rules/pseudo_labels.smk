# Generation g's pseudo-labels: the inconsistency masks of generation g-1's top-n teachers.


rule build_pseudo_labels:
    input:
        unpack(teacher_inputs),
    output:
        directory("results/{exp}/gen{gen}/pseudo.zarr"),
    log:
        "results/logs/{exp}/gen{gen}/build_pseudo_labels.log",
    benchmark:
        "results/benchmarks/{exp}/gen{gen}/build_pseudo_labels.tsv"
    params:
        settings=lambda w: as_json(imc.pseudo_settings(experiment(w), int(w.gen))),
        code=code_version("pseudo"),
    threads: 1
    resources:
        mem_mb=COMPUTE["predict_mem_mb"],
        runtime=30,
    conda:
        ENV
    shell:
        "python -m im_core.cli pseudo --data {input.data} --selection {input.selection}"
        " --predictions {input.predictions} --settings {params.settings:q} --generation {wildcards.gen}"
        " --out {output} --log {log}"
