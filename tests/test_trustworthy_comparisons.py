"""Comparisons a reader can trust: paired differences with their intervals, the budget a row
spent, and how much of the teachers' error the IM marks (issue 31's first part)."""
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import tiny_comparison
from im_core.steps.compare import comparison_table, differences_to, paired_difference, run_rows
from im_core.steps.evaluate import error_recall
from test_workflow import snakemake


def test_paired_difference_and_its_interval():
    d = paired_difference([0.02, 0.03, 0.04])
    # mean 0.03, std 0.01, t(0.975, 2) = 4.303: half-width 4.303 x 0.01 / sqrt(3)
    assert d["mean"] == pytest.approx(0.03) and d["ci95"] == pytest.approx(4.3027 * 0.01 / 3 ** 0.5, rel=1e-3)
    assert d["resolved"]
    unresolved = paired_difference([0.05, -0.04, 0.02])
    assert not unresolved["resolved"] and unresolved["ci95"] > abs(unresolved["mean"])
    one = paired_difference([0.1])
    assert one["mean"] == 0.1 and np.isnan(one["ci95"]) and not one["resolved"]


def _metrics(path, generation, test, val, image_steps, seconds, **extra):
    rows = [{"generation": generation, "rank": i + 1, "val_miou": v, "val_miou_per_image": v, "test_miou": t,
             "test_miou_per_image": t, "im_fraction": extra.get("im_fraction", np.nan),
             "pseudo_accuracy": np.nan, "pseudo_coverage": np.nan, "image_steps": s, "train_seconds": sec,
             "im_error_recall": extra.get("recall", np.nan)}
            for i, (t, v, s, sec) in enumerate(zip(test, val, image_steps, seconds))]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_budget_accumulates_over_the_generations_and_the_differences_pair_seeds(tmp_path):
    runs = []
    for seed, (ldt, im1) in enumerate([(0.50, 0.55), (0.52, 0.56), (0.48, 0.54)]):
        g0 = _metrics(tmp_path / f"ldt{seed}.csv", 0, [ldt, ldt - 0.01], [0.6, 0.59], [800, 800], [10, 12])
        g1 = _metrics(tmp_path / f"im{seed}.csv", 1, [im1, im1 - 0.02], [0.7, 0.69], [1600, 1600], [20, 20],
                      recall=0.4)
        runs += [("ldt", seed, [g0]), ("im", seed, [g0, g1])]
    rows = run_rows("im", 0, runs[1][2])
    assert [r["image_steps"] for r in rows] == [1600, 4800]
    table = comparison_table(runs).set_index(["method", "generation"])
    assert table.loc[("im", 1), "image_steps"] == 4800 and table.loc[("ldt", 0), "image_steps"] == 1600
    assert table.loc[("im", 1), "im_error_recall"] == pytest.approx(0.4)
    # IM gen1 - LDT per seed: 0.05, 0.04, 0.06
    assert table.loc[("im", 1), "diff_ldt"] == pytest.approx(0.05)
    assert bool(table.loc[("im", 1), "diff_ldt_resolved"])
    assert table.loc[("im", 0), "diff_ldt"] == pytest.approx(0.0)  # gen0 is LDT's
    assert np.isnan(table.loc[("ldt", 0)].get("diff_ldt", np.nan))
    with_ref = comparison_table(runs, reference="im").set_index(["method", "generation"])
    assert with_ref.loc[("ldt", 0), "diff_im"] == pytest.approx(-0.05)  # LDT against IM's last generation


def test_differences_need_the_same_seed(tmp_path):
    per_run = pd.DataFrame([
        {"method": "ldt", "seed": 0, "generation": 0, "test_miou": 0.5},
        {"method": "a", "seed": 0, "generation": 0, "test_miou": 0.6},
        {"method": "a", "seed": 7, "generation": 0, "test_miou": 0.9},  # no LDT with seed 7: not paired
    ])
    d = differences_to(per_run, "ldt")[("a", 0)]
    assert d["mean"] == pytest.approx(0.1) and np.isnan(d["ci95"])


