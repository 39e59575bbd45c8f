"""Checks across keys of the config that the schema cannot express: what each experiment's
composition of steps (trainers/, builders/, methods/stages.py) allows, comparisons, shared gen0
models, segment entries. Each returns messages that name the key."""
from __future__ import annotations

import re

from ..builders import BUILDERS, builder
from ..data.images import intensity_rule
from ..errors import InputError
from ..methods.comparisons import comparison_rows, deep_merge, expand_comparison
from ..methods.presets import BASELINES, METHODS
from ..methods.stages import beam_models
from ..models.registry import DEFAULT, model_problems, model_stride
from ..settings import PseudoSettings
from ..trainers import CONTINUOUS_TRAINERS, TRAINERS, trainer_problems, trainer_spec
from .resolve import gen0_settings, generation_settings, models_in_generation
from .schema import messages


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_RULE = ("names become folders under results/: start with a letter or digit, then only letters, digits, "
             "'_', '.' and '-', without '..'")
NAMED_SECTIONS = ("datasets", "experiments", "comparisons", "segment")


# folders of results/ that hold no data set or experiment
RESERVED_NAMES = frozenset({"segment", "logs", "benchmarks", "bench"})


def name_problems(config: dict, where: str) -> list[str]:
    """The user-given names of data sets, experiments, comparisons and segment entries, which become
    path segments under results/ and wildcard values: SAFE_NAME, no '..' (checked before the
    comparisons add their experiments, whose generated names hold '/compare/'). A name that is not
    text (YAML reads `1:` as a number) is refused at once: the other checks sort and join names."""
    errors, untyped = [], []
    for section in NAMED_SECTIONS:
        entries = config.get(section)
        for name in entries if isinstance(entries, dict) else ():
            if not isinstance(name, str):
                untyped.append(f"{where}: {section}: name {name!r} is not text (YAML read a "
                               f"{type(name).__name__}); put it in quotes ('{name}')")
            elif not SAFE_NAME.fullmatch(name) or ".." in name:
                errors.append(f"{where}: {section}: name {name!r} is not allowed; {NAME_RULE}")
            elif section != "segment" and name in RESERVED_NAMES:
                errors.append(f"{where}: {section}: name {name!r} is the workflow's own folder results/{name}/; "
                              "choose another name")
    if untyped:
        raise InputError("invalid configuration:\n  " + "\n  ".join(untyped + errors))
    return errors


def segment_problems(config: dict, where: str) -> list[str]:
    """segment entries name an experiment and one of its generations."""
    errors = []
    for name, job in (config.get("segment") or {}).items():
        exp = config["experiments"].get(job["experiment"])
        if exp is None:
            errors.append(f"{where}: segment.{name}.experiment: {job['experiment']!r} is not an experiment; "
                          f"known: {sorted(config['experiments'])}")
        if "intensity_range" in job:
            try:
                intensity_rule(job["intensity_range"], f"{where}: segment.{name}.intensity_range")
            except InputError as e:
                errors.append(str(e))
        if exp is not None and job["generation"] > exp["generations"]:
            errors.append(f"{where}: segment.{name}.generation: {job['generation']} is beyond experiments."
                          f"{job['experiment']}.generations ({exp['generations']}); raise that or choose an earlier "
                          "generation")
    return errors


