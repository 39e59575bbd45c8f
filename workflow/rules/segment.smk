# New images segmented with a trained model (config `segment:`): results/segment/<name>/ holds
# masks/, previews/ and summary.json, made by the generation's model of the configured rank on
# the development set (1 = best), read from the generation's selection. The declared output is
# summary.json, not the folder: Snakemake removes a job's outputs before it runs, and people
# keep corrected masks and notes in this folder; the job replaces only the files it wrote and
# nobody changed since (im_core/owned_folder.py).

SEGMENT = CONFIG["segment"]

# per entry: the images, and the generation's selection and checkpoints (gen0 of an experiment
# with start_from: the shared ones); the batch size (default: the experiment's predict_batch_size)
SEGMENT_INPUTS, SEGMENT_BATCH = {}, {}
for _name, _job in SEGMENT.items():
    _exp, _gen = _job["experiment"], _job["generation"]  # checked by im_core.config
    SEGMENT_INPUTS[_name] = {"images": _job["images"], "selection": selection_file(_exp, _gen),
                             "checkpoints": model_files(_exp, _gen, "model.pt")}
    SEGMENT_BATCH[_name] = (_job.get("batch_size")
                            or imc.generation_settings(EXPERIMENTS[_exp], _gen)["train"]["predict_batch_size"])


rule segment_images:
    input:
        unpack(lambda w: SEGMENT_INPUTS[w.name]),
    output:
        "results/segment/{name}/summary.json",
    log:
        "results/logs/segment/{name}.log",
    benchmark:
        "results/benchmarks/segment/{name}.tsv"
    wildcard_constraints:
        name=one_of(SEGMENT),
    params:
        rank=lambda w: SEGMENT[w.name]["rank"],
        batch_size=lambda w: SEGMENT_BATCH[w.name],
        threads=COMPUTE["predict_threads"],
        reading=lambda w: segment_reading(w.name),
        code=code_version("segment"),
    threads: COMPUTE["predict_threads"]
    resources:
        mem_mb=COMPUTE["predict_mem_mb"],
        runtime=60,
        gpu=GPU_PER_JOB,
    conda:
        ENV
    shell:
        "python -m im_core.cli segment --images {input.images:q} --selection {input.selection}"
        " --checkpoints {input.checkpoints} --rank {params.rank} --batch-size {params.batch_size} {params.reading}"
        " --threads {params.threads} --out results/segment/{wildcards.name} --log {log}"
