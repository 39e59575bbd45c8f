"""Validate the workflow config against its JSON schema and resolve per-job settings.

`validate_config` fills in defaults and raises InputError naming every bad key; beyond the
schema it checks what can be checked without reading the images (`dataset_problems`,
`_check_experiment`). `load_config_file` reads a YAML file and reports syntax errors as file:line.
`generation_settings` gives the settings in force for one generation of an experiment
(overrides applied), which is what the rules hand to each job and what Snakemake compares to
decide whether a job must rerun.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .io import InputError
from . import synthetic, synthetic_cells
from .data import empty_split_message, split_sizes
from .sources import SUIM_CLASSES, SUIM_PALETTE, split_list_missing
from .methods import BASELINES, METHODS, deep_merge, expand_comparison
from .schedules import noisy_student_settings
from .stages import ModelPlan, beam_models, plan_model

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

_DEFAULT_COLOURS = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def _validator_with_defaults(schema: dict) -> jsonschema.protocols.Validator:
    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema)


def _key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _messages(validator, instance: Any, where: str, prefix: tuple = ()) -> list[str]:
    out = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        key = _key_path(prefix + tuple(err.absolute_path))
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            msg = f"unknown key(s) {extra}" + (f"; allowed keys: {allowed}" if allowed else "")
        elif err.validator == "enum":
            msg = f"{err.instance!r} is not one of {err.validator_value}"
        else:
            msg = err.message
        out.append(f"{where}: {key}: {msg}")
    return out


def load_yaml_file(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error becomes an InputError naming file:line:column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read this file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not a UTF-8 text file ({e}); save it as UTF-8") from e
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = str(e.problem)
        if e.context:
            started = f" at line {e.context_mark.line + 1}" if e.context_mark and e.context_mark is not mark else ""
            what = f"{e.context}{started}: {what}"
        raise InputError(f"{where}: YAML syntax error: {what}; fix the file at that line") from e
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({e})") from e


def load_config_file(path: str | Path) -> dict:
    """The configuration in a YAML file (not yet validated: pass it to `validate_config`)."""
    config = load_yaml_file(path)
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InputError(f"{path}: the top level must be a mapping with datasets: and experiments:, "
                         f"got a {type(config).__name__}")
    return config


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The config schema, with the comparison methods' enum filled in from the one registry."""
    schema = load_yaml_file(path)
    comparison = schema.get("$defs", {}).get("comparison", {}).get("properties", {})
    if "methods" in comparison:
        comparison["methods"]["items"]["enum"] = list(METHODS)
        comparison["variants"]["additionalProperties"]["properties"]["method"]["enum"] = list(METHODS)
    return schema


def validate_config(config: dict, schema: dict | None = None, where: str = "config") -> dict:
    """Return a validated copy of `config` with defaults filled in; raise InputError otherwise."""
    schema = schema or load_schema()
    config = copy.deepcopy(config)
    errors = _messages(_validator_with_defaults(schema), config, where)
    if not errors:
        for name, ds in config["datasets"].items():
            try:
                config["datasets"][name] = ds = resolve_dataset(name, ds, where)
            except InputError as e:
                errors.append(str(e))
                continue
            errors += dataset_problems(ds, where)
        if errors:
            raise InputError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(errors)))
        experiment_validator = _validator_with_defaults({"$defs": schema["$defs"], "$ref": "#/$defs/experiment"})
        for name, exp in config["experiments"].items():
            errors += _check_experiment(name, exp, config, experiment_validator, where)
        if not errors:
            errors += _expand_comparisons(config, experiment_validator, where)
        for name, exp in config["experiments"].items():
            errors += _check_start(name, exp, config["experiments"], where)
        for name in config["default_experiments"]:
            if name not in config["experiments"]:
                errors.append(f"{where}: default_experiments: {name!r} is not an experiment; known: {sorted(config['experiments'])}")
        errors += _segment_problems(config, where)
    if errors:
        raise InputError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(errors)))
    return config


def _segment_problems(config: dict, where: str) -> list[str]:
    """segment entries name an experiment and one of its generations."""
    errors = []
    for name, job in (config.get("segment") or {}).items():
        exp = config["experiments"].get(job["experiment"])
        if exp is None:
            errors.append(f"{where}: segment.{name}.experiment: {job['experiment']!r} is not an experiment; "
                          f"known: {sorted(config['experiments'])}")
        elif job["generation"] > exp["generations"]:
            errors.append(f"{where}: segment.{name}.generation: {job['generation']} is beyond experiments."
                          f"{job['experiment']}.generations ({exp['generations']}); raise that or choose an earlier "
                          "generation")
    return errors


