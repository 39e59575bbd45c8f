# Config validation, per-job settings and the helpers the rules share.
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, workflow.basedir)  # the config helpers of this checkout

from im_core.builders import builder as builder_named
from im_core.code_versions import code_version
from im_core.data.provenance import differences, fingerprint, source_manifest
from im_core.errors import InputError
from im_core.runtime.cpu import cpu_flags, cpu_name
from im_core.runtime.path_rule import plan_cpu_path
import im_core.config as imc
import im_core.methods.comparisons as imm


def refuse_duplicate_keys(paths):
    """Snakemake reads the config files with PyYAML, whose last duplicate key wins silently: read
    each one again with the strict loader, which names a key given twice (file:line)."""
    seen = set()
    for path in paths:
        if os.path.realpath(path) in seen or not os.path.isfile(path):
            continue
        seen.add(os.path.realpath(path))
        try:
            imc.load_yaml_file(path)
        except imc.DuplicateKeyError as e:
            raise WorkflowError(str(e))
        except InputError:
            pass  # not YAML to PyYAML (e.g. JSON it does not read): Snakemake read it, the config check follows


refuse_duplicate_keys(str(p) for p in workflow.configfiles)

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
# local run caps the `gpu` resource at the GPU count times compute.jobs_per_gpu, so no GPU runs
# more jobs at once than that (an explicit --resources gpu=N wins; each job claims the least busy
# GPU, runtime.pick_device). Cluster profiles set gpu themselves.
GPUS = visible_gpus() if workflow.local_exec else 0
GPU_PER_JOB = int(GPUS > 0) if COMPUTE["gpu"] == "auto" else int(COMPUTE["gpu"])
if workflow.local_exec and GPU_PER_JOB and "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", max(GPUS, 1) * COMPUTE["jobs_per_gpu"])

# On CPUs the numerical path of `auto` settings is a rule of the CPU flags of the machine that
# plans the jobs (a cluster's nodes should share them, or pin compute.numeric_path: docs/speed.md)
CPU_FLAGS = cpu_flags()
if not GPU_PER_JOB:
    _auto = plan_cpu_path("auto", "auto", CPU_FLAGS, None)
    logger.info(
        f"numerical path of CPU jobs with precision/channels_last auto: {_auto[0]}, "
        f"{ {True: 'channels-last', False: 'contiguous'}.get(_auto[1], 'memory format by image size') } "
        f"(by the CPU flags of {cpu_name()}; compute.numeric_path pins it)"
    )


def one_of(names):
    """A wildcard regex matching exactly these names (comparison experiments contain '/')."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "NO_NAME"


wildcard_constraints:
    dataset=one_of(DATASETS),
    exp=one_of(EXPERIMENTS),
    gen=r"\d+",
    idx=r"\d+",


# A step's code version (im_core/code_versions.py: the modules its command imports, and the
# versions recorded for them) is one of its jobs' params, so a change of the code a step runs
# reruns that step's jobs (Snakemake's params trigger), and nothing else.


def experiment(w):
    return EXPERIMENTS[w.exp]


def generation(w, shared_gen0=False):
    """The generation of a job, checked against the experiment's configured generations
    (gen0 of an experiment with start_from only for jobs that may read the shared models)."""
    g = int(w.gen)
    last = experiment(w)["generations"]
    if g > last:
        raise WorkflowError(
            f"experiments.{w.exp}.generations is {last}, but gen{g} was requested; "
            f"raise generations in config.yaml to build it"
        )
    if g == 0 and experiment(w)["start_from"] and not shared_gen0:
        raise WorkflowError(f"experiments.{w.exp} starts from {experiment(w)['start_from']}: its gen0 is {gen_dir(w.exp, 0)}")
    return g


def gen_dir(exp, gen):
    """Where a generation's outputs are: gen0 of an experiment with start_from is that one's."""
    start = EXPERIMENTS[exp]["start_from"]
    return f"results/{start}/gen0" if int(gen) == 0 and start else f"results/{exp}/gen{gen}"


def selection_file(exp, gen):
    """The selection after generation `gen`, which names the next generation's teachers. An
    experiment with start_from shares gen0's models, and their selection too where its selection
    settings match; otherwise it ranks the shared models by its own rule."""
    start = EXPERIMENTS[exp]["start_from"]
    if int(gen) == 0 and start and imc.selection_settings(EXPERIMENTS[exp], 0) == imc.selection_settings(EXPERIMENTS[start], 0):
        return f"results/{start}/gen0/selection.json"
    return f"results/{exp}/gen{gen}/selection.json"


def builder(w):
    """The pseudo-label builder of a job's generation (builders/)."""
    return builder_named(imc.pseudo_settings(experiment(w), int(w.gen)).builder)


