# Config validation, per-job settings and the helpers the rules share.
import hashlib
import json
import os
import sys

sys.path.insert(0, workflow.basedir)

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

# Jobs run this checkout's im_core, whether or not it is installed (also inside conda envs).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p
)


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
}


def code_version(step):
    digest = hashlib.sha256()
    for module in STEP_MODULES[step]:
        with open(os.path.join(workflow.basedir, "im_core", module + ".py"), "rb") as f:
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


def model_dirs(exp, gen):
    n = imc.models_in_generation(EXPERIMENTS[exp], gen)
    return [f"results/{exp}/gen{gen}/models/m{i}" for i in range(n)]


def generation_scores(w):
    return [d + "/scores.json" for d in model_dirs(w.exp, generation(w))]


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def default_targets():
    return [
        f"results/{name}/gen{EXPERIMENTS[name]['generations']}/metrics.csv"
        for name in CONFIG["default_experiments"]
    ]
