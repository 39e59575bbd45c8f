# Data set -> one zarr store (images, masks, splits, class names and palette).


rule prepare_data:
    output:
        directory("results/{dataset}/data.zarr"),
    log:
        "results/logs/{dataset}/prepare_data.log",
    benchmark:
        "results/benchmarks/{dataset}/prepare_data.tsv"
    params:
        settings=lambda w: as_json(DATASETS[w.dataset]),
        # the files it is read from: a changed, added or removed one rebuilds the store
        sources=lambda w: source_fingerprint(w.dataset),
        code=code_version("prepare"),
    threads: COMPUTE["predict_threads"]
    resources:
        mem_mb=COMPUTE["predict_mem_mb"],
        runtime=60,
    conda:
        ENV
    shell:
        "python -m im_core.cli prepare --settings {params.settings:q} --threads {threads} --out {output} --log {log}"
