"""CCT: the perturbations, the ramp, the decoders, the trainer and a tiny cct -> cct_im run."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TRAIN_SETTINGS, replace, tiny_comparison

from im_core.models import build_model
from im_core.models.checkpoints import load_checkpoint
from im_core.models.losses import probabilities
from im_core.models.unet1x1 import Decoder
from im_core.steps import train
from im_core.trainers import cct
from test_workflow import snakemake


def _features(seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    model = build_model(3, 3, alpha=0.5)
    return model.encode(torch.rand(2, 3, 32, 32) * 255)


def test_feature_noise_and_dropout_keep_the_shape_and_their_bounds():
    torch.manual_seed(0)
    x = torch.rand(4, 8, 6, 6) + 0.1
    noisy = cct.feature_noise(x)
    assert noisy.shape == x.shape and ((noisy - x).abs() <= 0.3 * x.abs() + 1e-6).all()
    assert torch.allclose((noisy / x)[0], (noisy / x)[1])  # one noise map for the batch
    dropped = cct.spatial_dropout(torch.ones(64, 32, 2, 2))
    zero_channels = (dropped.flatten(2).amax(2) == 0).float().mean()
    assert dropped.shape == (64, 32, 2, 2) and 0.4 < zero_channels < 0.6 and dropped.max() == 2.0


def test_feature_drop_removes_the_most_activated_positions_only():
    torch.manual_seed(0)
    x = torch.rand(3, 4, 8, 8)
    out = cct.feature_drop(x)
    attention, kept = x.mean(1), out.abs().sum(1) > 0
    peak = attention.flatten(1).amax(1)
    for i in range(3):
        assert not kept[i].flatten()[attention[i].flatten().argmax()]  # the peak goes
        assert (attention[i][kept[i]] < 0.9 * peak[i]).all() and (attention[i][~kept[i]] >= 0.7 * peak[i]).all()


def test_guided_cutout_erases_40_percent_of_each_object_box():
    classes = np.zeros((1, 40, 40), np.int64)
    classes[0, 5:15, 5:25] = 2      # a 10 x 20 object
    classes[0, 25:35, 20:30] = 2    # another object of the same class
    keep = cct.cutout_keep_mask(classes, background=0, erase=0.4)
    assert keep.shape == (1, 1, 40, 40)
    for rows, cols in ((slice(5, 15), slice(5, 25)), (slice(25, 35), slice(20, 30))):
        erased = 1 - keep[0, 0, rows, cols].mean()
        assert erased == pytest.approx(0.4, abs=0.06)
    assert keep[0, 0, classes[0] == 0].sum() >= (classes == 0).sum() - 0  # nothing outside the boxes
    assert keep[0, 0, 0, 0] == 1 and keep[0, 0, 39, 39] == 1


def test_context_and_object_masking_are_complementary():
    features = _features()
    classes = torch.zeros(2, 32, 32, dtype=torch.long)
    classes[:, :16] = 1
    context = cct.perturb("context_masking", features, None, None, classes, "multiclass", 0)
    objects = cct.perturb("object_masking", features, None, None, classes, "multiclass", 0)
    for f, a, b in zip(features, context, objects):
        assert a.shape == f.shape and torch.allclose(a + b, f)


def test_vat_moves_the_prediction_more_than_random_noise_of_the_same_norm():
    torch.manual_seed(0)
    features = [f.detach() for f in _features()]
    decoder = Decoder(3, alpha=0.5).eval()
    with torch.no_grad():
        target = probabilities(decoder(features), "multiclass")
    adversarial = cct.vat_perturbation(features, decoder, target, "multiclass", xi=1e-6, eps=2.0)
    norm = torch.sqrt(sum((a - f).flatten(1).pow(2).sum(1) for a, f in zip(adversarial, features)))
    assert torch.allclose(norm, torch.full_like(norm, 2.0), atol=1e-3)
    random = [torch.randn_like(f) for f in features]
    scale = torch.sqrt(sum(r.flatten(1).pow(2).sum(1) for r in random)).view(-1, 1, 1, 1)
    random = [f + 2.0 * r / scale for f, r in zip(features, random)]
    with torch.no_grad():
        moved = [torch.nn.functional.mse_loss(probabilities(decoder(p), "multiclass"), target).item()
                 for p in (adversarial, random)]
    assert moved[0] > moved[1]


def test_rampup_and_decoder_counts():
    assert cct.rampup_weight(0, 1000, 30, 0.1) == pytest.approx(30 * math.exp(-5))
    assert cct.rampup_weight(50, 1000, 30, 0.1) == pytest.approx(30 * math.exp(-5 * 0.25))
    assert cct.rampup_weight(100, 1000, 30, 0.1) == cct.rampup_weight(900, 1000, 30, 0.1) == 30
    assert cct.rampup_weight(0, 1000, 30, 0.0) == 30
    settings = {"weight": 30, "rampup": 0.1, "background_class": 0}
    compact = cct.CrossConsistency(dict(settings, decoders=cct.COMPACT_DECODERS), dict(out_channels=3, alpha=0.5), "multiclass", 3, "cpu")
    full = cct.CrossConsistency(dict(settings, decoders=cct.FULL_DECODERS), dict(out_channels=3, alpha=0.5), "multiclass", 3, "cpu")
    assert len(compact.decoders) == 3 and len(full.decoders) == 30
    assert compact.kinds == ["dropout", "feature_drop", "feature_noise"]
    with pytest.raises(ValueError, match="unknown perturbations"):
        cct.CrossConsistency(dict(settings, decoders={"blur": 1}), dict(out_channels=3, alpha=0.5), "multiclass", 3, "cpu")


@pytest.mark.parametrize("decoders", [cct.COMPACT_DECODERS, {"vat": 1, "cutout": 1, "context_masking": 1,
                                                              "object_masking": 1}])
def test_a_cct_checkpoint_is_a_plain_unet(store, tmp_path, decoders):
    settings = replace(TRAIN_SETTINGS, steps=6, eval_every=3, trainer="cct",
                       options={"cct": {"decoders": decoders, "weight": 30, "rampup": 0.1, "background_class": 0}})
    result = train.run(str(store), str(tmp_path / "cct.pt"), settings, progress=False)
    model, ckpt = load_checkpoint(tmp_path / "cct.pt", torch.device("cpu"))
    plain = build_model(**ckpt["model_args"])
    assert set(ckpt["state_dict"]) == set(plain.state_dict()) and 0 <= result["best_val_miou"] <= 1
    plain.load_state_dict(ckpt["state_dict"])


@pytest.mark.slow
def test_tiny_cct_then_im_from_its_models(tmp_path):
    config = tiny_comparison(["ldt", "cct", "cct_im"], batch_size=8)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "results/tiny/compare.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    table = pd.read_csv(tmp_path / "results" / "tiny" / "compare.csv").set_index(["method", "generation"])
    assert table.loc[("cct_im", 0), "test_miou"] == table.loc[("cct", 0), "test_miou"]  # gen0 = CCT's models
    assert ("cct_im", 1) in table.index
    ckpt = torch.load(tmp_path / "results/tiny/compare/cct/seed0/gen0/models/m0/model.pt", weights_only=True)
    assert ckpt["settings"]["trainer"] == "cct"
