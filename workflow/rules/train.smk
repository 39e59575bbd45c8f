# Training and prediction. gen0 = stage-0 models on the labeled split only (LDT);
# gen g >= 1 = fresh students on the labeled split plus generation g's pseudo-labels (or, with
# the consistency trainer, the previous generation's best model fine-tuned). A job runs the
# configured threads whatever Snakemake grants: on a CPU the threads change the sums.


rule train_model:
    input:
        unpack(train_inputs),
    output:
        "results/{exp}/gen{gen}/models/m{idx}/model.pt",
    log:
        "results/logs/{exp}/gen{gen}/train_m{idx}.log",
    benchmark:
        "results/benchmarks/{exp}/gen{gen}/train_m{idx}.tsv"
    params:
        settings=lambda w: as_json(planned_train_settings(w).to_params()),
        pseudo=lambda w, input: f"--pseudo {input.pseudo}" if "pseudo" in input.keys() else "",
        init=lambda w, input: (
            f"--init-selection {input.init_selection} --init-checkpoints {' '.join(input.init_checkpoints)}"
            if "init_selection" in input.keys()
            else ""
        ),
        threads=COMPUTE["train_threads"],
        code=code_version("train"),
    threads: COMPUTE["train_threads"]
    resources:
        mem_mb=COMPUTE["train_mem_mb"],
        runtime=COMPUTE["train_runtime_min"],
        gpu=GPU_PER_JOB,
    conda:
        ENV
    shell:
        "python -m im_core.cli train --data {input.data} {params.pseudo} {params.init}"
        " --settings {params.settings:q}"
        " --model-id gen{wildcards.gen}_m{wildcards.idx} --generation {wildcards.gen}"
        " --threads {params.threads} --out {output} --log {log}"


rule predict:
    input:
        model="results/{exp}/gen{gen}/models/m{idx}/model.pt",
        data=data_store,
    output:
        directory("results/{exp}/gen{gen}/models/m{idx}/predictions.zarr"),
    log:
        "results/logs/{exp}/gen{gen}/predict_m{idx}.log",
    benchmark:
        "results/benchmarks/{exp}/gen{gen}/predict_m{idx}.tsv"
    params:
        batch_size=lambda w: imc.generation_settings(experiment(w), int(w.gen))["train"]["predict_batch_size"],
        threads=COMPUTE["predict_threads"],
        code=code_version("predict"),
    threads: COMPUTE["predict_threads"]
    resources:
        mem_mb=COMPUTE["predict_mem_mb"],
        runtime=60,
        gpu=GPU_PER_JOB,
    conda:
        ENV
    shell:
        "python -m im_core.cli predict --checkpoint {input.model} --data {input.data}"
        " --splits val test unlabeled --batch-size {params.batch_size} --threads {params.threads}"
        " --out {output} --log {log}"