def resolve_dataset(name: str, ds: dict, where: str = "config") -> dict:
    """Fill the source-dependent defaults: class names, palette, task, size."""
    ds = dict(ds, name=name)
    if ds["source"] == "demo":
        ds.setdefault("class_names", list(synthetic.CLASS_NAMES))
        ds.setdefault("palette", [list(c) for c in synthetic.PALETTE])
        ds.setdefault("size", [32, 32])
    elif ds["source"] == "demo_cells":
        ds.setdefault("class_names", list(synthetic_cells.LABEL_NAMES))
        ds.setdefault("palette", [list(c) for c in synthetic_cells.PALETTE])
        ds.setdefault("size", [48, 48])
        ds.setdefault("task", "multilabel")
    elif ds["source"] == "suim":
        ds.setdefault("class_names", list(SUIM_CLASSES))
        ds.setdefault("palette", [list(c) for c in SUIM_PALETTE])
        ds.setdefault("size", [256, 256])
    ds.setdefault("task", "multiclass")
    n = len(ds["class_names"])
    ds.setdefault("palette", [list(_DEFAULT_COLOURS[i % len(_DEFAULT_COLOURS)]) for i in range(n)])
    if len(ds["palette"]) != n:
        raise InputError(f"{where}: datasets.{name}.palette: {len(ds['palette'])} colours for {n} classes")
    if ds["task"] == "binary" and n != 2:
        raise InputError(f"{where}: datasets.{name}.class_names: a binary task has exactly 2 classes, got {n}")
    if ds["source"] == "demo_cells" and ds["task"] != "multilabel":
        raise InputError(f"{where}: datasets.{name}.task: the demo_cells source makes multi-label data (task: multilabel)")
    return ds


