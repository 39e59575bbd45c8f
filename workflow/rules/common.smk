# Config validation, per-job settings and the helpers the rules share.
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, workflow.basedir)  # the config helpers of this checkout

from im_core.io import InputError
import im_core.config as imc

try:
    CONFIG = imc.validate_config(config, where="config")
except InputError as e:
    raise WorkflowError(str(e))

DATASETS = CONFIG["datasets"]
EXPERIMENTS = CONFIG["experiments"]
COMPUTE = CONFIG["compute"]
ENV = "../../envs/im_core.yaml"


def visible_gpus():
    """CUDA GPUs of this machine, counted with nvidia-smi (no torch import at parse time)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


# Training and prediction ask for one GPU each where there are GPUs (compute.gpu: auto), and a
# local run caps the `gpu` resource at the GPU count, so it never runs more GPU jobs at once
# than there are GPUs (an explicit --resources gpu=N wins). Cluster profiles set gpu themselves.
GPUS = visible_gpus() if workflow.local_exec else 0
GPU_PER_JOB = int(GPUS > 0) if COMPUTE["gpu"] == "auto" else int(COMPUTE["gpu"])
if workflow.local_exec and GPU_PER_JOB and "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", max(GPUS, 1))


wildcard_constraints:
    dataset="|".join(DATASETS) or "NO_DATASET",
    exp="|".join(EXPERIMENTS) or "NO_EXPERIMENT",
    gen=r"\d+",
    idx=r"\d+",


# A step's code version is a hash of the im_core modules it runs. It is one of the job's params,
# so editing a module reruns the jobs of the steps that use it (Snakemake's params trigger).
STEP_MODULES = {
    "prepare": ["data", "synthetic", "io"],
    "train": ["train", "data", "models", "losses", "metrics", "predict", "io"],
    "predict": ["predict", "data", "models", "losses", "io"],
    "score": ["evaluate", "metrics", "data", "io"],
    "select": ["selection", "io"],
    "pseudo": ["pseudo", "data", "io"],
    "metrics": ["evaluate", "metrics", "data", "io"],
    "visualize": ["visualize", "io"],
}


def code_version(step):
    digest = hashlib.sha256()
    for module in STEP_MODULES[step]:
        with open(os.path.join(workflow.basedir, "im_core", f"{module}.py"), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def experiment(w):
    return EXPERIMENTS[w.exp]


def generation(w):
    """The generation of a job, checked against the experiment's configured generations."""
    g = int(w.gen)
    last = experiment(w)["generations"]
    if g > last:
        raise WorkflowError(
            f"experiments.{w.exp}.generations is {last}, but gen{g} was requested; "
            f"raise generations in config.yaml to build it"
        )
    return g


def data_store(w):
    return f"results/{experiment(w)['dataset']}/data.zarr"


def model_files(exp, gen, name):
    """`name` (scores.json, predictions.zarr, ...) of every model of a generation."""
    n = imc.models_in_generation(EXPERIMENTS[exp], gen)
    return [f"results/{exp}/gen{gen}/models/m{i}/{name}" for i in range(n)]


def generation_scores(w):
    return model_files(w.exp, generation(w), "scores.json")


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def experiment_tables(w):
    """Every generation's metrics table of one experiment."""
    return [f"results/{w.exp}/gen{g}/metrics.csv" for g in range(EXPERIMENTS[w.exp]["generations"] + 1)]


def all_experiment_tables(w):
    return {
        name: [f"results/{name}/gen{g}/metrics.csv" for g in range(EXPERIMENTS[name]["generations"] + 1)]
        for name in CONFIG["default_experiments"]
    }


def default_targets():
    """Tables, plots and previews of every default experiment, and the plot across them."""
    targets = []
    for name in CONFIG["default_experiments"]:
        last = EXPERIMENTS[name]["generations"]
        targets.append(f"results/{name}/gen{last}/metrics.csv")
        targets.append(f"results/{name}/generations.png")
        targets += [f"results/{name}/gen{g}/preview.png" for g in range(1, last + 1)]
    if CONFIG["default_experiments"]:
        targets.append("results/experiments.png")
    return targets


# ---- input functions of the rules


def train_inputs(w):
    inputs = {"data": data_store(w)}
    if generation(w) > 0:
        inputs["pseudo"] = f"results/{w.exp}/gen{w.gen}/pseudo.zarr"
    n = imc.models_in_generation(experiment(w), int(w.gen))
    if int(w.idx) >= n:
        raise WorkflowError(f"experiments.{w.exp}: generation {w.gen} has {n} models; m{w.idx} does not exist")
    return inputs


def previous_generation(w):
    g = generation(w)
    if g < 1:
        raise WorkflowError(f"results/{w.exp}/gen0 has no pseudo-labels: gen0 trains on labeled images only")
    return g - 1


def teacher_inputs(w):
    prev = previous_generation(w)
    return {
        "data": data_store(w),
        "selection": f"results/{w.exp}/gen{prev}/selection.json",
        "predictions": model_files(w.exp, prev, "predictions.zarr"),
    }


def metrics_inputs(w):
    inputs = {
        "scores": generation_scores(w),
        "selection": f"results/{w.exp}/gen{w.gen}/selection.json",
        "data": data_store(w),
        "settings": f"results/{w.exp}/gen{w.gen}/settings.json",
    }
    if int(w.gen) > 0:
        inputs["pseudo"] = f"results/{w.exp}/gen{w.gen}/pseudo.zarr"
        # so that a run to gen g leaves every earlier generation's table too
        inputs["previous"] = f"results/{w.exp}/gen{int(w.gen) - 1}/metrics.csv"
    return inputs