@functools.lru_cache(maxsize=None)
def source_fingerprint(dataset):
    """The fingerprint of the files a data set is read from (im_core/data/provenance.py), a
    param of its preparation: any change of them rebuilds the store. Where a store exists and
    its record differs only in the files' times (a copy, a checkout) while their bytes are the
    recorded ones, the recorded fingerprint is kept, and with it the store; otherwise the plan
    says which files changed."""
    manifest = source_manifest(DATASETS[dataset])
    now = fingerprint(manifest)
    store = f"results/{dataset}/data.zarr"
    if now and os.path.isdir(store):
        try:
            import zarr

            attrs = zarr.open_group(store, mode="r").attrs
            recorded, hashes = attrs.get("source_manifest"), attrs.get("source_hashes")
        except Exception:  # an unreadable store is rebuilt anyway
            recorded = hashes = None
        if recorded is not None and fingerprint(recorded) != now:
            changed = differences(recorded, manifest, hashes=hashes)  # reads only the files whose time differs
            if not changed:
                logger.info(f"datasets.{dataset}: files have new times but the bytes {store} was built from; it is kept")
                return fingerprint(recorded)
            logger.info(
                f"datasets.{dataset}: files changed since {store} was built "
                f"({'; '.join(changed)}): it and everything after it are rebuilt"
            )
    return now


def data_store(w):
    return f"results/{experiment(w)['dataset']}/data.zarr"


def model_files(exp, gen, name):
    """`name` (scores.json, predictions.zarr, ...) of every model of a generation."""
    n = imc.models_in_generation(EXPERIMENTS[exp], gen)
    return [f"{gen_dir(exp, gen)}/models/m{i}/{name}" for i in range(n)]


def generation_scores(w):
    return model_files(w.exp, generation(w), "scores.json")


def selection_inputs(w):
    """A generation's scores, and the previous generation's selection (the best model so far carries over)."""
    g = generation(w, shared_gen0=True)
    inputs = {"scores": model_files(w.exp, g, "scores.json")}
    if g > 0:
        inputs["previous"] = selection_file(w.exp, g - 1)
    return inputs


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def tables_of(exp):
    """Every generation's metrics table of one experiment, gen0 first."""
    return [f"{gen_dir(exp, g)}/metrics.csv" for g in range(EXPERIMENTS[exp]["generations"] + 1)]


def experiment_tables(w):
    return tables_of(w.exp)


def all_experiment_tables(w):
    return {name: tables_of(name) for name in CONFIG["default_experiments"]}


def comparison_runs(w):
    """METHOD:SEED -> metrics tables, for every run of the data set's comparison."""
    if w.dataset not in CONFIG["comparisons"]:
        raise WorkflowError(
            f"results/{w.dataset}/compare.csv: config has no comparisons.{w.dataset}; "
            f"configured: {sorted(CONFIG['comparisons'])}"
        )
    comp = CONFIG["comparisons"][w.dataset]
    rows = imm.comparison_rows(comp)
    runs = {f"{row}:{s}": tables_of(imm.experiment_name(w.dataset, row, s)) for s in comp["seeds"] for row in rows}
    runs.update({f"{name}:{EXPERIMENTS[name]['seed']}": tables_of(name) for name in comp["experiments"]})
    return runs


