"""The baselines' building blocks: input noise, ALDT copies, FDT labels, the ensemble and
best-teacher builders, the consistency trainer, and the comparison table."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TRAIN_SETTINGS, make_demo_store, pseudo_settings, replace

from im_core.builders.ensembles import ensemble_predictions
from im_core.data.augment import augmented_copies, photometric
from im_core.data.read import read_split, training_arrays
from im_core.data.training_set import training_set
from im_core.errors import InputError
from im_core.io import open_store, write_json
from im_core.models.checkpoints import load_checkpoint
from im_core.models.inference import predict_probabilities
from im_core.runtime.numeric_path import choose_path
from im_core.settings import NumericRequest, Photometric
from im_core.steps import compare, evaluate, predict, pseudo, train

SETTINGS = TRAIN_SETTINGS
PSEUDO = pseudo_settings(teachers=2)


@pytest.fixture(scope="module")
def teachers(store, tmp_path_factory):
    """Two trained gen0 models, their predictions and a selection ranking m1 first."""
    d = tmp_path_factory.mktemp("teachers")
    ckpts, preds = [], []
    for i in range(2):
        train.run(str(store), str(d / f"m{i}.pt"), replace(SETTINGS, seed=i), model_id=f"gen0_m{i}", progress=False)
        predict.run(str(d / f"m{i}.pt"), str(store), str(d / f"p{i}.zarr"), ["val", "test", "unlabeled"])
        ckpts.append(str(d / f"m{i}.pt"))
        preds.append(str(d / f"p{i}.zarr"))
    write_json(d / "sel.json", {"ranking": ["gen0_m1", "gen0_m0"], "selected": ["gen0_m1", "gen0_m0"]})
    return {"dir": d, "ckpts": ckpts, "preds": preds, "selection": str(d / "sel.json")}


def test_photometric_noise_keeps_blocked_pixels_black_and_values_in_range():
    noise = Photometric(blur=2.0, noise=25, contrast=0.5, brightness=25)
    images = torch.full((2, 3, 8, 8), 128.0)
    images[:, :, :2] = 0  # blocked by an inconsistency mask (found as all-black pixels)
    out = photometric(images, noise, torch.Generator().manual_seed(0))
    assert (out[:, :, :2] == 0).all() and out.min() >= 0 and out.max() <= 255
    assert not torch.equal(out[:, :, 2:], images[:, :, 2:])
    assert torch.equal(out, photometric(images, noise, torch.Generator().manual_seed(0)))
    assert torch.equal(images[:, :, 2:], torch.full((2, 3, 6, 8), 128.0))  # the input is not modified
    blocked = torch.zeros(2, 8, 8, dtype=torch.bool)
    blocked[:, 5:] = True  # an explicit mask wins over the black pixels
    out = photometric(images, noise, torch.Generator().manual_seed(0), blocked)
    assert (out[:, :, 5:] == 0).all() and (out[:, :, 2:5] > 0).any()


def test_augmented_copies_are_deterministic_and_keep_valid_labels(store):
    labeled = read_split(open_store(store), "labeled")
    images, labels = augmented_copies(labeled.images, labeled.masks, 3, SETTINGS.augment, seed=7)
    assert images.shape == (3 * len(labeled.images), *labeled.images.shape[1:]) and images.dtype == np.uint8
    assert labels.shape == (3 * len(labeled.masks), *labeled.masks.shape[1:])
    assert set(np.unique(labels)) <= set(np.unique(labeled.masks)) | {0}
    again = augmented_copies(labeled.images, labeled.masks, 3, SETTINGS.augment, seed=7)
    assert np.array_equal(images, again[0]) and np.array_equal(labels, again[1])
    assert not np.array_equal(images[: len(labeled.images)], labeled.images)


def test_training_set_sizes_for_ldt_aldt_fdt(store):
    s = open_store(store)
    n_labeled = len(read_split(s, "labeled").index)
    n_unlabeled = len(read_split(s, "unlabeled").index)
    got = training_set(s, None, replace(SETTINGS, labels="labeled"))
    images, n = got.images, got.n_labeled
    assert len(images) == n == n_labeled
    got = training_set(s, None, replace(SETTINGS, labels="labeled", labeled_copies=2, copies_seed=0))
    images, n = got.images, got.n_labeled
    assert len(images) == 3 * n_labeled and n == n_labeled
    got = training_set(s, None, replace(SETTINGS, labels="all"))
    images, labels, n = got.images, got.labels, got.n_labeled
    assert len(images) == n == n_labeled + n_unlabeled
    assert np.array_equal(labels[n_labeled:], read_split(s, "unlabeled").masks)


def test_fdt_refuses_a_data_set_without_unlabeled_masks(tmp_path):
    import zarr
    path = tmp_path / "data.zarr"
    make_demo_store(path, n_images=20)
    group = zarr.open_group(str(path), mode="r+")
    group["has_mask"][:] = False
    with pytest.raises(InputError, match="unlabeled images have no mask"):
        training_arrays(open_store(path), "all")


@pytest.mark.parametrize("builder", ["model_ensemble", "input_ensemble", "best_teacher"])
def test_baseline_builders_label_every_pixel_without_a_mask(store, teachers, tmp_path, builder):
    out = tmp_path / "pseudo.zarr"
    result = pseudo.run(str(store), teachers["selection"], teachers["preds"], str(out), replace(PSEUDO, builder=builder,
                        label_mode="im_class"), 1, checkpoints=teachers["ckpts"])
    p = open_store(out)
    assert p.attrs["builder"] == builder and p.attrs["label_mode"] == "ignore" and p.attrs["im_class_index"] is None
    assert not p["im"][:].any() and (p["labels"][:] != 255).all()
    unlabeled = read_split(open_store(store), "unlabeled", with_masks=False)
    assert np.array_equal(p["images"][:], unlabeled.images)  # nothing blocked
    assert result["teachers"] == (["gen0_m1", "gen0_m0"] if builder == "model_ensemble" else ["gen0_m1"])
    stats = evaluate.pseudo_label_statistics(str(out), str(store))
    assert np.isnan(stats["im_fraction"]) and stats["pseudo_coverage"] == 1.0


def test_best_teacher_and_ensembles_match_their_definitions(store, teachers):
    images = read_split(open_store(store), "unlabeled", with_masks=False).images
    m1, ckpt = load_checkpoint(teachers["ckpts"][1], torch.device("cpu"))
    m0, _ = load_checkpoint(teachers["ckpts"][0], torch.device("cpu"))
    best = open_store(teachers["preds"][1])["unlabeled/labels"][:]
    path = choose_path(NumericRequest.of_checkpoint(ckpt["settings"]), images.shape[1:3])  # the path predict.run took
    again = ensemble_predictions([path.model(copy.deepcopy(m1))], images, "multiclass", 6, flips=False, path=path)[0]
    if path.device == "cpu":
        assert np.array_equal(again, best)
    else:  # another process may autotune other kernels, and a near tie in bf16 logits can flip
        assert np.mean(again == best) > 0.999
    p0 = predict_probabilities(m0, images, "multiclass")
    p1 = predict_probabilities(m1, images, "multiclass")
    assert np.allclose(p1.sum(1), 1, atol=1e-5)
    averaged = ((p0 + p1) / 2).argmax(1)
    assert np.array_equal(ensemble_predictions([m1, m0], images, "multiclass", 6, flips=False)[0], averaged)
    # flip ensemble: the mean of the 4 flipped-back probabilities
    flipped = predict_probabilities(m1, images, "multiclass", flips=True)
    manual = (p1 + predict_probabilities(m1, images[:, :, ::-1], "multiclass")[..., ::-1]
              + predict_probabilities(m1, images[:, ::-1], "multiclass")[:, :, ::-1]
              + predict_probabilities(m1, images[:, ::-1, ::-1], "multiclass")[:, :, ::-1, ::-1]) / 4
    assert np.allclose(flipped, manual, atol=1e-5)


def test_ensemble_builder_needs_checkpoints(store, teachers, tmp_path):
    with pytest.raises(InputError, match="runs the teachers: pass their --checkpoints"):
        pseudo.run(str(store), teachers["selection"], teachers["preds"], str(tmp_path / "p.zarr"),
                   replace(PSEUDO, builder="model_ensemble"), 1)


def test_consistency_trainer_fine_tunes_the_best_teacher(store, teachers, tmp_path):
    settings = replace(SETTINGS, trainer="consistency", options={"consistency_weight": 1.0}, lr=1e-9, steps=2,
                       eval_every=2)
    train.run(str(store), str(tmp_path / "c.pt"), settings, model_id="gen1_m0", generation=1, progress=False,
              init_selection=teachers["selection"], init_checkpoints=teachers["ckpts"])
    tuned = torch.load(tmp_path / "c.pt", weights_only=True)
    teacher = torch.load(teachers["ckpts"][1], weights_only=True)  # gen0_m1 ranks first
    conv = next(k for k in teacher["state_dict"] if k.endswith("weight") and teacher["state_dict"][k].ndim == 4)
    assert torch.allclose(tuned["state_dict"][conv], teacher["state_dict"][conv], atol=1e-5)
    assert tuned["model_args"] == teacher["model_args"]
    with pytest.raises(InputError, match="fine-tunes the previous generation's best model"):
        train.run(str(store), str(tmp_path / "d.pt"), settings, progress=False)


def _metrics_csv(path, generation, best_test, im_fraction=float("nan")):
    pd.DataFrame([
        {"generation": generation, "model_id": f"gen{generation}_m0", "rank": 2, "val_miou": 0.1, "val_miou_per_image": 0.1,
         "test_miou": 0.0, "test_miou_per_image": 0.0, "im_fraction": im_fraction, "pseudo_accuracy": 0.9,
         "pseudo_coverage": 0.8},
        {"generation": generation, "model_id": f"gen{generation}_m1", "rank": 1, "val_miou": 0.5, "val_miou_per_image": 0.4,
         "test_miou": best_test, "test_miou_per_image": best_test - 0.1, "im_fraction": im_fraction,
         "pseudo_accuracy": 0.9, "pseudo_coverage": 0.8},
    ]).to_csv(path, index=False)
    return str(path)


def test_comparison_table_averages_best_on_val_models_over_seeds(tmp_path):
    runs = []
    for seed, offset in ((0, 0.0), (1, 0.2)):
        ldt = _metrics_csv(tmp_path / f"ldt{seed}.csv", 0, 0.4 + offset)
        runs.append(("ldt", seed, [ldt]))
        runs.append(("im", seed, [ldt, _metrics_csv(tmp_path / f"im{seed}.csv", 1, 0.5 + offset, 0.2 + offset)]))
    table = compare.comparison_table(runs)
    assert list(zip(table["method"], table["generation"])) == [("ldt", 0), ("im", 0), ("im", 1)]
    im1 = table.iloc[2]
    assert im1["label"] == "IM" and im1["seeds"] == 2 and im1["models"] == 2
    assert im1["test_miou"] == pytest.approx(0.6) and im1["test_miou_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert im1["test_miou_per_image"] == pytest.approx(0.5) and im1["val_miou"] == pytest.approx(0.5)
    assert im1["test_miou_models_mean"] == pytest.approx(0.3) and im1["im_fraction"] == pytest.approx(0.3)
    assert np.isnan(table.iloc[0]["im_fraction"])
    text = compare.format_table(table)
    assert "| IM | 1 | 2 | 0.600 ± 0.141 |" in text
    single = compare.comparison_table([r for r in runs if r[1] == 0])
    assert single["test_miou_std"].isna().all() and "| IM | 1 | 1 | 0.500 |" in compare.format_table(single)
    compare.write_comparison(runs, str(tmp_path / "c.csv"), str(tmp_path / "c.png"), title="t")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and len(pd.read_csv(tmp_path / "c.csv")) == 3


def test_comparison_inputs_are_checked(tmp_path):
    with pytest.raises(InputError, match="expected METHOD:SEED=gen0.csv"):
        compare.parse_run("im=a.csv")
    assert compare.parse_run("im_plus:2=a.csv,b.csv") == ("im_plus", 2, ["a.csv", "b.csv"])
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="x.csv: not a generation metrics table"):
        compare.comparison_table([("im", 0, [str(tmp_path / "x.csv")])])


def test_comparison_carries_paths_and_the_stage_the_development_set_chooses(tmp_path):
    files = []
    for g, (dev, path) in enumerate([(0.3, ""), (0.6, "P"), (0.5, "PL")]):
        f = tmp_path / f"gen{g}.csv"
        pd.read_csv(_metrics_csv(f, g, 0.4 + g / 10)).assign(dev_miou=[0.0, dev], path=["x", path]).to_csv(f, index=False)
        files.append(str(f))
    table = compare.comparison_table([("gist", 0, files), ("gist", 1, files)])
    assert list(table["path"].fillna("")) == ["", "P/P", "PL/PL"]
    assert list(table["chosen"]) == [0, 2, 0]  # gen1's dev mIoU is the best after gen0, in both seeds
    assert list(table["dev_miou"]) == [0.3, 0.6, 0.5]


def test_a_comparison_refuses_models_trained_on_different_numerical_paths(tmp_path):
    def on_path(name, generation, path):
        table = pd.read_csv(_metrics_csv(tmp_path / name, generation, 0.5))
        table.assign(numeric_path=path).to_csv(tmp_path / name, index=False)
        return str(tmp_path / name)
    ldt = on_path("ldt.csv", 0, "bf16+cl, 1 thread")
    same = [("ldt", 0, [ldt]), ("im", 0, [ldt, on_path("im.csv", 1, "bf16+cl, 1 thread")])]
    assert set(compare.comparison_table(same)["numeric_path"]) == {"bf16+cl, 1 thread"}
    mixed = [("ldt", 0, [ldt]), ("im", 0, [ldt, on_path("im2.csv", 1, "fp32, 1 thread")])]
    with pytest.raises(InputError, match=r"different numerical paths \(bf16\+cl, 1 thread: ldt seed 0 gen0.*fp32, 1 thread: im seed 0 gen1"):
        compare.comparison_table(mixed)
    # tables from before the path was recorded have none, and mix with any
    old = [("ldt", 0, [_metrics_csv(tmp_path / "old.csv", 0, 0.4)]), ("im", 0, [ldt])]
    assert set(compare.comparison_table(old)["numeric_path"]) == {"bf16+cl, 1 thread"}
