"""The step vocabulary (stages.py) and the methods built from it: GIST, RIST, FIST and their IM
variants; Label Erase, temperature, the EMA teacher, the development set; a tiny GIST and RIST
through Snakemake."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import pseudo_settings

from im_core import config as imc
from im_core.data.splits import dev_positions
from im_core.trainers.mean_teacher import MeanTeacher
from im_core.models import build_model
from im_core.builders.one_model import label_erase
from im_core.builders import BUILDERS
from im_core.errors import InputError
from im_core.methods.stages import ModelPlan, beam_models, draw_paths, longest_run, parent_id, path_letter, plan_model
from im_core.methods.stages import lineage
from test_workflow import snakemake

STUDENTS = {"search": "none", "trainer": "supervised", "init": "scratch", "parent": "best", "labeled_share": None,
            "beam_width": 2, "paths": 3, "max_run": 4, "models": 2}


def test_random_paths_are_seeded_per_path_and_never_degenerate():
    paths = draw_paths(seed=7, count=20, stages=9, max_run=4)
    assert paths == draw_paths(seed=7, count=20, stages=9, max_run=4)
    assert draw_paths(seed=7, count=3, stages=9)[:3] == paths[:3]  # path i does not depend on the count
    assert draw_paths(seed=8, count=20, stages=9) != paths
    assert all(len(p) == 9 and set(p) <= {"L", "P"} and longest_run(p) <= 4 for p in paths)
    unfiltered = draw_paths(seed=7, count=200, stages=9, max_run=None)
    assert max(map(longest_run, unfiltered)) > 4  # the filter has something to do
    with pytest.raises(ValueError):
        draw_paths(0, 1, 3, max_run=0)


def test_longest_run_and_letters():
    assert [longest_run(p) for p in ("", "L", "LPLP", "LLPPPL", "PPPPP")] == [0, 1, 1, 3, 5]
    assert path_letter(1.0, True) == path_letter(0.3, False) == "L"
    assert path_letter(0.0, True) == "P" and path_letter(0.5, True) == path_letter(None, True) == "M"


def test_gist_beam_plans_an_l_and_a_p_child_per_beam_member():
    beam = dict(STUDENTS, search="beam")
    assert beam_models(1, 2, 4) == 2 and beam_models(2, 2, 2) == 4 and beam_models(3, 3, 2) == 4
    gen1 = [plan_model(beam, BUILDERS["parent"], 1, i, 6, 0) for i in range(2)]
    assert gen1 == [ModelPlan("rank:0", 1.0, None), ModelPlan("rank:0", 0.0, "parent")]
    gen2 = [plan_model(beam, BUILDERS["parent"], 2, i, 6, 0) for i in range(4)]
    assert [p.parent for p in gen2] == ["rank:0", "rank:0", "rank:1", "rank:1"]
    assert [p.letter for p in gen2] == ["L", "P", "L", "P"]
    assert plan_model(beam, BUILDERS["im"], 2, 1, 6, 0).pseudo == "generation"  # gist_im: the previous stage's IM


def test_rist_plans_follow_their_paths_and_continue_their_own_model():
    rist = dict(STUDENTS, search="random", paths=3)
    paths = draw_paths(5, 3, 6, 4)
    for g in range(1, 7):
        plans = [plan_model(rist, BUILDERS["parent"], g, i, 6, 5) for i in range(3)]
        assert [p.letter for p in plans] == [path[g - 1] for path in paths]
        assert [p.parent for p in plans] == (["rank:0"] * 3 if g == 1 else [f"index:{i}" for i in range(3)])
        assert all((p.pseudo == "parent") == (p.letter == "P") for p in plans)


def test_plans_of_the_existing_shapes():
    assert plan_model(STUDENTS, BUILDERS["im"], 1, 0, 3, 0) == ModelPlan(None, None, "generation")  # IM students
    fist = dict(STUDENTS, init="parent", labeled_share=0.5)
    assert plan_model(fist, BUILDERS["parent"], 3, 0, 6, 0) == ModelPlan("rank:0", 0.5, "parent")
    assert plan_model(dict(STUDENTS, trainer="consistency"), BUILDERS["none"], 1, 0, 3, 0,
                      continues_parent=True) == ModelPlan("rank:0", None, None)
    assert plan_model(dict(STUDENTS, init="parent", parent="same_index"), BUILDERS["im"], 2, 1, 3, 0).parent == "index:1"


def test_parent_ids_by_rank_and_by_index():
    ranking = ["gen1_m2", "gen1_m0", "gen1_m1"]
    selection = {"ranking": ranking, "selected": ranking[:2],
                 "best_so_far": {"model_id": "gen0_m1", "generation": 0, "score": 0.9}}
    assert parent_id("rank:0", selection, 2) == "gen1_m2" and parent_id("rank:1", selection, 2) == "gen1_m0"
    assert parent_id("index:1", selection, 2) == "gen1_m1" and parent_id("best_so_far", selection, 2) == "gen0_m1"
    with pytest.raises(ValueError, match="ranks only 3"):
        parent_id("rank:3", selection, 2)
    assert BUILDERS["parent"].teachers(selection, pseudo_settings(builder="parent"), "rank:1", 2) == ["gen1_m0"]
    assert BUILDERS["im"].teachers(selection, pseudo_settings(teachers=2), None, 2) == ["gen1_m2", "gen1_m0"]
    with pytest.raises(InputError, match="--parent"):
        BUILDERS["parent"].teachers(selection, pseudo_settings(builder="parent"), None, 2)


def test_lineage_path_is_the_parents_plus_this_stage():
    parent = {"model_id": "gen2_m1", "checkpoint": "x.pt", "path": "LP"}
    assert lineage(3, parent, "p.zarr", labeled_share=0.0)["path"] == "LPP"
    assert lineage(3, parent, None, labeled_share=1.0)["path"] == "LPL"
    assert lineage(3, parent, "p.zarr", labeled_share=0.5)["label_source"] == "L:0.5+P:0.5"
    assert lineage(1, None, "p.zarr")["path"] == "M" and lineage(0, None, None)["path"] == ""


def test_label_erase_ignores_pixels_below_the_confidence():
    labels = np.array([[[1, 2], [0, 1]]], np.uint8)
    confidence = np.array([[[255, 100], [200, 127]]], np.uint8)  # p = 1, 0.39, 0.78, 0.498
    out, erased = label_erase(labels, confidence, 0.5, 255)
    assert out.tolist() == [[[1, 255], [0, 255]]] and erased.tolist() == [[[False, True], [False, True]]]
    assert label_erase(labels, confidence, 0.0, 255)[0].tolist() == labels.tolist()
    multilabel, _ = label_erase(np.ones((1, 2, 1, 2), np.uint8), np.array([[[[255, 10]], [[255, 255]]]], np.uint8),
                                0.5, 255)
    assert multilabel[0, :, 0].tolist() == [[1, 255], [1, 1]]


def test_temperature_softens_the_confidence_label_erase_sees():
    from im_core.builders.one_model import tempered_prediction
    torch.manual_seed(0)
    model = build_model(3, 3, alpha=0.25).eval()
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    labels, sharp = tempered_prediction(model, images, "multiclass", 3, 1.0, None)
    labels_soft, soft = tempered_prediction(model, images, "multiclass", 3, 5.0, None)
    assert np.array_equal(labels, labels_soft)  # the argmax does not move
    assert (soft.astype(int) <= sharp.astype(int) + 1).all() and soft.mean() < sharp.mean()


def test_the_ema_teacher_follows_the_student_and_the_loss_is_a_feature_l1():
    torch.manual_seed(0)
    student = build_model(3, 2, alpha=0.25)
    teacher = MeanTeacher(student, decay=0.9, dropout=0.0, weight=2.0)
    x = torch.rand(2, 3, 32, 32) * 255
    _, features = student.forward_with_features(x)
    assert features.shape == (2, 32, 2, 2)
    assert float(teacher.loss(features, x).detach()) == pytest.approx(0.0, abs=1e-6)  # a copy at first
    before = [p.clone() for p in teacher.teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student)
    for b, t, s in zip(before, teacher.teacher.parameters(), student.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * s, atol=1e-6)
    _, features = student.forward_with_features(x)
    loss = teacher.loss(features, x)
    assert float(loss.detach()) > 0 and loss.requires_grad
    assert not any(p.requires_grad for p in teacher.teacher.parameters())


def test_the_development_set_is_a_seeded_subset_of_the_validation_split():
    assert dev_positions(10, None, 0).tolist() == list(range(10)) == dev_positions(10, 50, 0).tolist()
    dev = dev_positions(100, 20, 3)
    assert len(dev) == 20 and len(set(dev)) == 20 and dev.tolist() == sorted(dev.tolist())
    assert dev.tolist() == dev_positions(100, 20, 3).tolist() != dev_positions(100, 20, 4).tolist()


EXPERIMENT = {"dataset": "tiny", "generations": 2, "seed": 0, "model": {"alpha": 0.25},
              "train": {"batch_size": 8, "steps": 4, "eval_every": 2, "predict_batch_size": 32},
              "stage0": {"models": 2}, "selection": {"top_k": 2}}


def _config(**experiments) -> dict:
    return {"datasets": {"tiny": {"source": "demo", "n_images": 40, "size": [32, 32], "seed": 1,
                                  "labeled_fraction": 0.2, "val_fraction": 0.2, "test_fraction": 0.2}},
            "experiments": {name: dict(EXPERIMENT, **exp) for name, exp in experiments.items()}}


def test_config_checks_of_the_vocabulary():
    cfg = _config(ok={"students": {"search": "beam"}, "pseudo_labels": {"builder": "parent", "label_erase": 0.8}})
    exp = imc.validate_config(cfg)["experiments"]["ok"]
    assert imc.models_in_generation(exp, 1) == 2 and imc.models_in_generation(exp, 2) == 4
    assert imc.train_settings(exp, 2, 3).parent == "rank:1" and imc.train_settings(exp, 2, 3).labeled_share == 0
    assert not imc.uses_pseudo_labels(exp, 2)  # every P child has its own store
    bad = {
        "scratch_parent": ({"pseudo_labels": {"builder": "parent"}}, "start from scratch"),
        "im_erase": ({"pseudo_labels": {"label_erase": 0.5}}, "label_erase: applies"),
        "share": ({"students": {"search": "random", "labeled_share": 0.5}, "pseudo_labels": {"builder": "parent"}},
                  "remove labeled_share"),
        "noisy": ({"students": {"search": "beam"}, "noisy_student": {"enabled": True}}, "widens"),
        "top_k": ({"students": {"search": "beam"}, "selection": {"top_k": 3}, "stage0": {"models": 3}},
                  "more than the 2 models of generation 1"),
    }
    for name, (settings, message) in bad.items():
        with pytest.raises(InputError, match=message):
            imc.validate_config(_config(**{name: settings}))
    shared = _config(base={}, other={"start_from": "base", "selection": {"top_k": 2, "dev_images": 5}})
    with pytest.raises(InputError, match=r"gen0 settings differ from 'base' in \['dev_images'\]"):
        imc.validate_config(shared)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("stages")
    config = _config(
        gist={"students": {"search": "beam", "beam_width": 2}, "pseudo_labels": {"builder": "parent", "label_erase": 0.6},
              "selection": {"top_k": 2, "dev_images": 5}},
        rist={"students": {"search": "random", "paths": 2, "feature_consistency": 1.0},
              "pseudo_labels": {"builder": "parent", "label_erase": 0.6, "temperature": 2.0}})
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(workdir, "results/gist/gen2/metrics.csv", "results/rist/gen2/metrics.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return workdir


@pytest.mark.slow
def test_tiny_gist_keeps_a_beam_of_l_and_p_children(staged):
    res = staged / "results" / "gist"
    gen1, gen2 = (pd.read_csv(res / f"gen{g}" / "metrics.csv") for g in (1, 2))
    assert len(gen1) == 2 and len(gen2) == 4
    assert sorted(gen1["path"]) == ["L", "P"]
    beam = list(gen1.sort_values("rank")["model_id"])
    by_id = gen2.set_index("model_id")
    for i in range(4):
        row = by_id.loc[f"gen2_m{i}"]
        assert row["parent"] == beam[i // 2] and row["init"] == "parent"
        parent_path = gen1.set_index("model_id").loc[row["parent"], "path"]
        assert row["path"] == parent_path + "LP"[i % 2]
        assert row["label_source"] == ("L" if i % 2 == 0 else "P")
        # a P child's pseudo-labels are its parent's prediction with Label Erase
        assert np.isnan(row["pseudo_coverage"]) == (i % 2 == 0)
    selection = json.loads((res / "gen1" / "selection.json").read_text())
    assert selection["metric"] == "dev_miou"
    scores = json.loads((res / "gen1" / "models" / "m0" / "scores.json").read_text())
    assert scores["dev"]["images"] == 5 and scores["val"]["images"] == 8
    pseudo = res / "gen2" / "models" / "m1" / "pseudo.zarr"
    import zarr
    store = zarr.open_group(str(pseudo), mode="r")
    assert store.attrs["builder"] == "parent" and store.attrs["teachers"] == [beam[0]]
    erased = store["im"][:]  # Label Erase at 0.6: a model trained for 4 steps is unsure of many pixels
    assert erased.any() and (store["labels"][:][erased] == 255).all() and (store["labels"][:][~erased] < 6).all()
    assert not (res / "gen2" / "models" / "m0" / "pseudo.zarr").exists()


@pytest.mark.slow
def test_tiny_rist_follows_its_drawn_paths(staged):
    exp = imc.validate_config(yaml.safe_load((staged / "config.yaml").read_text()))["experiments"]["rist"]
    paths = draw_paths(0, 2, 2, 4)
    gen2 = pd.read_csv(staged / "results" / "rist" / "gen2" / "metrics.csv").set_index("model_id")
    for i, path in enumerate(paths):
        assert gen2.loc[f"gen2_m{i}", "path"] == path
        assert gen2.loc[f"gen2_m{i}", "parent"] == f"gen1_m{i}"
    assert imc.train_settings(exp, 2, 0).feature_consistency.ema_decay == 0.99


@pytest.mark.slow
def test_a_second_run_of_the_stages_has_nothing_to_do(staged):
    run = snakemake(staged, "-n", "results/gist/gen2/metrics.csv", "results/rist/gen2/metrics.csv")
    assert run.returncode == 0 and "Nothing to be done" in run.stdout + run.stderr
