"""The settings in force for one generation of an experiment (its overrides applied) and, from
them, each job's typed settings (settings.py): what the rules hand to each job and what Snakemake
compares to decide whether a job must rerun."""
from __future__ import annotations

from ..builders import builder
from ..methods.comparisons import deep_merge
from ..methods.schedules import noisy_student_settings
from ..methods.stages import ModelPlan, beam_models, plan_model
from ..models.registry import model_params
from ..settings import PseudoSettings, SelectionSettings, TrainSettings
from ..trainers import trainer_spec


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


def train_settings(exp: dict, generation: int, model_index: int) -> TrainSettings:
    """Everything one training job needs: the train section, the model, the trainer and its own
    settings, the seed, and (generations >= 1) its plan's parent and share of ground truth, the
    loss terms of the students' settings and Noisy Student's width and noise."""
    s = generation_settings(exp, generation)
    section = s["stage0" if generation == 0 else "students"]
    spec = trainer_spec(section["trainer"], where="trainer")
    params = {**s["train"], "model": model_params(s["model"]), "seed": model_seed(exp["seed"], generation, model_index),
              "trainer": section["trainer"], "labels": section["labels"], "copies_seed": exp["seed"],
              # the checkpoint is chosen by the metric the selection ranks models by
              "select_metric": s["selection"]["metric"]}
    if s["selection"]["dev_images"]:
        params.update(dev_images=s["selection"]["dev_images"], dev_seed=exp["seed"])
    params.update({key: section[key] for key in spec.settings})
    if generation >= 1:
        plan = model_plan(exp, generation, model_index)
        if plan.parent and not spec.continues_parent:
            params["init"] = "parent"
        if plan.parent:
            params["parent"] = plan.parent
        if plan.labeled_share is not None:
            params["labeled_share"] = plan.labeled_share
        if section["dynamic_gamma"] > 0:
            params["dynamic_gamma"] = section["dynamic_gamma"]
        if section["bootstrap"]:
            params["bootstrap"] = True
        if section["augment_spread"]:
            params["augment"] = spread_augment(params["augment"], section["augment_spread"], model_index,
                                               models_in_generation(exp, generation))
        if section["feature_consistency"] > 0:
            params["feature_consistency"] = {k: section[k] for k in ("feature_consistency", "ema_decay",
                                                                     "feature_dropout")}
    settings = TrainSettings.from_params(params, where=f"generation {generation}, model {model_index}")
    if generation >= 1 and s["noisy_student"]["enabled"]:
        ramp_end = s["noisy_student"]["ramp_generations"]  # fixed: not the last generation, which may grow
        settings = noisy_student_settings(settings, s["noisy_student"], generation, ramp_end)
    return settings


def spread_augment(augment: dict, spread: float, index: int, models: int) -> dict:
    """students.augment_spread: student `index` of `models` gets spread x index/(models-1) times
    ALDT's copy noise where that is more than the experiment's augment (the first: unchanged)."""
    from ..data.augment import COPY_NOISE  # the unit of noise strength (torch: only where it is used)
    level = spread * index / max(models - 1, 1)
    return {**augment, **{k: max(augment[k], round(level * getattr(COPY_NOISE, k), 4))
                          for k in ("blur", "noise", "contrast", "brightness")}}


def pseudo_settings(exp: dict, generation: int) -> PseudoSettings:
    """Pseudo-labels of generation g are built from generation g-1's teachers with g's settings,
    as the builder resolves them (the class-balanced builder: round g's ratio in place of the list)."""
    return pseudo_settings_of(generation_settings(exp, generation)["pseudo_labels"], generation)


def pseudo_settings_of(section: dict, generation: int) -> PseudoSettings:
    return PseudoSettings.from_params(builder(section["builder"]).resolve(section, generation),
                                      where=f"pseudo_labels (generation {generation})")


def selection_settings(exp: dict, generation: int) -> SelectionSettings:
    """Selection at the end of generation g keeps the top-k models as generation g+1's teachers."""
    return SelectionSettings.from_params(generation_settings(exp, generation)["selection"], where="selection")


def model_plan(exp: dict, generation: int, model_index: int) -> ModelPlan:
    """What model `model_index` of generation g >= 1 is (methods/stages.py): its parent, label source
    and pseudo-labels."""
    s = generation_settings(exp, generation)
    return plan_model(s["students"], builder(s["pseudo_labels"]["builder"]), generation, model_index,
                      exp["generations"], exp["seed"], trainer_spec(s["students"]["trainer"]).continues_parent)


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