def check_experiment(name: str, exp: dict, config: dict, validator, where: str) -> list[str]:
    key = f"experiments.{name}"
    if exp["dataset"] not in config["datasets"]:
        return [f"{where}: {key}.dataset: {exp['dataset']!r} is not a data set; known: {sorted(config['datasets'])}"]
    errors = []  # the names users give are checked by name_problems; only comparisons' hold '/'
    for g in sorted({0, 1} | {o["from_generation"] for o in exp["overrides"]}):
        resolved = generation_settings(exp, g)
        found = messages(validator, resolved, where, (key, f"(generation {g} after overrides)"))
        if found:
            errors += found
            continue
        pl, sel = resolved["pseudo_labels"], resolved["selection"]
        models = _fewest_models(resolved, g)
        if sel["top_k"] > models:
            errors.append(f"{where}: {key}.selection.top_k: {sel['top_k']} is more than the {models} models of generation {g}")
        pseudo = _pseudo_settings(pl, g)
        if builder(pl["builder"]).uses_top_n(pseudo) and pl["teachers"] > sel["top_k"] and exp["generations"] >= 1:
            errors.append(f"{where}: {key}.pseudo_labels.teachers: {pl['teachers']} teachers but selection.top_k keeps only {sel['top_k']}")
        errors += _trainer_problems(key, resolved, g, where)
        errors += _model_problems(key, resolved, config["datasets"][exp["dataset"]], g, where)
        if resolved["stage0"]["init"] != "scratch":
            errors.append(f"{where}: {key}.stage0.init: gen0 has no parent generation; use 'scratch'")
        students = resolved["students"]
        errors += _stage_problems(key, resolved, g, where)
        if students["init"] == "parent" and g >= 1 and students["search"] == "none":
            before = generation_settings(exp, g - 1)["stage0" if g == 1 else "students"]["models"]
            if students["parent"] == "same_index" and students["models"] > before:
                errors.append(f"{where}: {key}.students.parent: 'same_index' needs a parent per student, but "
                              f"generation {g} has {students['models']} students and generation {g - 1} {before} models")
        if resolved["stage0"]["labeled_share"] is not None:
            errors.append(f"{where}: {key}.stage0.labeled_share: gen0 has no pseudo-labels; set it for students")
        share = resolved["students"]["labeled_share"]
        learns_from_labels = trainer_spec(students["trainer"]).pseudo_labels and builder(pl["builder"]).makes_labels
        if share is not None and share < 1 and not learns_from_labels:
            errors.append(f"{where}: {key}.students.labeled_share: {share} asks for pseudo-labeled pairs in every "
                          f"batch, but generation {g} has none (trainer {resolved['students']['trainer']!r}, "
                          f"builder {pl['builder']!r})")
        if 1 <= g <= exp["generations"]:
            errors += _student_problems(key, resolved, config["datasets"][exp["dataset"]], g, where)
    if exp["generations"] >= 1 and generation_settings(exp, 0)["stage0"]["labels"] == "all" and not exp["start_from"]:
        errors.append(f"{where}: {key}: stage0.labels 'all' (gen0 trained on the unlabeled images' ground truth, "
                      f"the FDT upper bound) with {exp['generations']} self-training generation(s): every later "
                      "generation would learn from that ground truth through gen0; set generations: 0, or "
                      "stage0.labels: labeled")
    return errors


def _pseudo_settings(section: dict, generation: int) -> PseudoSettings:
    return PseudoSettings.from_params(builder(section["builder"]).resolve(section, generation))


def _trainer_problems(key: str, resolved: dict, g: int, where: str) -> list[str]:
    """Each trainer where its TRAINERS row allows it (gen0, students), its own settings' checks,
    and a builder that makes pseudo-labels exactly for students that learn from them."""
    errors = []
    stage0, students = resolved["stage0"]["trainer"], resolved["students"]["trainer"]
    if not trainer_spec(stage0).stage0:
        usable = ", ".join(repr(n) for n, spec in TRAINERS.items() if spec.stage0)
        reason = "gen0 has no teacher to fine-tune" if trainer_spec(stage0).continues_parent else "it trains students only"
        errors.append(f"{where}: {key}.stage0.trainer: {reason}; use {usable}")
    if not trainer_spec(students).students and g >= 1:
        errors.append(f"{where}: {key}.students.trainer: {students!r} is a stage-0 trainer; set stage0.trainer: "
                      f"{students} and let the students learn from its models")
    for stage, name in (("stage0", stage0), ("students", students)):
        errors += [f"{where}: {key}.{stage}.{m}" for m in trainer_problems(name, resolved[stage])]
    if stage0 in CONTINUOUS_TRAINERS and resolved["stage0"]["continuous"]["im_online"]:
        errors.append(f"{where}: {key}.stage0.continuous.im_online: gen0 has no teachers whose disagreement could "
                      "mask its unlabeled loss; it applies to students")
    pl = resolved["pseudo_labels"]
    # a student that continues its parent may do so on the ground truth alone (the continued-training control)
    continued = resolved["students"]["init"] == "parent" and not builder(pl["builder"]).makes_labels
    if trainer_spec(students).pseudo_labels != builder(pl["builder"]).makes_labels and not continued:
        without = [n for n, spec in TRAINERS.items() if not spec.pseudo_labels]
        errors.append(f"{where}: {key}: students.trainer {' or '.join(map(repr, without))} goes with "
                      f"pseudo_labels.builder 'none' (it uses no pseudo-labels) and only with it; got trainer "
                      f"{students!r}, builder {pl['builder']!r} (generation {g})")
    return errors