def continues_parents(exp):
    """Whether some model of the experiment continues from a parent (its paths are worth a plot)."""
    e = EXPERIMENTS[exp]
    return any(imc.model_plan(e, g, i).parent for g in range(1, e["generations"] + 1)
               for i in range(imc.models_in_generation(e, g)))


def comparison_path_plots(w):
    """The paths plot of every run of the comparison whose models continue from a parent (GIST, RIST, FIST)."""
    comp = CONFIG["comparisons"].get(w.dataset, {})
    names = [imm.experiment_name(w.dataset, row, s) for s in comp.get("seeds", []) for row in imm.comparison_rows(comp)]
    return [f"results/{name}/paths.png" for name in names + list(comp.get("experiments", [])) if continues_parents(name)]


def default_targets():
    """Tables, plots and previews of every default experiment, and the plot across them."""
    targets = []
    for name in CONFIG["default_experiments"]:
        last = EXPERIMENTS[name]["generations"]
        targets.append(f"results/{name}/gen{last}/metrics.csv")
        targets.append(f"results/{name}/generations.png")
        targets += [f"results/{name}/gen{g}/preview.png" for g in range(1, last + 1) if imc.uses_pseudo_labels(EXPERIMENTS[name], g)]
        if continues_parents(name):
            targets.append(f"results/{name}/paths.png")
    if CONFIG["default_experiments"]:
        targets.append("results/experiments.png")
    return targets


# ---- input functions of the rules


def train_inputs(w):
    n = imc.models_in_generation(experiment(w), int(w.gen))
    if int(w.idx) >= n:
        raise WorkflowError(f"experiments.{w.exp}: generation {w.gen} has {n} models; m{w.idx} does not exist")
    inputs = {"data": data_store(w)}
    pseudo = student_pseudo_store(w.exp, generation(w), int(w.idx))
    if pseudo:
        inputs["pseudo"] = pseudo
    settings = imc.train_settings(experiment(w), int(w.gen), int(w.idx))
    if int(w.gen) > 0 and settings.parent:
        inputs["init_selection"] = selection_file(w.exp, int(w.gen) - 1)
        # the best so far may be any earlier generation's model
        earlier = range(int(w.gen)) if settings.parent == "best_so_far" else [int(w.gen) - 1]
        inputs["init_checkpoints"] = [f for g in earlier for f in model_files(w.exp, g, "model.pt")]
    return inputs


def planned_train_settings(w):
    """A training job's settings with its numerical path settled: on CPUs, `auto` precision and
    channels_last by the rule of this machine's CPU flags (im_core/runtime/path_rule.py), so the
    path is part of the job's params and a change of it reruns the job; on GPUs the job settles
    `auto` itself."""
    settings = imc.train_settings(experiment(w), int(w.gen), int(w.idx))
    if GPU_PER_JOB:
        return settings
    size = DATASETS[experiment(w)["dataset"]].get("size")
    precision, channels_last = plan_cpu_path(settings.precision, settings.channels_last, CPU_FLAGS, size)
    return dataclasses.replace(settings, precision=precision, channels_last=channels_last)


def student_pseudo_store(exp, gen, idx):
    """The pseudo-label store model m<idx> of generation `gen` trains on: the generation's, its
    own (built from its parent's prediction), or none."""
    source = imc.pseudo_source(EXPERIMENTS[exp], int(gen), int(idx))
    if source == "generation":
        return f"results/{exp}/gen{gen}/pseudo.zarr"
    if source == "parent":
        return f"results/{exp}/gen{gen}/models/m{idx}/pseudo.zarr"
    return None


def pseudo_stores(exp, gen):
    """Model id -> the pseudo-label store it trained on, for the models of a generation that have one."""
    stores = {}
    for i in range(imc.models_in_generation(EXPERIMENTS[exp], int(gen))):
        store = student_pseudo_store(exp, gen, i) if int(gen) > 0 else None
        if store:
            stores[f"gen{gen}_m{i}"] = store
    return stores


def previous_generation(w):
    g = generation(w)
    if g < 1:
        raise WorkflowError(f"results/{w.exp}/gen0 has no pseudo-labels: gen0 trains on labeled images only")
    return g - 1