def test_error_recall_on_hand_made_arrays():
    truth = np.array([[[0, 1, 2, 255]]])          # one image, four pixels, the last unknown
    teacher = np.array([[[0, 2, 0, 1]]])          # wrong at pixels 1 and 2
    im = np.array([[[False, True, False, True]]])  # the mask finds pixel 1 only
    out = error_recall(teacher, truth, im, 255, ["a", "b", "c"])
    assert out["im_error_recall"] == 0.5
    assert np.isnan(out["im_error_recall_a"]) and out["im_error_recall_b"] == 1.0 and out["im_error_recall_c"] == 0.0
    # multi-label: per label, the union mask
    truth_ml = np.array([[[[1, 0]], [[0, 0]]]])    # 1 image, 2 labels, 1 x 2 pixels
    teacher_ml = np.array([[[[0, 0]], [[1, 1]]]])  # label 0 wrong at pixel 0; label 1 wrong at both
    out = error_recall(teacher_ml, truth_ml, np.array([[[True, False]]]), 255, ["x", "y"])
    assert out["im_error_recall"] == pytest.approx(2 / 3) and out["im_error_recall_x"] == 1.0
    assert out["im_error_recall_y"] == 0.5
    # two images: each image's errors against its own mask (not the other image's)
    truth_2 = np.concatenate([truth_ml, truth_ml])
    teacher_2 = np.concatenate([teacher_ml, teacher_ml])
    union_2 = np.array([[[True, False]], [[False, False]]])        # image 0 as above, image 1 masks nothing
    out = error_recall(teacher_2, truth_2, union_2, 255, ["x", "y"])
    assert out["im_error_recall"] == pytest.approx(2 / 6)
    assert out["im_error_recall_x"] == 0.5 and out["im_error_recall_y"] == pytest.approx(1 / 4)
    # a per-label IM: each label's errors against its own mask
    per_label = np.array([[[[False, False]], [[True, True]]], [[[True, False]], [[False, False]]]])
    out = error_recall(teacher_2, truth_2, per_label, 255, ["x", "y"])
    assert out["im_error_recall"] == pytest.approx(3 / 6)
    assert out["im_error_recall_x"] == 0.5 and out["im_error_recall_y"] == 0.5



@pytest.mark.parametrize("per_label", [False, True])
def test_the_mask_that_leaves_a_label_out_is_its_own_in_per_label_mode(tmp_path, per_label):
    """The error recall of a per-label IM counts each label's errors against that label's mask
    (where its pseudo-label is ignored), the union's against the union."""
    from im_core.io import create_array, open_store
    from im_core.steps.evaluate import left_out_of_the_loss
    labels = np.array([[[[255, 0]], [[1, 255]]]], dtype=np.uint8)  # label 0 ignored at pixel 0, label 1 at pixel 1
    im = np.array([[[True, True]]])
    group = open_store(tmp_path / "pseudo.zarr", mode="w")
    create_array(group, "labels", labels.shape, labels.dtype, ("image", "label", "y", "x"))[:] = labels
    create_array(group, "im", im.shape, im.dtype, ("image", "y", "x"))[:] = im
    group.attrs.update({"task": "multilabel", "label_mode": "ignore", "ignore_index": 255,
                        "settings": {"per_label": per_label, "block_output": True}})
    left_out = left_out_of_the_loss(open_store(tmp_path / "pseudo.zarr"), np.array([0]))
    expected = (labels == 255) if per_label else im
    assert left_out.shape == expected.shape and (left_out == expected).all()


@pytest.mark.slow
def test_a_three_seed_comparison_has_the_new_columns(tmp_path):
    config = tiny_comparison(["ldt", "ldt_continued", "cct", "im"], seeds=[0, 1, 2], reference="cct")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "results/tiny/compare.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    table = pd.read_csv(tmp_path / "results" / "tiny" / "compare.csv").set_index(["method", "generation"])
    assert (table["seeds"] == 3).all()
    # budget: gen0 2 models x 4 steps x 4 images; IM gen1 adds 2 students x 4 x 4; CCT draws 2 x 4 per step
    assert table.loc[("ldt", 0), "image_steps"] == 32 and table.loc[("im", 1), "image_steps"] == 64
    assert table.loc[("cct", 0), "image_steps"] == 64
    assert {"diff_ldt", "diff_ldt_ci95", "diff_ldt_resolved", "diff_cct"} <= set(table.columns)
    assert "train_seconds" not in table  # a clock would make two runs' tables differ
    assert not np.isnan(table.loc[("im", 1), "diff_ldt_ci95"])
    assert 0 <= table.loc[("im", 1), "im_error_recall"] <= 1
    metrics = pd.read_csv(tmp_path / "results/tiny/compare/im/seed0/gen1/metrics.csv")
    assert {"im_error_recall", "trainer", "steps", "image_steps"} <= set(metrics.columns)
    # the continued-training control: gen1 continues gen0's model of its index on the labeled images only
    assert table.loc[("ldt_continued", 1), "image_steps"] == 64
    continued = pd.read_csv(tmp_path / "results/tiny/compare/ldt_continued/seed0/gen1/metrics.csv").set_index("model_id")
    assert continued.loc["gen1_m0", "init"] == "parent" and continued.loc["gen1_m0", "parent"] == "gen0_m0"
    assert continued["label_source"].eq("L").all() and continued["pseudo_images"].eq(0).all()