def _model_problems(key: str, resolved: dict, ds: dict, g: int, where: str) -> list[str]:
    """The model of generation g: a known architecture and encoder (models/registry.py), the
    data set's size a multiple of its stride, and Noisy Student's widening only where there is
    a width (the 1x1 U-Net)."""
    model = resolved["model"]
    found = model_problems(model, f"{key}.model")
    if found:
        return [f"{where}: {m} (generation {g})" for m in found]
    errors = []
    stride, size = model_stride(model), ds.get("size")
    if size and (size[0] % stride or size[1] % stride):
        fit = [-(-v // stride) * stride for v in size]
        errors.append(f"{where}: datasets.{ds['name']}.size: {size[0]}x{size[1]} is not a multiple of {stride} on both "
                      f"sides, the stride of {key}.model ({model['name']}"
                      f"{' on ' + model['encoder'] if model.get('encoder') else ''}); use e.g. {fit} (and a multiple "
                      "of 16, the data set's own rule)")
    noisy = resolved["noisy_student"]
    if model["name"] != DEFAULT and noisy["enabled"] and g >= 1 and list(noisy["width"]) != [1.0, 1.0]:
        errors.append(f"{where}: {key}.noisy_student.width: widening the students is defined for the 1x1 U-Net "
                      f"(model.alpha), not for {model['name']!r} on {model['encoder']!r}; set noisy_student.width: "
                      "[1.0, 1.0] to keep Noisy Student's input noise (a larger encoder per generation is a model "
                      "override: overrides: [{from_generation: g, model: {encoder: ...}}])")
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
    spec, made_by = trainer_spec(students["trainer"]), builder(pl["builder"])
    continues = search != "none" or students["init"] == "parent" or spec.continues_parent
    if stage0["search"] != "none" or stage0["feature_consistency"] > 0:
        errors.append(f"{where}: {key}.stage0: search and feature_consistency apply to students (gen0 starts from scratch)")
    if g >= 1 and continues and resolved["noisy_student"]["enabled"]:
        errors.append(f"{where}: {key}.students: continuing from a parent (init 'parent', search {search!r}) keeps "
                      "the parent's architecture, but noisy_student widens the students every generation; use one "
                      "or the other")
    if search != "none" and not spec.searchable:
        fits = ", ".join(repr(n) for n, s in TRAINERS.items() if s.searchable)
        errors.append(f"{where}: {key}.students.search: {search!r} continues each parent on L or P with the trainer "
                      f"{fits}; trainer {students['trainer']!r} does not fit")
    if search != "none" and students["labeled_share"] is not None:
        errors.append(f"{where}: {key}.students.labeled_share: search {search!r} chooses L (1) or P (0) per model "
                      "itself; remove labeled_share")
    if made_by.per_student and not continues:
        errors.append(f"{where}: {key}.pseudo_labels.builder: {pl['builder']!r} labels each student's images with its "
                      "parent's prediction, but the students start from scratch; set students.init: parent or a "
                      "students.search")
    if not made_by.one_model:
        one_model = ", ".join(repr(n) for n, b in BUILDERS.items() if b.one_model)
        for name, off in (("label_erase", 0), ("temperature", 1.0)):
            if pl[name] != off:
                errors.append(f"{where}: {key}.pseudo_labels.{name}: applies to the builders that use one model's "
                              f"confidence ({one_model}), not {pl['builder']!r}")
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
    errors += [f"{where}: {key}.pseudo_labels.{m}" for m in builder(pl["builder"]).problems(pl, ds.get("task", "multiclass"))]
    n = len(ds["class_names"])
    if pl["label_mode"] == "im_class" and ds.get("task", "multiclass") == "multiclass" and ds.get("ignore_index") == n:
        errors.append(f"{where}: {key}.pseudo_labels.label_mode: 'im_class' labels IM pixels {n} (after the {n} "
                      f"classes), which is datasets.{ds['name']}.ignore_index, so they would be ignored instead; "
                      "set ignore_index to another value (255 is usual)")
    return errors


def student_budget(exp: dict, g: int) -> tuple[int, int | None, int]:
    """Generation g's students: how many, their steps (None: an epoch budget) and the images a
    step draws (the batch; twice that for a trainer that also draws an unlabeled batch)."""
    s = generation_settings(exp, g)
    per_step = s["train"]["batch_size"] * (2 if trainer_spec(s["students"]["trainer"]).draws_unlabeled else 1)
    return models_in_generation(exp, g), s["train"]["steps"], per_step


def equal_budget(exp: dict, base: dict, where: str) -> list[str]:
    """`budget: equal`: every generation's students of a self-training method together spend the
    image-steps of the base experiment's students in that generation (models x steps x images
    per step); a method with fewer (more) students, or whose trainer draws an unlabeled batch
    too, gives each fewer (more) steps. A model that continues a parent counts its parent's steps
    in the generation that trained the parent. Appends one override per generation."""
    for g in range(1, exp["generations"] + 1):
        ref_models, ref_steps, ref_images = student_budget(base, g)
        models, steps, images = student_budget(exp, g)
        if ref_steps is None or steps is None:
            return [f"{where}: 'equal' shares out step budgets; generation {g}'s students train by epochs "
                    "(train.epochs); give the base experiment's students train.steps"]
        if any(generation_settings(e, g)["train"]["patience"] for e in (base, exp)):
            return [f"{where}: 'equal' shares out step budgets; generation {g}'s students stop early "
                    "(train.patience), so their steps are not known in advance; leave patience out of it"]
        equal = max(1, round(ref_models * ref_steps * ref_images / (models * images)))
        if equal != steps:
            exp["overrides"] = exp["overrides"] + [{"from_generation": g, "train": {"steps": equal}}]
    return []


def expand_comparisons(config: dict, validator, where: str) -> list[str]:
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
        rows = list(comparison_rows(comp)) + list(comp["experiments"])
        if comp.get("reference") and comp["reference"] not in rows:
            errors.append(f"{where}: {key}.reference: {comp['reference']!r} is not a row of this comparison; rows: {rows}")
        for extra in comp["experiments"]:
            if extra not in config["experiments"]:
                errors.append(f"{where}: {key}.experiments: {extra!r} is not an experiment")
            elif config["experiments"][extra]["dataset"] != dataset:
                errors.append(f"{where}: {key}.experiments: {extra!r} uses data set {config['experiments'][extra]['dataset']!r}, not {dataset!r}")
        for name, exp in expand_comparison(dataset, comp, base).items():
            if name in config["experiments"]:
                errors.append(f"{where}: experiments.{name}: this name belongs to {key}; rename the experiment")
                continue
            found = check_experiment(name, exp, config, validator, where)
            if not found and comp.get("budget") == "equal" and exp.get("start_from"):
                found = equal_budget(exp, deep_merge(base, comp["settings"]), f"{where}: {key}.budget")
                found = found or check_experiment(name, exp, config, validator, where)
            errors += [f"{e} (from {key})" for e in found]
            config["experiments"][name] = exp
        if not errors:
            rows = list(expand_comparison(dataset, comp, base)) + list(comp["experiments"])
            errors += mixed_numeric_paths(key, {row: config["experiments"][row] for row in rows}, where)
    return errors


def mixed_numeric_paths(key: str, experiments: dict[str, dict], where: str) -> list[str]:
    """A comparison's rows must ask for one numerical path (train.precision, train.channels_last,
    in every generation): models trained on different paths differ by more than some of the
    differences a table shows."""
    asked: dict[tuple, list[str]] = {}
    for name, exp in experiments.items():
        for g in range(exp["generations"] + 1):
            train = generation_settings(exp, g)["train"]
            asked.setdefault((train["precision"], train["channels_last"]), []).append(f"{name} gen{g}")
    if len(asked) <= 1:
        return []
    listed = "; ".join(f"precision {p}, channels_last {c}: {', '.join(rows[:3])}{' ...' if len(rows) > 3 else ''}"
                       for (p, c), rows in asked.items())
    return [f"{where}: {key}: its rows ask for different numerical paths ({listed}); results of different paths "
            "are not comparable: give every row the same train.precision and train.channels_last (compute.numeric_path "
            "sets them for the whole config)"]


def check_start(name: str, exp: dict, experiments: dict, where: str) -> list[str]:
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