def teacher_inputs(w):
    prev = previous_generation(w)
    settings = imc.pseudo_settings(experiment(w), int(w.gen))
    made_by = builder(w)
    if not made_by.makes_labels:
        raise WorkflowError(f"experiments.{w.exp}: pseudo_labels.builder is {settings.builder!r} in generation {w.gen}; "
                            "it has no pseudo-labels")
    # the best model so far may be any earlier generation's; im may draw teachers from earlier generations
    inputs = {
        "data": data_store(w),
        "selection": selection_file(w.exp, prev),
        "predictions": [f for g in made_by.generations_read(settings, prev)
                        for f in model_files(w.exp, g, "predictions.zarr")],
    }
    earlier = made_by.selections_read(settings, prev)
    if earlier:
        inputs["earlier_selections"] = [selection_file(w.exp, g) for g in earlier]
    if made_by.reruns(settings):
        inputs["checkpoints"] = model_files(w.exp, prev, "model.pt")
    return inputs


def pseudo_arguments(w):
    """--pseudo MODEL_ID=STORE ... for a generation's metrics table (nothing for gen0)."""
    stores = pseudo_stores(w.exp, w.gen) if int(w.gen) > 0 else {}
    return ("--pseudo " + " ".join(f"{m}={p}" for m, p in stores.items())) if stores else ""


def dev_arguments(w):
    """The development set of a score job: the experiment's selection.dev_images (gen0 of an
    experiment with start_from is scored by that experiment, whose dev set it must share)."""
    dev_images = imc.selection_settings(experiment(w), int(w.gen)).dev_images
    return f"--dev-images {dev_images} --dev-seed {experiment(w)['seed']}" if dev_images else ""


def parent_pseudo_inputs(w):
    """A student's own pseudo-labels: its parent's prediction (builder parent)."""
    if imc.pseudo_source(experiment(w), generation(w), int(w.idx)) != "parent":
        raise WorkflowError(f"experiments.{w.exp}: model m{w.idx} of generation {w.gen} has no pseudo-labels of its "
                            "own (pseudo_labels.builder is not 'parent', or it trains on ground truth only)")
    return teacher_inputs(w)


def parent_of(w):
    return imc.model_plan(experiment(w), int(w.gen), int(w.idx)).parent


def metrics_inputs(w):
    inputs = {
        "scores": generation_scores(w),
        "selection": f"results/{w.exp}/gen{w.gen}/selection.json",
        "data": data_store(w),
        "settings": f"results/{w.exp}/gen{w.gen}/settings.json",
    }
    inputs["checkpoints"] = model_files(w.exp, int(w.gen), "model.pt")  # what training cost
    inputs["predictions"] = model_files(w.exp, int(w.gen), "predictions.zarr")  # per-image test confusions
    if int(w.gen) > 0:
        inputs["pseudo"] = sorted(set(pseudo_stores(w.exp, w.gen).values()))
        # so that a run to gen g leaves every earlier generation's table too
        inputs["previous"] = f"{gen_dir(w.exp, int(w.gen) - 1)}/metrics.csv"
        # the teachers' predictions: how much of their error the mask finds
        read = builder(w).generations_read(imc.pseudo_settings(experiment(w), int(w.gen)), int(w.gen) - 1)
        inputs["teachers"] = [f for g in read for f in model_files(w.exp, g, "predictions.zarr")]
    return inputs


def segment_reading(name):
    """How the entry's images are read: its own intensity_range and max_image_pixels, else
    those of the experiment's data set (the model learned from images read so)."""
    job = CONFIG["segment"][name]
    ds = DATASETS[EXPERIMENTS[job["experiment"]]["dataset"]]
    rng = job.get("intensity_range", ds.get("intensity_range", "auto"))
    args = f"--intensity-range {rng if isinstance(rng, str) else ','.join(str(v) for v in rng)}"
    limit = job.get("max_image_pixels", ds.get("max_image_pixels"))
    return args + (f" --max-image-pixels {limit}" if limit else "")