# ------------------------------------------------------------------ IM levers: k of n, per label

def test_k_of_n_agreement_keeps_the_majority_where_enough_teachers_vote_for_it():
    from im_core.builders.im import build_pseudo_labels, inconsistency_mask
    # 3 teachers, 1 image of 1 x 4 pixels: all agree / 2 of 3 / 2 of 3 / all differ
    preds = np.array([[[[0, 1, 2, 0]]], [[[0, 1, 1, 1]]], [[[0, 2, 1, 2]]]], np.uint8)
    assert inconsistency_mask(preds).tolist() == [[[False, True, True, True]]]
    assert inconsistency_mask(preds, agree=2).tolist() == [[[False, False, False, True]]]
    images = np.full((1, 1, 4, 3), 9, np.uint8)
    pl = build_pseudo_labels(preds, images, "multiclass", 3, agree=2)
    assert pl.labels.tolist() == [[[0, 1, 1, 255]]]
    assert pl.images[0, 0, :, 0].tolist() == [9, 9, 9, 0] and pl.im_fraction[0] == 0.25
    assert inconsistency_mask(preds, agree=3).tolist() == inconsistency_mask(preds).tolist()  # k = n: unanimity


def test_per_label_im_masks_only_the_label_that_disagrees():
    from im_core.builders.im import build_pseudo_labels
    # 2 teachers, 1 image, 2 labels, 1 x 2 pixels: label 0 disagrees at pixel 0, label 1 agrees everywhere
    preds = np.array([[[[[1, 0]], [[1, 1]]]], [[[[0, 0]], [[1, 1]]]]], np.uint8)
    images = np.full((1, 1, 2, 1), 9, np.uint8)
    union = build_pseudo_labels(preds, images, "multilabel", 2, block_input=False)
    assert union.labels[0, :, 0, 0].tolist() == [255, 255]  # the union ignores every label there
    own = build_pseudo_labels(preds, images, "multilabel", 2, block_input=False, per_label=True)
    assert own.labels[0, :, 0, 0].tolist() == [255, 1] and own.labels[0, :, 0, 1].tolist() == [0, 1]
    assert own.im.tolist() == union.im.tolist() == [[[True, False]]]  # the pixel's IM is the union either way
    with pytest.raises(ValueError, match="multi-label"):
        build_pseudo_labels(preds[:, :, 0], images, "binary", 2, per_label=True)


def test_the_levers_are_checked_and_leave_other_builders_alone():
    from im_core.config import pseudo_settings, validate_config
    from im_core.errors import InputError
    config = {"datasets": {"d": {"source": "demo", "n_images": 20, "size": [32, 32]}},
              "experiments": {"e": {"dataset": "d", "generations": 1, "pseudo_labels": {"teachers": 3, "agree": 4}}}}
    with pytest.raises(InputError, match="agree: 4 of 3"):
        validate_config(config)
    config["experiments"]["e"]["pseudo_labels"] = {"teachers": 3, "per_label": True}
    with pytest.raises(InputError, match="per_label"):
        validate_config(config)
    config["experiments"]["e"]["pseudo_labels"] = {"teachers": 3, "agree": 2}
    cfg = validate_config(config)
    assert pseudo_settings(cfg["experiments"]["e"], 1).agree == 2
    config["experiments"]["e"]["pseudo_labels"] = {"teachers": 3}
    params = pseudo_settings(validate_config(config)["experiments"]["e"], 1).to_params()
    assert "agree" not in params and "per_label" not in params  # the defaults rerun nothing


def test_bootstrap_students_draw_their_own_resample():
    from im_core.config import train_settings, validate_config
    from im_core.data.training_set import bootstrap_draw
    a, b = bootstrap_draw(50, 1), bootstrap_draw(50, 2)
    assert len(a) == 50 and a.min() >= 0 and a.max() < 50 and np.array_equal(a, bootstrap_draw(50, 1))
    assert not np.array_equal(a, b) and len(np.unique(a)) < 50  # with replacement: some pairs twice, some never
    config = {"datasets": {"d": {"source": "demo", "n_images": 20, "size": [32, 32]}},
              "experiments": {"e": {"dataset": "d", "generations": 1, "students": {"bootstrap": True}}}}
    exp = validate_config(config)["experiments"]["e"]
    assert train_settings(exp, 1, 0).bootstrap and train_settings(exp, 0, 0).bootstrap is None
    config["experiments"]["e"]["students"] = {}
    assert "bootstrap" not in train_settings(validate_config(config)["experiments"]["e"], 1, 0).to_params()


