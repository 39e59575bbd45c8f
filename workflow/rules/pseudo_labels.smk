# Generation g's pseudo-labels from generation g-1's teachers: inconsistency masks of the top-n
# (im), or a baseline builder (model_ensemble, input_ensemble, best_teacher); or, builder parent,
# one store per student from the prediction of the model it continues (GIST/RIST/FIST).


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
        settings=lambda w: as_json(imc.pseudo_settings(experiment(w), int(w.gen)).to_params()),
        checkpoints=lambda w, input: f"--checkpoints {' '.join(input.checkpoints)}" if "checkpoints" in input.keys() else "",
        earlier=lambda w, input: (f"--earlier-selections {' '.join(input.earlier_selections)}"
                                  if "earlier_selections" in input.keys() else ""),
        code=code_version("pseudo"),
    threads: 1
    resources:
        mem_mb=COMPUTE["predict_mem_mb"],
        runtime=30,
    conda:
        ENV
    shell:
        "python -m im_core.cli pseudo --data {input.data} --selection {input.selection} {params.earlier}"
        " --predictions {input.predictions} {params.checkpoints} --settings {params.settings:q} --generation {wildcards.gen}"
        " --out {output} --log {log}"


rule build_parent_pseudo_labels:
    input:
        unpack(parent_pseudo_inputs),
    output:
        directory("results/{exp}/gen{gen}/models/m{idx}/pseudo.zarr"),
    log:
        "results/logs/{exp}/gen{gen}/build_pseudo_labels_m{idx}.log",
    benchmark:
        "results/benchmarks/{exp}/gen{gen}/build_pseudo_labels_m{idx}.tsv"
    params:
        settings=lambda w: as_json(imc.pseudo_settings(experiment(w), int(w.gen)).to_params()),
        parent=parent_of,
        checkpoints=lambda w, input: f"--checkpoints {' '.join(input.checkpoints)}" if "checkpoints" in input.keys() else "",
        code=code_version("pseudo"),
    threads: 1
    resources:
        mem_mb=COMPUTE["predict_mem_mb"],
        runtime=30,
    conda:
        ENV
    shell:
        "python -m im_core.cli pseudo --data {input.data} --selection {input.selection}"
        " --predictions {input.predictions} {params.checkpoints} --parent {params.parent}"
        " --settings {params.settings:q} --generation {wildcards.gen} --out {output} --log {log}"
