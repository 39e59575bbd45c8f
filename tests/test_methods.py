"""Methods as compositions of settings, comparisons expanded into experiments, and the
Noisy Student schedule."""
import copy

import pytest

from conftest import augment, replace
from conftest import train_settings as train_settings_of

from im_core.config import generation_settings, load_schema, pseudo_settings, train_settings, validate_config
from im_core.errors import InputError
from im_core.methods.comparisons import experiment_name, seed_targets
from im_core.methods.presets import METHODS
from im_core.methods.schedules import noisy_student_settings, ramp

BASE = {
    "datasets": {"d": {"source": "demo"}},
    "experiments": {"e": {"dataset": "d", "generations": 3, "model": {"alpha": 0.5},
                          "train": {"steps": 100}, "stage0": {"models": 3}, "students": {"models": 3},
                          "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2},
                          "overrides": [{"from_generation": 1, "train": {"steps": 200}}]}},
    "comparisons": {"d": {"base": "e", "seeds": [0, 1], "generations": 2,
                          "settings": {"noisy_student": {"ramp_generations": 2}}}},
}


def expanded(config=BASE):
    return validate_config(copy.deepcopy(config))["experiments"]


def test_every_method_and_seed_becomes_an_experiment_sharing_its_start():
    exps = expanded()
    default_methods = load_schema()["$defs"]["comparison"]["properties"]["methods"]["default"]  # the IM paper's table
    assert set(default_methods) < set(METHODS)
    for seed in (0, 1):
        for method in default_methods:
            assert experiment_name("d", method, seed) in exps
        im = exps[experiment_name("d", "im", seed)]
        assert im["start_from"] == experiment_name("d", "ldt", seed) and im["generations"] == 2 and im["seed"] == seed
        assert exps[experiment_name("d", "aim_plus", seed)]["start_from"] == experiment_name("d", "aldt", seed)
        assert exps[experiment_name("d", "ldt", seed)]["generations"] == 0
    assert exps["e"]["start_from"] is None  # the base is untouched


def test_method_settings():
    exps = expanded()
    name = lambda m: experiment_name("d", m, 0)
    assert train_settings(exps[name("fdt")], 0, 0).labels == "all"
    assert train_settings(exps[name("ldt")], 0, 0).labels == "labeled"
    assert train_settings(exps[name("aldt")], 0, 0).labeled_copies == 9
    # gen0 on a student-sized set (FDT, ALDT and AIM+ from it) has the students' step budget
    assert [train_settings(exps[name(m)], 0, 0).steps for m in ("ldt", "fdt", "aldt", "aim_plus")] == [100, 200, 200, 200]
    # LDT to its plateau: early stopping within ten times gen0's steps; the others train every step
    plateau = train_settings(exps[name("ldt_plateau")], 0, 0)
    assert (plateau.steps, plateau.patience, train_settings(exps[name("ldt")], 0, 0).patience) == (1000, 8, None)
    assert train_settings(exps[name("aim_plus")], 2, 0).labeled_copies == 9
    assert pseudo_settings(exps[name("model_ensemble")], 1).builder == "model_ensemble"
    assert pseudo_settings(exps[name("input_ensemble")], 1).builder == "input_ensemble"
    assert pseudo_settings(exps[name("noisy_student")], 1).builder == "best_teacher"
    assert train_settings(exps[name("consistency")], 1, 0).trainer == "consistency"
    assert train_settings(exps[name("consistency")], 1, 0).options["consistency_weight"] == 1.0
    # the base's override (students train 200 steps) holds for every method
    assert train_settings(exps[name("im")], 1, 0).steps == 200
    # same seed, same gen0: the self-training methods and their start train identical gen0 models
    assert train_settings(exps[name("ldt")], 0, 1) == train_settings(exps[name("im")], 0, 1)


def test_noisy_student_widens_and_noises_students_per_generation():
    exps = expanded()
    ns = exps[experiment_name("d", "im_plus", 0)]
    gen0, gen1, gen2 = (train_settings(ns, g, 0) for g in range(3))
    assert gen0.model.alpha == 0.5 and gen0.augment.noise == 0 and gen0.pseudo_augment is None
    assert gen1.model.alpha == 0.5 and gen1.pseudo_augment.noise == 5.0 and gen1.augment.noise == 0
    assert gen2.model.alpha == 1.0 and gen2.pseudo_augment.noise == 25.0 and gen2.pseudo_augment.blur == 3.0
    plain = train_settings(exps[experiment_name("d", "im", 0)], 2, 0)
    assert plain.model.alpha == 0.5 and plain.augment.noise == 0


def test_ramp_and_schedule_are_linear_between_first_and_last_generation():
    assert ramp([1, 2], 1, 5) == 1 and ramp([1, 2], 3, 5) == 1.5 and ramp([1, 2], 5, 5) == 2
    assert ramp([1, 2], 1, 1) == 2  # a single generation gets the full strength
    train = train_settings_of(model={"alpha": 1.0, "dropout": 0.0}, augment=augment(noise=30).to_params())
    out = noisy_student_settings(train, {"width": [1, 2], "blur": [0, 3], "noise": [5, 25], "contrast": [0.1, 0.5],
                                         "brightness": [5, 25]}, 2, 3)
    assert out.model.alpha == 1.5 and out.pseudo_augment.noise == 30  # a stronger configured noise stays
    assert out.pseudo_augment.blur == 1.5 and out.augment == train.augment  # ground truth: unchanged
    assert train.model.alpha == 1.0  # input not modified