def test_one_seed_differences_bootstrap_the_test_images(tmp_path):
    from im_core import metrics
    from im_core.io import open_store, write_array
    from im_core.steps.compare import bootstrap_difference
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (40, 8, 8))
    good = np.where(rng.random(truth.shape) < 0.9, truth, (truth + 1) % 3)
    poor = np.where(rng.random(truth.shape) < 0.6, truth, (truth + 1) % 3)
    a, b = (metrics.per_image_confusions(p, truth, 3, 255, False) for p in (good, poor))
    assert metrics.miou_of(a.sum(0), False) == pytest.approx(metrics.score(good, truth, ["x", "y", "z"])["miou"])
    d = bootstrap_difference(a, b, False, draws=300)
    assert d["mean"] > 0.2 and d["resolved"] and 0 < d["ci95"] < 0.1 and d["over"] == "images"
    same = bootstrap_difference(a, a, False, draws=50)
    assert same["mean"] == 0 and not same["resolved"]
    # through the comparison: one seed, the tables' confusions beside them
    runs = []
    for method, pred in (("ldt", poor), ("im", good)):
        folder = tmp_path / method
        folder.mkdir()
        conf = metrics.per_image_confusions(pred, truth, 3, 255, False)
        group = open_store(folder / "test_confusions.zarr", mode="w")
        group.attrs["multilabel"] = False
        write_array(group, "gen0_m0", conf, ("image", "channel", "truth", "prediction"))
        table = _metrics(folder / "metrics.csv", 0, [metrics.miou_of(conf.sum(0), False)], [0.5], [8], [1])
        frame = pd.read_csv(table)
        frame["model_id"] = "gen0_m0"
        frame.to_csv(table, index=False)
        runs.append((method, 0, [table]))
    result = comparison_table(runs).set_index(["method", "generation"])
    assert result.loc[("im", 0), "diff_ldt_over"] == "images" and bool(result.loc[("im", 0), "diff_ldt_resolved"])


def test_equal_budget_shares_out_the_students_image_steps():
    from im_core.config import train_settings, validate_config
    from im_core.config.resolve import models_in_generation
    config = {"datasets": {"d": {"source": "demo", "n_images": 20, "size": [32, 32]}},
              "experiments": {"b": {"dataset": "d", "generations": 2, "train": {"batch_size": 4, "steps": 100},
                                    "stage0": {"models": 4}, "students": {"models": 4},
                                    "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2},
                                    "overrides": [{"from_generation": 1, "train": {"steps": 300}}]}},
              "comparisons": {"d": {"base": "b", "generations": 2, "budget": "equal",
                                    "methods": ["ldt", "im", "fist", "gist", "unimatch_im_unimatch", "ldt_continued"]}}}
    exps = validate_config(config)["experiments"]
    spent = {}
    for method in ("im", "fist", "gist", "unimatch_im_unimatch", "ldt_continued"):
        exp = exps[f"d/compare/{method}/seed0"]
        for g in (1, 2):
            models = models_in_generation(exp, g)
            per_model = [train_settings(exp, g, i) for i in range(models)]
            images = [s.steps * s.batch_size * (2 if s.trainer == "unimatch" else 1) for s in per_model]
            spent[(method, g)] = sum(images)
    # IM's students: 4 x 300 steps x 4 images per generation; every method spends the same
    assert all(v == 4 * 300 * 4 for v in spent.values()), spent
    assert train_settings(exps["d/compare/fist/seed0"], 1, 0).steps == 1200          # one student: 4 x as long
    assert train_settings(exps["d/compare/unimatch_im_unimatch/seed0"], 1, 0).steps == 150  # 2 x the images a step
    assert train_settings(exps["d/compare/ldt/seed0"], 0, 0).steps == 100              # gen0 baselines as configured


# ------------------------------------------------------------------ IM lever: teachers from several generations