def _multiple_of_16(v: int) -> int:
    """The next multiple of 16 from v up."""
    return -(-v // 16) * 16


def dataset_problems(ds: dict, where: str = "config") -> list[str]:
    """What is wrong with a resolved data set entry, as far as it shows without reading images:
    size, ignore_index, binary_255, crop sides, split lists, and splits the fractions leave empty."""
    key = f"{where}: datasets.{ds['name']}"
    n = len(ds["class_names"])
    errors = []
    if ds.get("size"):
        h, w = ds["size"]
        if h % 16 or w % 16:
            errors.append(f"{key}.size: {h}x{w} is not a multiple of 16 on both sides (the U-Net halves the size "
                          f"four times); use e.g. [{_multiple_of_16(h)}, {_multiple_of_16(w)}]")
        if ds["source"] in ("demo", "demo_cells") and h != w:
            errors.append(f"{key}.size: the {ds['source']} source makes square images; got {h}x{w}")
    ignore = ds.get("ignore_index", 255)
    if ds["task"] == "multilabel" and ignore < 2:
        errors.append(f"{key}.ignore_index: {ignore} is a label value (multi-label masks hold 0 and 1 per label); "
                      "use 255")
    elif 0 <= ignore < n:
        errors.append(f"{key}.ignore_index: {ignore} is the index of class {ds['class_names'][ignore]!r} "
                      f"(classes 0..{n - 1}), so that class's pixels would be ignored; use a value of {n} or more "
                      "(255 is usual)")
    if ds.get("binary_255"):
        if ds["source"] != "folder":
            errors.append(f"{key}.binary_255: applies to the folder source only (source is {ds['source']!r})")
        elif n != 2:
            errors.append(f"{key}.binary_255: maps mask value 255 to class 1 of a 2-class data set; this one has {n} classes")
    if ds.get("crops_per_image") and ds.get("crop_min_side", 256) > ds.get("crop_max_side", 512):
        errors.append(f"{key}.crop_min_side: {ds['crop_min_side']} is larger than crop_max_side {ds['crop_max_side']}")
    lists = ds.get("split_lists") or {}
    if lists and ds["source"] != "folder":
        errors.append(f"{key}.split_lists: applies to the folder source only (source is {ds['source']!r}"
                      + ("; SUIM's test split is its TEST folder)" if ds["source"] == "suim" else ")"))
    elif lists and Path(ds["path"]).is_dir():  # a missing folder is the data job's error (other targets may run)
        errors += [f"{where}: {m}" for split in lists if (m := split_list_missing(ds, split))]
    errors += [f"{where}: {m}" for m in _empty_splits_up_front(ds)]
    return errors


def _empty_splits_up_front(ds: dict) -> list[str]:
    """Splits that will get no image, as far as the config tells: exactly for the demo source (its
    image count is known), from the fractions and split lists for the others."""
    if not all(k in ds for k in ("labeled_fraction", "val_fraction", "test_fraction")):
        return []
    name = ds["name"]
    lists = ds.get("split_lists") or {}
    unlabeled_folder = Path(ds.get("path", "")) / (ds.get("layout") or {}).get("unlabeled", "unlabeled")
    has_unlabeled_folder = ds["source"] == "folder" and unlabeled_folder.is_dir()
    if ds["source"] in ("demo", "demo_cells"):
        message = empty_split_message(split_sizes(ds["n_images"], ds), ds)
        return [message] if message else []
    if ds["source"] == "folder" and lists:
        # with split lists every labeled image's split is the list's: a split without a list stays empty
        missing = [s for s in ("labeled", "val", "test") if s not in lists]
        if missing:
            return [f"datasets.{name}.split_lists: no {missing[0]!r} list, so split {missing[0]!r} would be empty "
                    f"(with split lists, labeled images in no list are not used); add datasets.{name}.split_lists."
                    f"{missing[0]}"]
        if "unlabeled" not in lists and not has_unlabeled_folder and Path(ds["path"]).is_dir():
            return [f"datasets.{name}.split_lists: no 'unlabeled' list and no folder {unlabeled_folder}, "
                    f"so split 'unlabeled' would be empty; add datasets.{name}.split_lists.unlabeled or that folder"]
        return []
    fixed = {"test"} if ds["source"] == "suim" else set()
    counts = split_sizes(10**6, ds, fixed)  # any number of images: what the fractions alone leave empty
    if ds["source"] == "suim":
        counts["test"] = 1  # SUIM's TEST folder
    if has_unlabeled_folder:
        counts["unlabeled"] += 1
    keys = ("labeled_fraction", "val_fraction") + (("test_fraction",) if ds["source"] != "suim" else ())
    detail = "whatever the number of images: " + ", ".join(f"{k} {ds[k]}" for k in keys)
    message = empty_split_message(counts, ds, detail=detail)
    return [message] if message else []


def _check_experiment(name: str, exp: dict, config: dict, validator, where: str) -> list[str]:
    key = f"experiments.{name}"
    if exp["dataset"] not in config["datasets"]:
        return [f"{where}: {key}.dataset: {exp['dataset']!r} is not a data set; known: {sorted(config['datasets'])}"]
    errors = []
    if "/" in name and not name.split("/")[1:2] == ["compare"]:
        errors.append(f"{where}: {key}: experiment names may not contain '/' (used for comparisons' experiments)")
    for g in sorted({0, 1} | {o["from_generation"] for o in exp["overrides"]}):
        resolved = _merged(exp, g)
        found = _messages(validator, resolved, where, (key, f"(generation {g} after overrides)"))
        if found:
            errors += found
            continue
        pl, sel = resolved["pseudo_labels"], resolved["selection"]
        models = _fewest_models(resolved, g)
        if sel["top_k"] > models:
            errors.append(f"{where}: {key}.selection.top_k: {sel['top_k']} is more than the {models} models of generation {g}")
        uses_teachers = pl["builder"] in ENSEMBLE_BUILDERS or (pl["builder"] == "class_balanced" and pl["agreement"])
        if uses_teachers and pl["teachers"] > sel["top_k"] and exp["generations"] >= 1:
            errors.append(f"{where}: {key}.pseudo_labels.teachers: {pl['teachers']} teachers but selection.top_k keeps only {sel['top_k']}")
        if resolved["stage0"]["trainer"] == "consistency":
            errors.append(f"{where}: {key}.stage0.trainer: gen0 has no teacher to fine-tune; use 'supervised' or 'cct'")
        if resolved["students"]["trainer"] == "cct" and g >= 1:
            errors.append(f"{where}: {key}.students.trainer: 'cct' is a stage-0 trainer; set stage0.trainer: cct and "
                          "let the students learn from its models")
        if resolved["stage0"]["trainer"] == "cct" and not any(resolved["stage0"]["cct"]["decoders"].values()):
            errors.append(f"{where}: {key}.stage0.cct.decoders: no auxiliary decoder; give at least one perturbation a count")
        consistency = resolved["students"]["trainer"] == "consistency"
        if consistency != (pl["builder"] == "none"):
            errors.append(f"{where}: {key}: students.trainer 'consistency' goes with pseudo_labels.builder 'none' "
                          f"(it uses no pseudo-labels) and only with it; got trainer {resolved['students']['trainer']!r}, "
                          f"builder {pl['builder']!r} (generation {g})")
        if resolved["stage0"]["init"] != "scratch":
            errors.append(f"{where}: {key}.stage0.init: gen0 has no parent generation; use 'scratch'")
        students = resolved["students"]
        errors += _stage_problems(key, resolved, g, where)
        if students["init"] == "parent" and g >= 1 and students["search"] == "none":
            before = _merged(exp, g - 1)["stage0" if g == 1 else "students"]["models"]
            if students["parent"] == "same_index" and students["models"] > before:
                errors.append(f"{where}: {key}.students.parent: 'same_index' needs a parent per student, but "
                              f"generation {g} has {students['models']} students and generation {g - 1} {before} models")
        if resolved["stage0"]["labeled_share"] is not None:
            errors.append(f"{where}: {key}.stage0.labeled_share: gen0 has no pseudo-labels; set it for students")
        share = resolved["students"]["labeled_share"]
        if share is not None and share < 1 and (consistency or pl["builder"] == "none"):
            errors.append(f"{where}: {key}.students.labeled_share: {share} asks for pseudo-labeled pairs in every "
                          f"batch, but generation {g} has none (trainer {resolved['students']['trainer']!r}, "
                          f"builder {pl['builder']!r})")
        if 1 <= g <= exp["generations"]:
            errors += _student_problems(key, resolved, config["datasets"][exp["dataset"]], g, where)
    if exp["generations"] >= 1 and _merged(exp, 0)["stage0"]["labels"] == "all" and not exp["start_from"]:
        errors.append(f"{where}: {key}: stage0.labels 'all' (gen0 trained on the unlabeled images' ground truth, "
                      f"the FDT upper bound) with {exp['generations']} self-training generation(s): every later "
                      "generation would learn from that ground truth through gen0; set generations: 0, or "
                      "stage0.labels: labeled")
    return errors


def _fewest_models(resolved: dict, g: int) -> int:
    """The fewest models generation g can have with these settings (a beam's grow after generation 1)."""
    if g == 0:
        return resolved["stage0"]["models"]
    students = resolved["students"]
    if students["search"] == "beam":  # at least two parents from generation 2 on
        return beam_models(g, students["beam_width"], 2)
    return students["paths"] if students["search"] == "random" else students["models"]


def _stage_problems(key: str, resolved: dict, g: int, where: str) -> list[str]:
    """The step vocabulary's combinations that cannot work: searches, parents, the parent builder,
    Label Erase and temperature, the feature consistency add-on."""
    errors = []
    pl, students, stage0 = resolved["pseudo_labels"], resolved["students"], resolved["stage0"]
    search = students["search"]
    continues = search != "none" or students["init"] == "parent" or students["trainer"] == "consistency"
    if stage0["search"] != "none" or stage0["feature_consistency"] > 0:
        errors.append(f"{where}: {key}.stage0: search and feature_consistency apply to students (gen0 starts from scratch)")
    if g >= 1 and continues and resolved["noisy_student"]["enabled"]:
        errors.append(f"{where}: {key}.students: continuing from a parent (init 'parent', search {search!r}) keeps "
                      "the parent's architecture, but noisy_student widens the students every generation; use one "
                      "or the other")
    if search != "none" and students["trainer"] != "supervised":
        errors.append(f"{where}: {key}.students.search: {search!r} continues each parent with the supervised "
                      f"trainer on L or P; trainer {students['trainer']!r} does not fit")
    if search != "none" and students["labeled_share"] is not None:
        errors.append(f"{where}: {key}.students.labeled_share: search {search!r} chooses L (1) or P (0) per model "
                      "itself; remove labeled_share")
    if pl["builder"] == "parent" and not continues:
        errors.append(f"{where}: {key}.pseudo_labels.builder: 'parent' labels each student's images with its "
                      "parent's prediction, but the students start from scratch; set students.init: parent or a "
                      "students.search")
    if pl["builder"] not in ("parent", "best_teacher"):
        for name, off in (("label_erase", 0), ("temperature", 1.0)):
            if pl[name] != off:
                errors.append(f"{where}: {key}.pseudo_labels.{name}: applies to the builders that use one model's "
                              f"confidence ('parent', 'best_teacher'), not {pl['builder']!r}")
    return errors


def _student_problems(key: str, resolved: dict, ds: dict, g: int, where: str) -> list[str]:
    """Generation g >= 1 (settings after overrides): no ground truth leak into self-training, and an
    IM class index that is not the ignore index."""
    errors = []
    pl, students = resolved["pseudo_labels"], resolved["students"]
    if students["labels"] == "all" and pl["builder"] != "none":
        errors.append(f"{where}: {key}: students.labels 'all' (every training image's ground truth, the FDT upper "
                      f"bound) with pseudo_labels.builder {pl['builder']!r} from generation {g}: the students would "
                      "train on the ground truth and on pseudo-labels of the same unlabeled images; set "
                      "students.labels: labeled, or pseudo_labels.builder: none")
    n = len(ds["class_names"])
    if pl["label_mode"] == "im_class" and ds.get("task", "multiclass") == "multiclass" and ds.get("ignore_index") == n:
        errors.append(f"{where}: {key}.pseudo_labels.label_mode: 'im_class' labels IM pixels {n} (after the {n} "
                      f"classes), which is datasets.{ds['name']}.ignore_index, so they would be ignored instead; "
                      "set ignore_index to another value (255 is usual)")
    return errors


def _expand_comparisons(config: dict, validator, where: str) -> list[str]:
    """Add each comparison's method x seed experiments to config["experiments"]."""
    errors = []
    for dataset, comp in config["comparisons"].items():
        key = f"comparisons.{dataset}"
        base = config["experiments"].get(comp["base"])
        if base is None:
            errors.append(f"{where}: {key}.base: {comp['base']!r} is not an experiment; known: {sorted(config['experiments'])}")
            continue
        if base["dataset"] != dataset:
            errors.append(f"{where}: {key}.base: experiment {comp['base']!r} uses data set {base['dataset']!r}; "
                          f"a comparison is named after its data set, so its base must use {dataset!r}")
            continue
        if base["start_from"]:
            errors.append(f"{where}: {key}.base: experiment {comp['base']!r} has start_from set; use one that trains its own gen0")
            continue
        for name, variant in comp["variants"].items():
            if variant.get("start") and variant["start"] not in BASELINES:
                errors.append(f"{where}: {key}.variants.{name}.start: {variant['start']!r} is not a baseline to start "
                              f"from; one of {list(BASELINES)}")
            if name in METHODS or name in comp["experiments"]:
                errors.append(f"{where}: {key}.variants.{name}: a variant needs a name of its own, "
                              f"not a method's or a listed experiment's")
        for extra in comp["experiments"]:
            if extra not in config["experiments"]:
                errors.append(f"{where}: {key}.experiments: {extra!r} is not an experiment")
            elif config["experiments"][extra]["dataset"] != dataset:
                errors.append(f"{where}: {key}.experiments: {extra!r} uses data set {config['experiments'][extra]['dataset']!r}, not {dataset!r}")
        for name, exp in expand_comparison(dataset, comp, base).items():
            if name in config["experiments"]:
                errors.append(f"{where}: experiments.{name}: this name belongs to {key}; rename the experiment")
                continue
            found = _check_experiment(name, exp, config, validator, where)
            errors += [f"{e} (from {key})" for e in found]
            config["experiments"][name] = exp
    return errors


def _check_start(name: str, exp: dict, experiments: dict, where: str) -> list[str]:
    """start_from: same data set, same gen0 settings, and no chains."""
    start = exp.get("start_from")
    if not start:
        return []
    key = f"{where}: experiments.{name}.start_from"
    if start not in experiments:
        return [f"{key}: {start!r} is not an experiment"]
    other = experiments[start]
    if other["start_from"]:
        return [f"{key}: {start!r} itself starts from {other['start_from']!r}; name that one instead"]
    if other["dataset"] != exp["dataset"]:
        return [f"{key}: {start!r} uses data set {other['dataset']!r}, this experiment {exp['dataset']!r}"]
    mine, theirs = gen0_settings(exp), gen0_settings(other)
    differ = sorted(k for k in mine if mine[k] != theirs[k])
    if differ:
        return [f"{key}: gen0 settings differ from {start!r} in {differ}; gen0 models can only be shared when they match"]
    return []


def gen0_settings(exp: dict) -> dict:
    s = generation_settings(exp, 0)
    return {"model": s["model"], "train": s["train"], "stage0": s["stage0"], "seed": exp["seed"],
            "dev_images": s["selection"]["dev_images"]}


def _merged(exp: dict, generation: int) -> dict:
    resolved = {k: v for k, v in exp.items() if k != "overrides"}
    for o in exp["overrides"]:
        if o["from_generation"] <= generation:
            resolved = deep_merge(resolved, {k: v for k, v in o.items() if k != "from_generation"})
    return resolved


def generation_settings(exp: dict, generation: int) -> dict:
    """The experiment's settings in force for `generation` (overrides with from_generation <= g)."""
    return _merged(exp, generation)


def train_settings(exp: dict, generation: int, model_index: int) -> dict:
    """Everything one training job needs: the train section, the model, the trainer and the seed."""
    s = generation_settings(exp, generation)
    trainer = s["stage0" if generation == 0 else "students"]
    settings = {**s["train"], "model": dict(s["model"]), "seed": model_seed(exp["seed"], generation, model_index),
                "trainer": trainer["trainer"], "labels": trainer["labels"], "copies_seed": exp["seed"],
                # the checkpoint is chosen by the metric the selection ranks models by
                "select_metric": s["selection"]["metric"]}
    if s["selection"]["dev_images"]:
        settings.update(dev_images=s["selection"]["dev_images"], dev_seed=exp["seed"])
    if trainer["trainer"] == "consistency":
        settings["consistency_weight"] = trainer["consistency_weight"]
    if trainer["trainer"] == "cct":
        settings["cct"] = trainer["cct"]
    if generation >= 1:
        plan = model_plan(exp, generation, model_index)
        if plan.parent and trainer["trainer"] != "consistency":
            settings["init"] = "parent"
        if plan.parent:
            settings["parent"] = plan.parent
        if plan.labeled_share is not None:
            settings["labeled_share"] = plan.labeled_share
    if generation >= 1 and trainer["dynamic_gamma"] > 0:
        settings["dynamic_gamma"] = trainer["dynamic_gamma"]
    if generation >= 1 and trainer["feature_consistency"] > 0:
        settings["feature_consistency"] = {k: trainer[k] for k in ("feature_consistency", "ema_decay", "feature_dropout")}
    if generation >= 1 and s["noisy_student"]["enabled"]:
        ramp_end = s["noisy_student"]["ramp_generations"]  # fixed: not the last generation, which may grow
        settings = noisy_student_settings(settings, s["noisy_student"], generation, ramp_end)
    return settings


ENSEMBLE_BUILDERS = ("im", "model_ensemble")  # builders that use the top-n teachers; the others use the best one


def pseudo_settings(exp: dict, generation: int) -> dict:
    """Pseudo-labels of generation g are built from generation g-1's teachers with g's settings
    (the class-balanced builder: with round g's ratio in place of the list)."""
    settings = dict(generation_settings(exp, generation)["pseudo_labels"])
    ratios = settings.pop("ratios")
    if settings["builder"] == "class_balanced":
        settings["ratio"] = ratios[min(max(generation, 1), len(ratios)) - 1]
    else:
        settings.pop("agreement")
    return settings


def selection_settings(exp: dict, generation: int) -> dict:
    """Selection at the end of generation g keeps the top-k models as generation g+1's teachers."""
    return dict(generation_settings(exp, generation)["selection"])


def model_plan(exp: dict, generation: int, model_index: int) -> ModelPlan:
    """What model `model_index` of generation g >= 1 is (stages.py): its parent, label source
    and pseudo-labels."""
    s = generation_settings(exp, generation)
    return plan_model(s["students"], s["pseudo_labels"]["builder"], generation, model_index, exp["generations"],
                      exp["seed"])


def pseudo_source(exp: dict, generation: int, model_index: int) -> str | None:
    """Which pseudo-label store model i of generation g reads: "generation" (the generation's),
    "parent" (its own, from its parent's prediction) or None."""
    return model_plan(exp, generation, model_index).pseudo if generation >= 1 else None


def uses_pseudo_labels(exp: dict, generation: int) -> bool:
    """Whether any training job of generation g reads the generation's pseudo-label store."""
    return generation >= 1 and any(pseudo_source(exp, generation, i) == "generation"
                                   for i in range(models_in_generation(exp, generation)))


def models_in_generation(exp: dict, generation: int) -> int:
    s = generation_settings(exp, generation)
    if generation == 0:
        return s["stage0"]["models"]
    students = s["students"]
    if students["search"] == "beam":
        return beam_models(generation, students["beam_width"], models_in_generation(exp, generation - 1))
    if students["search"] == "random":
        return students["paths"]
    return students["models"]


def model_seed(experiment_seed: int, generation: int, model_index: int) -> int:
    return experiment_seed * 1_000_003 + generation * 1_000 + model_index