def test_methods_subset_still_builds_their_start():
    cfg = copy.deepcopy(BASE)
    cfg["comparisons"]["d"].update(methods=["aim_plus"], seeds=[3])
    exps = expanded(cfg)
    assert set(exps) == {"e", experiment_name("d", "aim_plus", 3), experiment_name("d", "aldt", 3)}


def test_variants_are_rows_of_a_method_with_changed_settings_for_every_seed():
    cfg = copy.deepcopy(BASE)
    cfg["comparisons"]["d"].update(methods=["im"], variants={
        "im_class": {"method": "im", "settings": {"pseudo_labels": {"label_mode": "im_class", "dilate": 3}}},
        "aim_wide": {"method": "aim_plus", "settings": {"noisy_student": {"width": [1.0, 3.0]}}}})
    exps = expanded(cfg)
    for seed in (0, 1):
        variant = exps[experiment_name("d", "im_class", seed)]
        assert variant["start_from"] == experiment_name("d", "ldt", seed) and variant["generations"] == 2
        assert pseudo_settings(variant, 1) == replace(pseudo_settings(exps[experiment_name("d", "im", seed)], 1),
                                                      label_mode="im_class", dilate=3)
        wide = exps[experiment_name("d", "aim_wide", seed)]
        assert wide["start_from"] == experiment_name("d", "aldt", seed)  # its method's start is built too
        assert train_settings(wide, 2, 0).model.alpha == 1.5 and train_settings(wide, 2, 0).labeled_copies == 9
    assert experiment_name("d", "aim_plus", 0) not in exps  # only the start of a variant's method, not the method


@pytest.mark.parametrize("variants, message", [
    ({"im": {"method": "im"}}, "variants.im: a variant needs a name of its own"),
    ({"x y": {"method": "im"}}, "does not match"),
    ({"v": {"method": "magic"}}, "'magic' is not one of"),
    ({"v": {"method": "im", "settings": {"students": {"models": 1}}}}, "top_k: 2 is more than the 1 models"),
])
def test_bad_variants_are_named(variants, message):
    cfg = copy.deepcopy(BASE)
    cfg["comparisons"]["d"]["variants"] = variants
    with pytest.raises(InputError, match=message):
        validate_config(cfg)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["comparisons"]["d"].update(base="nope"), "comparisons.d.base: 'nope' is not an experiment"),
    (lambda c: c["comparisons"].update(x=c["comparisons"].pop("d")), "a comparison is named after its data set"),
    (lambda c: c["comparisons"]["d"].update(methods=["magic"]), "'magic' is not one of"),
    (lambda c: c["comparisons"]["d"].update(experiments=["ghost"]), "comparisons.d.experiments: 'ghost' is not an experiment"),
    (lambda c: c["experiments"].update({"d/compare/im/seed0": {"dataset": "d"}}), "belongs to comparisons.d"),
])
def test_bad_comparisons_are_named(change, message):
    cfg = copy.deepcopy(BASE)
    if "x" in message or "named after" in message:
        cfg["datasets"]["x"] = {"source": "demo"}
    change(cfg)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(cfg)


def test_start_from_must_match_gen0():
    cfg = copy.deepcopy(BASE)
    cfg["experiments"]["f"] = {"dataset": "d", "start_from": "e", "model": {"alpha": 1.0}}
    with pytest.raises(InputError, match=r"experiments.f.start_from: gen0 settings differ from 'e' in \['model'"):
        validate_config(cfg)
    cfg["experiments"]["f"] = copy.deepcopy(cfg["experiments"]["e"]) | {"start_from": "e", "seed": 0}
    assert validate_config(cfg)["experiments"]["f"]["start_from"] == "e"
    cfg["experiments"]["f"]["start_from"] = "zzz"
    with pytest.raises(InputError, match="'zzz' is not an experiment"):
        validate_config(cfg)


def test_consistency_trainer_goes_with_no_pseudo_labels():
    cfg = copy.deepcopy(BASE)
    cfg["experiments"]["e"]["students"]["trainer"] = "consistency"
    with pytest.raises(InputError, match="students.trainer 'consistency' goes with pseudo_labels.builder 'none'"):
        validate_config(cfg)
    cfg["experiments"]["e"]["pseudo_labels"]["builder"] = "none"
    del cfg["comparisons"]
    exp = validate_config(cfg)["experiments"]["e"]
    assert generation_settings(exp, 1)["pseudo_labels"]["builder"] == "none"


def test_seed_targets_name_each_rows_last_generation_of_one_seed():
    config = validate_config(copy.deepcopy(BASE))
    comparison = config["comparisons"]["d"]
    targets = seed_targets("d", comparison, 1)
    assert len(targets) == len(comparison["methods"]) and all("/seed1/" in t for t in targets)
    assert "results/d/compare/ldt_plateau/seed1/gen0/metrics.csv" in targets
    assert "results/d/compare/im/seed1/gen2/metrics.csv" in targets
    assert {t.split("/")[3] for t in targets} == set(comparison["methods"])
    assert all(t.split("/")[3] + "/seed1" in " ".join(config["experiments"]) for t in targets)