def test_teachers_from_earlier_generations_replace_the_lowest_ranked():
    from im_core.builders.im import InconsistencyMask
    from im_core.settings import PseudoSettings
    base = dict(builder="im", teachers=3, block_input=True, block_output=True, label_mode="ignore", erode=0,
                dilate=0, filter_class_disagreement=False, label_erase=0.0, temperature=1.0)
    im = InconsistencyMask()
    selection = {"selected": ["gen2_m1", "gen2_m0", "gen2_m2"], "ranking": ["gen2_m1", "gen2_m0", "gen2_m2"],
                 "earlier": [{"ranking": ["gen1_m2", "gen1_m0"]}, {"ranking": ["gen0_m0", "gen0_m1"]}]}
    plain = PseudoSettings(**base)
    assert im.selections_read(plain, 2) == [] and im.generations_read(plain, 2) == [2]
    assert im.teachers(selection | {"earlier": []}, plain, None, 3) == ["gen2_m1", "gen2_m0", "gen2_m2"]
    two = PseudoSettings(**base, teacher_generations=2)
    assert im.selections_read(two, 2) == [1] and im.generations_read(two, 2) == [2, 1]
    assert im.teachers(selection | {"earlier": selection["earlier"][:1]}, two, None, 3) == ["gen2_m1", "gen2_m0", "gen1_m2"]
    three = PseudoSettings(**base, teacher_generations=3)
    assert im.selections_read(three, 2) == [1, 0] and im.generations_read(three, 2) == [2, 1, 0]
    assert im.teachers(selection, three, None, 3) == ["gen2_m1", "gen1_m2", "gen0_m0"]
    # at generation 1 there is no generation before gen0: all teachers from gen0
    assert im.selections_read(three, 0) == [] and im.generations_read(three, 0) == [0]


def test_teacher_generations_is_checked():
    from im_core.config import pseudo_settings, validate_config
    from im_core.errors import InputError
    config = {"datasets": {"d": {"source": "demo", "n_images": 20, "size": [32, 32]}},
              "experiments": {"e": {"dataset": "d", "generations": 1,
                                    "pseudo_labels": {"teachers": 2, "teacher_generations": 3}}}}
    with pytest.raises(InputError, match="teacher_generations: 3 generations cannot share 2 teachers"):
        validate_config(config)
    config["experiments"]["e"]["pseudo_labels"] = {"teachers": 2, "teacher_generations": 2}
    assert pseudo_settings(validate_config(config)["experiments"]["e"], 1).teacher_generations == 2
    config["experiments"]["e"]["pseudo_labels"] = {"teachers": 2}
    params = pseudo_settings(validate_config(config)["experiments"]["e"], 1).to_params()
    assert "teacher_generations" not in params  # the default reruns nothing


