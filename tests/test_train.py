import pytest
import torch
from conftest import (TRAIN_SETTINGS, Interrupted, interrupt_after_saves, pseudo_settings, replace,
                      selection_settings, train_settings)

from im_core.io import open_store, write_json
from im_core.methods.stages import lineage
from im_core.runtime import resume
from im_core.settings import FeatureConsistency
from im_core.steps import predict, pseudo, select, train

# repeatable to the bit: on a CPU as they are, on a GPU with deterministic algorithms
SETTINGS = replace(TRAIN_SETTINGS, deterministic=True) if torch.cuda.is_available() else TRAIN_SETTINGS


@pytest.mark.parametrize("label_mode, extra", [("ignore", 0), ("im_class", 1)])
def test_students_train_on_im_pseudo_labels(store, tmp_path, label_mode, extra):
    preds = []
    for i in range(2):
        train.run(str(store), str(tmp_path / f"t{i}.pt"), replace(SETTINGS, seed=i), model_id=f"gen0_m{i}", progress=False)
        predict.run(str(tmp_path / f"t{i}.pt"), str(store), str(tmp_path / f"p{i}.zarr"), ["val", "test", "unlabeled"])
        preds.append(str(tmp_path / f"p{i}.zarr"))
    write_json(tmp_path / "s0.json", {"model_id": "gen0_m0", "val": {"miou": 0.5}})
    write_json(tmp_path / "s1.json", {"model_id": "gen0_m1", "val": {"miou": 0.6}})
    sel = select.run([str(tmp_path / "s0.json"), str(tmp_path / "s1.json")], str(tmp_path / "sel.json"),
                     selection_settings(top_k=2), 0)
    assert sel["ranking"] == ["gen0_m1", "gen0_m0"]
    settings = pseudo_settings(teachers=2, label_mode=label_mode)
    pseudo.run(str(store), str(tmp_path / "sel.json"), preds, str(tmp_path / "pseudo.zarr"), settings, 1)
    pl = open_store(tmp_path / "pseudo.zarr")
    assert pl.attrs["teachers"] == ["gen0_m1", "gen0_m0"] and pl.attrs["label_mode"] == label_mode
    result = train.run(str(store), str(tmp_path / "student.pt"), SETTINGS, pseudo=str(tmp_path / "pseudo.zarr"),
                       model_id="gen1_m0", generation=1, progress=False)
    ckpt = torch.load(tmp_path / "student.pt", weights_only=True)
    assert ckpt["model_args"]["out_channels"] == 6 + extra
    assert ckpt["generation"] == 1 and 0.0 <= result["best_val_miou"] <= 1.0
    predict.run(str(tmp_path / "student.pt"), str(store), str(tmp_path / "ps.zarr"), ["test"])
    assert open_store(tmp_path / "ps.zarr")["test/labels"][:].max() < 6  # never the IM class


