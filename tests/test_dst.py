"""DST-CBC: class-balanced thresholds, the dynamic loss, the best model so far, valtiny, and a
tiny dst_cbc run through Snakemake."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr
from conftest import pseudo_settings, replace

from im_core.builders.class_balanced import assign, class_keys, sample_confidences, thresholds
from im_core.data.splits import dev_positions
from im_core.models.losses import segmentation_loss
from im_core.trainers.dynamic import dynamic_loss
from im_core.steps.select import best_so_far
from test_workflow import snakemake


def test_class_balanced_thresholds_keep_the_top_ratio_of_each_class():
    # class 0: 100 pixels of confidences 1..100; class 1: 20 pixels of 200..219 (a small class)
    labels = np.array([0] * 100 + [1] * 20, np.uint8).reshape(1, 1, 120)
    confidence = np.array(list(range(1, 101)) + list(range(200, 220)), np.uint8).reshape(1, 1, 120)
    keys = class_keys(labels, multilabel=False)
    samples = sample_confidences(keys, confidence, np.ones_like(labels, bool), 2, stride=1)
    limits = thresholds(samples, 0.2)
    assert limits.tolist() == [81, 216]  # the top 20 % of each class, whatever its size
    out, left_out = assign(labels, keys, confidence, limits, np.ones_like(labels, bool), 255)
    assert (out[labels == 0] != 255).sum() == 20 and (out[labels == 1] != 255).sum() == 4
    assert left_out.sum() == 96
    everything, _ = assign(labels, keys, confidence, thresholds(samples, 1.0), np.ones_like(labels, bool), 255)
    assert (everything == labels).all()
    # pixels outside the valid region (IM disagreement) are neither sampled nor labeled
    valid = np.ones_like(labels, bool)
    valid[..., 90:100] = False
    samples = sample_confidences(keys, confidence, valid, 2, stride=1)
    assert len(samples[0]) == 90 and samples[0].max() == 90
    out, _ = assign(labels, keys, confidence, thresholds(samples, 1.0), valid, 255)
    assert (out[..., 90:100] == 255).all() and (out[..., :90] == 0).all()


def test_multilabel_thresholds_per_channel_and_state():
    labels = np.array([[[[1, 1, 0, 0]], [[0, 0, 0, 1]]]], np.uint8)  # 1 image, 2 channels, 1 x 4
    keys = class_keys(labels, multilabel=True)
    assert keys[0, :, 0].tolist() == [[1, 1, 0, 0], [2, 2, 2, 3]]
    confidence = np.full_like(labels, 200)
    samples = sample_confidences(keys, confidence, np.ones((1, 1, 1, 4), bool), 4, stride=1)
    assert [len(s) for s in samples] == [2, 2, 3, 1]


def test_dynamic_loss_with_gamma_0_is_cross_entropy_and_normalises_by_pixels():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 8, 8)
    target = torch.randint(0, 3, (4, 8, 8), dtype=torch.uint8)
    target[0, :2] = 255
    pseudo = torch.tensor([False, False, True, True])
    assert torch.allclose(dynamic_loss(logits, target, pseudo, 0.0, "multiclass"),
                          segmentation_loss(logits, target, "multiclass"))
    binary_logits, binary_target = torch.randn(4, 1, 8, 8), torch.randint(0, 2, (4, 8, 8), dtype=torch.uint8)
    assert torch.allclose(dynamic_loss(binary_logits, binary_target, pseudo, 0.0, "binary"),
                          segmentation_loss(binary_logits, binary_target, "binary"))
    # gamma > 0: the pseudo-labeled pixels weigh p^gamma, the division is still by the pixel count
    ce = torch.nn.functional.cross_entropy(logits, torch.where(target == 255, 0, target).long(), reduction="none")
    p = logits.softmax(1).gather(1, torch.where(target == 255, 0, target).long()[:, None])[:, 0]
    valid = target != 255
    weight = torch.where(pseudo[:, None, None], p ** 9, torch.ones_like(p))
    expected = (ce * weight * valid).sum() / valid.sum()
    assert torch.allclose(dynamic_loss(logits, target, pseudo, 9.0, "multiclass"), expected)
    assert dynamic_loss(logits, target, pseudo, 9.0, "multiclass") < segmentation_loss(logits, target, "multiclass")


def test_the_best_model_so_far_carries_over_a_worse_round():
    first = best_so_far(None, ["gen0_m1", "gen0_m0"], {"gen0_m1": 0.5, "gen0_m0": 0.4}, 0)
    assert first == {"model_id": "gen0_m1", "generation": 0, "score": 0.5}
    worse = best_so_far({"best_so_far": first}, ["gen1_m0"], {"gen1_m0": 0.45}, 1)
    assert worse == first
    better = best_so_far({"best_so_far": worse}, ["gen2_m0"], {"gen2_m0": 0.55}, 2)
    assert better["model_id"] == "gen2_m0"


def test_valtiny_takes_about_one_image_per_class():
    masks = np.zeros((6, 4, 4), np.uint8)
    masks[1, 0, 0] = 1
    masks[3, 0, 0] = 2
    masks[4, 0, 0] = 1
    dev = dev_positions(6, "per_class", 0, masks, 3)
    shows = [set(np.unique(masks[i])) for i in dev]
    assert 1 <= len(dev) <= 3 and set().union(*shows) == {0, 1, 2}
    assert dev.tolist() == dev_positions(6, "per_class", 0, masks, 3).tolist()


@pytest.mark.slow
def test_tiny_dst_cbc_rounds_through_snakemake(tmp_path):
    config = {
        "datasets": {"tiny": {"source": "demo", "n_images": 40, "size": [32, 32], "seed": 1,
                              "labeled_fraction": 0.2, "val_fraction": 0.2, "test_fraction": 0.2}},
        "experiments": {"tiny": {"dataset": "tiny", "generations": 1, "model": {"alpha": 0.25},
                                 "train": {"batch_size": 8, "steps": 4, "eval_every": 2, "predict_batch_size": 32},
                                 "stage0": {"models": 2}, "students": {"models": 2},
                                 "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2, "dev_images": "per_class"}}},
        "comparisons": {"tiny": {"base": "tiny", "generations": 2, "methods": ["ldt", "dst_cbc", "dst_cbc_im"]}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "results/tiny/compare.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    res = tmp_path / "results" / "tiny" / "compare"
    for g, ratio in ((1, 0.2), (2, 0.4)):
        store = zarr.open_group(str(res / "dst_cbc" / "seed0" / f"gen{g}" / "pseudo.zarr"), mode="r")
        assert store.attrs["builder"] == "class_balanced" and store.attrs["ratio"] == ratio
        assert len(store.attrs["thresholds"]) == 6
        selection = json.loads((res / "dst_cbc" / "seed0" / f"gen{g - 1}" / "selection.json").read_text())
        assert store.attrs["teachers"] == [selection["best_so_far"]["model_id"]]
        table = pd.read_csv(res / "dst_cbc" / "seed0" / f"gen{g}" / "metrics.csv")
        assert table["best_so_far"].iloc[0].startswith("gen") and "pseudo_accuracy_background" in table.columns
        ckpt = torch.load(res / "dst_cbc" / "seed0" / f"gen{g}" / "models" / "m0" / "model.pt", weights_only=True)
        assert ckpt["lineage"]["parent"] == selection["best_so_far"]["model_id"]
        assert ckpt["settings"]["dynamic_gamma"] == 9 and ckpt["settings"]["labeled_share"] == 0.5
    im_store = zarr.open_group(str(res / "dst_cbc_im" / "seed0" / "gen1" / "pseudo.zarr"), mode="r")
    assert len(im_store.attrs["teachers"]) >= 2 and im_store.attrs["settings"]["agreement"]
    again = snakemake(tmp_path, "-n", "results/tiny/compare.csv")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_the_agreement_filter_is_the_previous_rounds_top_n_not_the_best_so_far():
    from im_core.builders import BUILDERS
    from im_core.builders.class_balanced import agreement
    selection = {"ranking": ["gen2_m0", "gen2_m1"], "selected": ["gen2_m0", "gen2_m1"],
                 "best_so_far": {"model_id": "gen1_m0", "generation": 1, "score": 0.9}}
    settings = pseudo_settings(builder="class_balanced", teachers=2, agreement=True, ratio=0.5)
    chosen = BUILDERS["class_balanced"].teachers(selection, settings, None, 3)
    assert chosen == ["gen1_m0", "gen2_m0", "gen2_m1"]
    preds = np.zeros((3, 1, 2, 2), np.uint8)
    preds[0] = 1                      # the best so far disagrees everywhere: it does not count
    preds[2, 0, 0, 0] = 1             # the top 2 disagree on one pixel
    valid = agreement(preds, "multiclass", settings)
    assert valid.tolist() == [[[False, True], [True, True]]]
    assert agreement(preds, "multiclass", replace(settings, agreement=False)).all()