def test_teachers_from_two_generations_and_the_soft_mask_through_snakemake(tmp_path):
    import zarr
    config = tiny_comparison(["ldt"])
    config["experiments"]["tiny"]["generations"] = 2
    config["comparisons"]["tiny"].update(generations=2, variants={
        "im_two_generations": {"method": "im", "settings": {"pseudo_labels": {"teacher_generations": 2}}},
        "im_soft": {"method": "im", "settings": {"pseudo_labels": {"soft": True, "block_output": False,
                                                                    "block_input": False}}}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "results/tiny/compare.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    exp = tmp_path / "results/tiny/compare/im_two_generations/seed0"
    first = zarr.open_group(str(exp / "gen1/pseudo.zarr"), mode="r").attrs["teachers"]
    second = zarr.open_group(str(exp / "gen2/pseudo.zarr"), mode="r").attrs["teachers"]
    assert [t[:5] for t in first] == ["gen0_", "gen0_"]  # no generation before gen0
    # gen1's best and, in place of its second, gen0's best (the first teacher of gen1's pseudo-labels)
    assert second[0].startswith("gen1_") and second[1] == first[0]
    soft = zarr.open_group(str(tmp_path / "results/tiny/compare/im_soft/seed0/gen1/pseudo.zarr"), mode="r")
    assert soft["weight"].shape == soft["labels"].shape and (soft["labels"][:] != 255).all()
    assert 0 < soft["weight"][:].mean() < 255  # the students trained on the weighted labels (the table has them)
    table = pd.read_csv(tmp_path / "results/tiny/compare.csv")
    assert set(table.loc[table["method"] == "im_two_generations", "generation"]) == {0, 1, 2}
    assert set(table.loc[table["method"] == "im_soft", "generation"]) == {0, 1, 2}


# ------------------------------------------------------------------ baselines trained to their plateau

def test_stalled_counts_the_validations_after_the_best():
    from im_core.steps.train import stalled
    history = [{"step": s} for s in (2, 4, 6, 8)]
    assert not stalled(history, 4, None) and not stalled(history, 4, 3)
    assert stalled(history, 4, 2) and stalled(history, 2, 3) and not stalled(history, 8, 1)


def test_early_stopping_ends_training_and_resumes_where_it_stopped(store, tmp_path, monkeypatch):
    """A learning rate too small to change the validation score: the first validation is the
    best, and two more without a new best end training at step 6 of 20, also after a kill."""
    from conftest import Interrupted, interrupt_after_saves, train_settings
    from im_core.steps import train
    from im_core.steps.evaluate import model_budget
    settings = train_settings(steps=20, eval_every=2, lr=1e-12, patience=2)
    whole = train.run(str(store), str(tmp_path / "whole.pt"), settings, progress=False)
    ckpt = torch.load(tmp_path / "whole.pt", weights_only=True)
    assert [h["step"] for h in ckpt["history"]] == [2, 4, 6] and whole["best_step"] == 2
    assert model_budget(str(tmp_path / "whole.pt"))["steps"] == 6  # the budget counts the steps trained
    out = tmp_path / "resumed.pt"
    with monkeypatch.context() as m:
        interrupt_after_saves(m, 3)  # killed right after the last save, before the stop
        with pytest.raises(Interrupted):
            train.run(str(store), str(out), settings, progress=False)
    train.run(str(store), str(out), settings, progress=False)
    assert torch.load(out, weights_only=True)["history"] == ckpt["history"]
    assert "patience" not in train_settings().to_params()  # the default reruns nothing


def test_equal_budget_refuses_early_stopping():
    from im_core.config import validate_config
    from im_core.errors import InputError
    config = tiny_comparison(["ldt", "im"], budget="equal")
    config["experiments"]["tiny"]["train"]["patience"] = 3
    with pytest.raises(InputError, match="stop early"):
        validate_config(config)


# ------------------------------------------------------------------ IM lever: the soft mask

def test_soft_weight_is_the_teachers_mean_confidence_in_the_label():
    from im_core.builders.im import build_pseudo_labels, soft_weight
    # 3 teachers, 1 image of 1 x 3 pixels: all agree / 2 of 3 / all differ
    preds = np.array([[[[0, 1, 2]]], [[[0, 1, 1]]], [[[0, 2, 0]]]], np.uint8)
    confidence = np.array([[[[255, 200, 90]]], [[[255, 100, 120]]], [[[204, 255, 150]]]], np.uint8)
    pl = build_pseudo_labels(preds, np.zeros((1, 1, 3, 3), np.uint8), "multiclass", 3, block_output=False,
                             block_input=False, confidence=confidence)
    assert pl.labels.tolist() == [[[0, 1, 0]]]  # the majority (a three-way tie: the lower class)
    assert pl.weight.tolist() == [[[238, 100, 50]]]  # (255+255+204)/3, (200+100+0)/3, (0+0+150)/3
    assert pl.im.tolist() == [[[False, True, True]]]  # the reported IM stays the hard one
    with pytest.raises(ValueError, match="block_output"):
        build_pseudo_labels(preds, np.zeros((1, 1, 3, 3), np.uint8), "multiclass", 3, confidence=confidence)
    # multi-label: per label channel
    ml = np.array([[[[[1]], [[0]]]], [[[[1]], [[1]]]]], np.uint8)  # 2 teachers, 1 image, 2 labels, 1 pixel
    conf = np.full(ml.shape, 200, np.uint8)
    assert soft_weight(ml, conf, np.array([[[[1]], [[0]]]], np.uint8)).ravel().tolist() == [200, 100]


def test_weighted_loss_scales_each_pixel_and_keeps_the_count():
    from im_core.models.losses import segmentation_loss
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    target[0, 0] = 255
    full = torch.full(target.shape, 255, dtype=torch.uint8)
    for task, lg, tg in (("multiclass", logits, target), ("binary", logits[:, :1], (target % 2).where(target != 255, 255)),
                         ("multilabel", logits, (target[:, None] % 2).expand(-1, 3, -1, -1).contiguous())):
        w = full if task != "multilabel" else full[:, None].expand(-1, 3, -1, -1)
        assert torch.allclose(segmentation_loss(lg, tg, task, weights=w), segmentation_loss(lg, tg, task))
        half = w.clone()
        half[1] = 0  # the second image weighs nothing, but its pixels still count
        expected = segmentation_loss(lg[:1], tg[:1], task) * (tg[:1] != 255).sum() / (tg != 255).sum()
        assert torch.allclose(segmentation_loss(lg, tg, task, weights=half), expected)


def test_the_weights_move_with_the_labels_and_leave_the_draws_alone():
    from im_core.data.batches import Batches, TrainingTensors
    from im_core.settings import Augment
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, (8, 16, 16), dtype=np.uint8)
    augment = Augment(blur=0, noise=0, contrast=0, brightness=0, hflip=True, vflip=True, scale=(0.3, 1.0))
    plain = Batches(TrainingTensors.from_arrays(images, labels), 4, augment, torch.Generator().manual_seed(3))
    weighted = Batches(TrainingTensors.from_arrays(images, labels, weights=labels * 50), 4, augment,
                       torch.Generator().manual_seed(3))
    for _ in range(3):
        (x, y), (xw, yw) = next(plain), next(weighted)
        assert torch.equal(x, xw) and torch.equal(y, yw)  # the same batches as without weights
        assert torch.equal(weighted.last_weights, yw * 50)  # each weight still beside its label
    assert plain.last_weights is None


def test_soft_needs_block_output_off():
    from im_core.config import validate_config
    from im_core.errors import InputError
    config = {"datasets": {"d": {"source": "demo", "n_images": 20, "size": [32, 32]}},
              "experiments": {"e": {"dataset": "d", "generations": 1, "pseudo_labels": {"soft": True}}}}
    with pytest.raises(InputError, match="soft: a soft mask"):
        validate_config(config)
    config["experiments"]["e"]["pseudo_labels"]["block_output"] = False
    validate_config(config)


def test_augment_spread_gives_each_student_its_own_noise():
    from im_core.config import train_settings, validate_config
    config = {"datasets": {"d": {"source": "demo", "n_images": 20, "size": [32, 32]}},
              "experiments": {"e": {"dataset": "d", "generations": 1, "train": {"augment": {"noise": 7}},
                                    "students": {"models": 3, "augment_spread": 1.0}, "selection": {"top_k": 3}}}}
    exp = validate_config(config)["experiments"]["e"]
    first, middle, last = (train_settings(exp, 1, i).augment for i in range(3))
    assert (first.blur, first.noise, first.contrast, first.brightness) == (0, 7, 0, 0)  # the experiment's as it is
    assert (middle.blur, middle.noise, middle.contrast, middle.brightness) == (0.5, 7, 0.1, 5.0)  # max with it
    assert (last.blur, last.noise, last.contrast, last.brightness) == (1.0, 10.0, 0.2, 10.0)
    assert train_settings(exp, 0, 2).augment == first  # gen0 is not a student
    assert train_settings(exp, 1, 0).to_params() == train_settings(exp, 0, 0).to_params() | {
        "seed": train_settings(exp, 1, 0).seed}


def _bench_compare():
    """bench/compare.py as a module (it is a script, not part of the package)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("bench_compare", Path(__file__).resolve().parents[1] / "bench" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_targets_are_read_from_hand_made_means():
    """Issue 31's targets for an IM row: gen_last ≥ gen1, ≥ LDT + 1 std, ≥ the control at the same
    generation, ≥ the best of the ensembles present; margins are the row's mean minus the bar."""
    rows = [("ldt", "LDT", 0, 0.30, 0.02), ("ldt_continued", "LDT continued", 1, 0.33, 0.0),
            ("ldt_continued", "LDT continued", 2, 0.35, 0.0), ("im", "IM", 1, 0.34, 0.0), ("im", "IM", 2, 0.36, 0.0),
            ("model_ensemble", "Model Ensemble", 2, 0.31, 0.0), ("noisy_student", "Noisy Student", 2, 0.37, 0.0)]
    table = pd.DataFrame([{"method": m, "label": label, "generation": g, "seeds": 3, "test_miou": mean,
                           "test_miou_std": std} for m, label, g, mean, std in rows])
    targets = {name: (round(margin, 6), met) for name, margin, met in
               _bench_compare().im_targets(table, "IM", "ldt_continued")}
    assert targets == {"gen2 ≥ gen1": (0.02, True), "≥ LDT + 1 std": (0.04, True),
                       "≥ ldt_continued": (0.01, True),
                       "≥ best of model_ensemble, noisy_student": (-0.01, False)}


def test_the_cross_data_set_target_counts_where_im_beats_the_best_ensemble():
    """IM ≥ the best of the ensemble baselines present, counted over data sets; a data set with
    no ensemble row does not count."""
    def table(im_end, ensembles):
        rows = [("ldt", "LDT", 0, 0.3), ("im", "IM", 1, 0.3), ("im", "IM", 2, im_end)]
        rows += [(m, m, 2, v) for m, v in ensembles.items()]
        return pd.DataFrame([{"method": m, "label": label, "generation": g, "seeds": 1, "test_miou": v,
                              "test_miou_std": float("nan")} for m, label, g, v in rows])
    tables = {"a": (table(0.5, {"model_ensemble": 0.4, "noisy_student": 0.45}), None, ["IM"]),
              "b": (table(0.5, {"input_ensemble": 0.55}), None, ["IM"]),
              "c": (table(0.5, {"noisy_student": 0.5}), None, ["IM"]),
              "d": (table(0.5, {}), None, ["IM"])}
    assert _bench_compare().baselines_beaten(tables) == {"IM": (2, 3, ["a", "c"])}


def test_the_bench_runs_a_config_files_comparison_seed_by_seed_with_the_default_rows():
    """bench/compare.py fills a comparison's defaults (the default table, with LDT at its plateau and
    the control) before asking for each seed's runs; the user's section is left as it was."""
    from im_core.config import load_schema
    from im_core.methods.comparisons import seed_targets
    section = {"base": "x", "seeds": [0, 2], "variants": {"im_k": {"method": "im"}}}
    filled = _bench_compare().with_defaults(section)
    assert section == {"base": "x", "seeds": [0, 2], "variants": {"im_k": {"method": "im"}}}
    default = load_schema()["$defs"]["comparison"]["properties"]["methods"]["default"]
    assert filled["methods"] == default and {"ldt_plateau", "ldt_continued"} <= set(default)
    targets = seed_targets("x", filled, 2)
    assert targets[-1] == "results/x/compare/im_k/seed2/gen3/metrics.csv" and len(targets) == len(default) + 1
    assert "results/x/compare/ldt_plateau/seed2/gen0/metrics.csv" in targets


def test_summarize_only_keeps_the_timing_of_the_run_that_made_the_tables(tmp_path):
    """A table rewritten with --summarize-only keeps the command and wall time the run wrote
    (they are the record of what the run cost); a file without them gives none."""
    recorded_run = _bench_compare().recorded_run
    out = tmp_path / "x_compare.md"
    assert recorded_run(out) is None
    out.write_text("## x\n\n`snakemake --cores 2 results/x/compare.csv`: wall time 4564 s (jobs already up to "
                   "date are not rerun); the jobs of the table's rows, however many runs made them: 9 s\n",
                   encoding="utf-8")
    assert recorded_run(out) == ("`snakemake --cores 2 results/x/compare.csv`: wall time 4564 s "
                                 "(jobs already up to date are not rerun)")
    out.write_text("## x\n\n`snakemake --cores all results/x/compare.csv`: not run (--summarize-only); ...\n",
                   encoding="utf-8")
    assert recorded_run(out) is None
    # a run since the stamp was added says its date and machine; a rewrite keeps them too
    line = _bench_compare().timed_run_line("snakemake --cores 2 results/x/compare.csv", 12.0)
    head = "`snakemake --cores 2 results/x/compare.csv`: wall time 12 s (jobs already up to date are not rerun), "
    assert line.startswith(head)
    stamp = line[len(head):]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d on .+, \d+ cores \(.+\), GPU: .+", stamp)
    out.write_text(f"## x\n\n{line}; the jobs of the table's rows, however many runs made them: 9 s\n", encoding="utf-8")
    assert recorded_run(out) == line


def test_the_job_time_counts_the_tables_rows_at_the_tables_seeds(tmp_path):
    """The job seconds a table reports are its rows' jobs at its seeds: a seed still running, or a
    row no longer configured, is not counted."""
    def bench(path, seconds):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\n{seconds}\t0:00:01\n", encoding="utf-8")
    root = tmp_path / "benchmarks" / "x"
    bench(root / "compare/im/seed0/gen1/train_m0.tsv", 10.0)
    bench(root / "compare/im/seed0/gen1/predict.tsv", 2.5)
    bench(root / "compare/ldt/seed0/gen0/train_m0.tsv", 4.0)
    bench(root / "compare/im/seed1/gen1/train_m0.tsv", 100.0)   # a seed not in the table
    bench(root / "compare/old_row/seed0/gen1/train_m0.tsv", 1000.0)
    total = _bench_compare().total_job_seconds
    assert total(root, ["im", "ldt"], [0]) == 16.5
    assert total(root, ["im", "ldt"], [0, 1]) == 116.5


def test_the_per_label_table_reads_the_tables_seeds_only(tmp_path):
    """The per-label rows of a table come from its own seeds' runs; a seed still running is left out."""
    for seed, iou in ((0, 0.5), (1, 0.9)):
        run = tmp_path / "results" / "x" / "compare" / "im" / f"seed{seed}" / "gen1"
        run.mkdir(parents=True)
        pd.DataFrame([{"rank": 0, "test_iou_a": iou, "pseudo_coverage_a": 0.8, "pseudo_accuracy_a": 0.9,
                       "pseudo_recall_a": 0.7, "im_error_recall_a": 0.4}]).to_csv(run / "metrics.csv", index=False)
    table = _bench_compare().per_label_table(tmp_path, "x", {"im": "IM"}, [0])
    assert list(table["seed"]) == [0] and list(table["test_iou"]) == [0.5]