def test_training_is_reproducible_with_a_seed(store, tmp_path):
    a = train.run(str(store), str(tmp_path / "a.pt"), SETTINGS, progress=False)
    b = train.run(str(store), str(tmp_path / "b.pt"), SETTINGS, progress=False)
    wa = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert a["best_val_miou"] == b["best_val_miou"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("trainer", ["supervised", "consistency", "parent_with_mean_teacher"])
def test_an_interrupted_job_resumes_to_the_same_weights(store, tmp_path, monkeypatch, trainer):
    settings = replace(SETTINGS, steps=12, eval_every=3, model=replace(SETTINGS.model, dropout=0.2),
                       augment=replace(SETTINGS.augment, noise=5.0, blur=1.0))
    init = {}
    if trainer != "supervised":
        train.run(str(store), str(tmp_path / "start.pt"), SETTINGS, model_id="gen0_m0", progress=False)
        write_json(tmp_path / "sel.json", {"ranking": ["gen0_m0"], "selected": ["gen0_m0"]})
        init = {"init_selection": str(tmp_path / "sel.json"), "init_checkpoints": [str(tmp_path / "start.pt")]}
    if trainer == "consistency":
        settings = replace(settings, trainer="consistency", options={"consistency_weight": 1.0})
    elif trainer == "parent_with_mean_teacher":  # the EMA teacher's weights are part of the state
        settings = replace(settings, init="parent", parent="rank:0",
                           feature_consistency=FeatureConsistency(1.0, 0.9, 0.5))
    whole = train.run(str(store), str(tmp_path / "whole.pt"), settings, progress=False, **init)
    out = tmp_path / "resumed.pt"
    with monkeypatch.context() as m:
        interrupt_after_saves(m, 2)
        with pytest.raises(Interrupted):
            train.run(str(store), str(out), settings, progress=False, **init)
    assert not out.exists() and resume.resume_path(out).exists()
    resumed = train.run(str(store), str(out), settings, progress=False, **init)
    assert resumed["resumed_at"] == [6] and whole["resumed_at"] == []
    assert not resume.resume_path(out).exists()
    a, b = (torch.load(p, weights_only=True) for p in (tmp_path / "whole.pt", out))
    assert a["best_step"] == b["best_step"] and a["history"] == b["history"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_a_resume_state_of_other_settings_is_not_used(store, tmp_path, monkeypatch):
    out = tmp_path / "m.pt"
    settings = replace(SETTINGS, steps=6, eval_every=3)
    with monkeypatch.context() as m:
        interrupt_after_saves(m, 1)
        with pytest.raises(Interrupted):
            train.run(str(store), str(out), settings, progress=False)
    result = train.run(str(store), str(out), replace(settings, lr=0.001), progress=False)
    assert result["resumed_at"] == [] and not resume.resume_path(out).exists()


def test_checkpoint_is_chosen_by_the_selection_metric(store, tmp_path):
    settings = replace(SETTINGS, steps=12, eval_every=2, select_metric="miou_per_image")
    train.run(str(store), str(tmp_path / "m.pt"), settings, progress=False)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    per_image = [h["val_miou_per_image"] for h in ckpt["history"]]
    assert ckpt["select_metric"] == "miou_per_image" and ckpt["best_val_score"] == max(per_image)
    assert ckpt["best_step"] == ckpt["history"][per_image.index(max(per_image))]["step"]


def test_consistency_fine_tune_keeps_its_starting_model_when_nothing_beats_it(store, tmp_path):
    train.run(str(store), str(tmp_path / "start.pt"), replace(SETTINGS, steps=12), model_id="gen0_m0", progress=False)
    write_json(tmp_path / "sel.json", {"ranking": ["gen0_m0"], "selected": ["gen0_m0"]})
    # a learning rate that wrecks the model: the fine-tune must not end worse than it began
    settings = replace(SETTINGS, steps=4, eval_every=2, lr=5.0, trainer="consistency",
                       options={"consistency_weight": 1.0})
    train.run(str(store), str(tmp_path / "ft.pt"), settings, progress=False,
              init_selection=str(tmp_path / "sel.json"), init_checkpoints=[str(tmp_path / "start.pt")])
    start, ft = (torch.load(tmp_path / p, weights_only=True) for p in ("start.pt", "ft.pt"))
    assert ft["lineage"] == {"generation": 0, "init": "parent", "parent": "gen0_m0",
                             "parent_checkpoint": str(tmp_path / "start.pt"), "label_source": "L", "path": ""}
    assert start["lineage"]["init"] == "scratch" and start["lineage"]["parent"] == ""
    assert ft["best_val_score"] >= max(h["val_miou"] for h in ft["history"])
    if ft["best_step"] == 0:
        assert all(torch.equal(start["state_dict"][k], ft["state_dict"][k]) for k in ft["state_dict"])
    assert ft["best_val_miou"] >= start["best_val_miou"] - 1e-9


def test_a_finished_model_removed_by_an_interrupted_snakemake_is_restored_not_retrained(store, tmp_path):
    out = tmp_path / "m.pt"
    first = train.run(str(store), str(out), SETTINGS, progress=False)
    weights = torch.load(out, weights_only=True)["state_dict"]
    out.unlink()  # what Snakemake does to the output of a job that ended after it was interrupted
    again = train.run(str(store), str(out), SETTINGS, progress=False)
    assert again == first
    assert all(torch.equal(weights[k], v) for k, v in torch.load(out, weights_only=True)["state_dict"].items())
    out.unlink()
    other = train.run(str(store), str(out), replace(SETTINGS, lr=0.001), progress=False)
    assert other != first  # other settings: trained, not restored


def test_training_with_sgd_and_a_poly_schedule(store, tmp_path):
    settings = replace(SETTINGS, optimizer="sgd", momentum=0.9, schedule="poly", poly_power=0.9, lr=0.01, steps=6)
    result = train.run(str(store), str(tmp_path / "m.pt"), settings, progress=False)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert 0 <= result["best_val_miou"] <= 1 and ckpt["settings"]["optimizer"] == "sgd"
    train.run(str(store), str(tmp_path / "a.pt"), replace(settings, optimizer="adamw", schedule="cosine"), progress=False)
    other = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(other[k], v) for k, v in ckpt["state_dict"].items())  # the optimizer was used


def test_lineage_names_the_label_source():
    sources = {share: lineage(1, None, "pseudo.zarr", labeled_share=share)["label_source"]
               for share in (None, 0.0, 0.25, 1.0)}
    assert sources == {None: "L+P", 0.0: "P", 0.25: "L:0.25+P:0.75", 1.0: "L"}
    assert lineage(0, None, None, labels="all")["label_source"] == "L (all)"


@pytest.mark.parametrize("rule, parent_id", [("best", "gen0_m1"), ("same_index", "gen0_m0")])
def test_a_student_continues_from_its_parent(store, tmp_path, rule, parent_id):
    for i in range(2):
        train.run(str(store), str(tmp_path / f"p{i}.pt"), replace(SETTINGS, seed=i), model_id=f"gen0_m{i}", progress=False)
    write_json(tmp_path / "sel.json", {"ranking": ["gen0_m1", "gen0_m0"], "selected": ["gen0_m1", "gen0_m0"]})
    settings = replace(SETTINGS, init="parent", parent=rule, lr=1e-12, steps=1, eval_every=1, warmup_fraction=0.0)
    train.run(str(store), str(tmp_path / "s.pt"), settings, model_id="gen1_m0", generation=1, progress=False,
              init_selection=str(tmp_path / "sel.json"),
              init_checkpoints=[str(tmp_path / "p0.pt"), str(tmp_path / "p1.pt")])
    student = torch.load(tmp_path / "s.pt", weights_only=True)
    parent = torch.load(tmp_path / f"p{parent_id[-1]}.pt", weights_only=True)
    assert student["lineage"]["init"] == "parent" and student["lineage"]["parent"] == parent_id
    weights = {k: v for k, v in parent["state_dict"].items() if v.is_floating_point() and "running" not in k}
    assert all(torch.allclose(student["state_dict"][k], v, atol=1e-6) for k, v in weights.items())


def test_a_failed_cuda_graph_recording_trains_eagerly_and_says_so(store, tmp_path, monkeypatch):
    from dataclasses import replace

    from im_core.runtime import cuda_graphs
    choose = train.choose_path
    monkeypatch.setattr(train, "choose_path", lambda *a, **k: replace(choose(*a, **k), cuda_graph=True))
    tried = []
    monkeypatch.setattr(cuda_graphs, "graph_training_forward", lambda model, x, dtype: tried.append(x.shape) or False)
    eager = train.run(str(store), str(tmp_path / "eager.pt"), SETTINGS, progress=False)
    ckpt = torch.load(tmp_path / "eager.pt", weights_only=True)
    assert len(tried) == 1 and ckpt["numeric_path"]["cuda_graph"] is False  # tried once, at the first batch
    monkeypatch.setattr(train, "choose_path", choose)
    plain = train.run(str(store), str(tmp_path / "plain.pt"), replace(SETTINGS, cuda_graphs=False), progress=False)
    assert eager["best_val_miou"] == plain["best_val_miou"]  # the same eager run
