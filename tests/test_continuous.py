"""The continuous trainers (FixMatch, UniMatch V1/V2): confidence masks, the unlabeled loss, the
loss compositions on hand-made logits, the EMA schedule, complementary dropout, training and
resume with each, IM online, and a tiny unimatch -> IM comparison through Snakemake."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TRAIN_SETTINGS, Interrupted, interrupt_after_saves, replace, tiny_comparison

from im_core.config import defaults
from im_core.data.strong import AUTHORS
from im_core.steps import train
from im_core.trainers import CONTINUOUS_TRAINERS, trainer_spec
from im_core.trainers.weak_strong import Targets, complementary_dropout, pseudo_targets, unlabeled_loss
from test_models_zoo import store32  # noqa: F401 (a fixture)
from test_workflow import snakemake


def continuous(**changes) -> dict:
    section = defaults("trainer")["continuous"]
    return section | changes


def settings_for(trainer: str, **changes):
    options = {"continuous": continuous(**changes.pop("continuous", {}))}
    return replace(TRAIN_SETTINGS, trainer=trainer, options=options, **changes)


def test_the_schema_defaults_are_the_authors():
    section = continuous()
    assert (section["threshold"], section["weight"], section["feature_dropout"], section["ema_decay"]) == (0.95, 1.0, 0.5, 0.996)
    strong = {k: tuple(v) if isinstance(v, list) else v for k, v in section["strong"].items()}
    assert strong == {k: getattr(AUTHORS, k) for k in strong}
    assert all(trainer_spec(t).settings == ("continuous",) for t in CONTINUOUS_TRAINERS)


def test_confidence_masks_per_task():
    logits = torch.tensor([[4.0, 0.0, 0.0], [1.0, 0.9, 0.0]]).T.reshape(1, 3, 1, 2)  # pixel 0 sure, pixel 1 not
    t = pseudo_targets(logits, "multiclass", 3, 0.95)
    assert t.label.tolist() == [[[0, 0]]] and t.confident.tolist() == [[[True, False]]]
    # an extra IM channel is never a pseudo-label
    extra = torch.tensor([0.0, 1.0, 9.0]).reshape(1, 3, 1, 1)
    assert pseudo_targets(extra, "multiclass", 2, 0.0).label.item() == 1
    # sigmoid channels: max(p, 1 - p), per label
    binary = torch.tensor([4.0, -4.0, 0.5]).reshape(1, 1, 1, 3)
    t = pseudo_targets(binary, "binary", 1, 0.95)
    assert t.label.tolist() == [[[1, 0, 1]]] and t.confident.tolist() == [[[True, True, False]]]
    multi = torch.tensor([[4.0], [0.1]]).reshape(1, 2, 1, 1)
    t = pseudo_targets(multi, "multilabel", 2, 0.95)
    assert t.label.shape == (1, 2, 1, 1) and t.confident.flatten().tolist() == [True, False]


def test_unlabeled_loss_counts_confident_valid_pixels_over_all_valid():
    logits = torch.zeros(1, 2, 1, 4)
    label = torch.zeros(1, 1, 4, dtype=torch.long)
    confident = torch.tensor([[[True, True, False, True]]])
    valid = torch.tensor([[[True, True, True, False]]])
    loss = unlabeled_loss(logits, Targets(label, confident, valid), "multiclass")
    # two pixels count (confident and valid), divided by the three valid ones
    assert loss.item() == pytest.approx(2 * math.log(2) / 3)
    binary = unlabeled_loss(torch.zeros(1, 1, 1, 4), Targets(label[:, :, :].to(torch.uint8), confident, valid), "binary")
    assert binary.item() == pytest.approx(2 * math.log(2) / 3)
    ml_conf = torch.stack([confident, torch.zeros_like(confident)], 1)
    ml = unlabeled_loss(torch.zeros(1, 2, 1, 4), Targets(torch.zeros(1, 2, 1, 4, dtype=torch.uint8), ml_conf, valid), "multilabel")
    assert ml.item() == pytest.approx(2 * math.log(2) / 6)
    nothing = Targets(label, confident, torch.zeros_like(valid))
    assert unlabeled_loss(logits, nothing, "multiclass").item() == 0


def test_cutmix_carries_the_targets_with_the_box():
    a = Targets(torch.zeros(2, 4, 4, dtype=torch.long), torch.ones(2, 4, 4, dtype=torch.bool),
                torch.ones(2, 4, 4, dtype=torch.bool))
    b = Targets(torch.ones(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.bool),
                torch.zeros(2, 4, 4, dtype=torch.bool))
    box = torch.zeros(2, 4, 4, dtype=torch.bool)
    box[0, 1:3, 1:3] = True
    mixed = a.mixed(b, box)
    assert torch.equal(mixed.label.bool(), box) and torch.equal(~mixed.confident, box) and torch.equal(~mixed.valid, box)
    flipped = Targets(torch.arange(2).view(2, 1, 1).expand(2, 4, 4), a.confident, a.valid).flipped()
    assert flipped.label[:, 0, 0].tolist() == [1, 0]


def test_complementary_dropout_pairs_views():
    torch.manual_seed(0)
    f = torch.ones(16, 6, 3, 3)
    out = complementary_dropout([f], 0.5)[0]
    first, second = out[:8, :, 0, 0], out[8:, :, 0, 0]
    assert torch.equal(first + second, torch.full_like(first, 2.0))  # dropped in one, doubled in the other
    perturbed = (first != 1).any(1)
    assert int(perturbed.sum()) == 4 and set(first[perturbed].unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(complementary_dropout([f], 0.0)[0], f)



@pytest.mark.parametrize("trainer", CONTINUOUS_TRAINERS)
def test_loss_composition_on_hand_made_terms(trainer, store, monkeypatch):
    """The step's loss is (supervised + weight x unlabeled terms) / 2 in the authors' proportions:
    with every unlabeled term replaced by a known value, the trainer's loss is the formula's."""
    import im_core.trainers.fixmatch as fixmatch_module
    import im_core.trainers.unimatch as unimatch_module
    import im_core.trainers.unimatch_v2 as v2_module
    from im_core.trainers import load_trainer
    from im_core.trainers.base import TrainingContext
    from im_core.runtime.numeric_path import NumericPath
    from im_core.models import build_model
    from im_core.data.read import read_split

    values = iter([1.0, 2.0, 4.0])
    fake = lambda logits, targets, task: torch.tensor(next(values))  # noqa: E731
    for module in (fixmatch_module, unimatch_module, v2_module):
        monkeypatch.setattr(module, "unlabeled_loss", fake)
    from im_core.io import open_store
    s = settings_for(trainer, continuous={"weight": 0.5})
    model = build_model(3, 4, alpha=0.25)
    gen = torch.Generator().manual_seed(0)
    unlabeled = read_split(open_store(store), "unlabeled", with_masks=False).images
    ctx = TrainingContext(s, model, {}, "multiclass", 4, NumericPath("cpu", "fp32", False), gen, "cpu", lambda: unlabeled)
    t = load_trainer(trainer)(ctx)
    x = torch.rand(2, 3, *unlabeled.shape[1:3]) * 255
    drawn = t.draw()
    if t.shares_forward:
        logits, extra = t.forward_with_labeled(model, x, drawn, 1, 10)
        assert logits.shape[0] == 2
    else:
        extra = t.loss(model, drawn, 1, 10)
    expected = {"fixmatch": 0.5 * 0.5 * 1.0, "unimatch": 0.5 * (0.25 * 1 + 0.25 * 2 + 0.5 * 4) / 2,
                "unimatch_v2": 0.5 * (1 + 2) / 2 / 2}[trainer]
    assert t.supervised_weight == 0.5 and extra.item() == pytest.approx(expected)


def test_ema_teacher_schedule(store):
    from im_core.trainers import load_trainer
    from im_core.trainers.base import TrainingContext
    from im_core.runtime.numeric_path import NumericPath
    from im_core.models import build_model
    s = settings_for("unimatch_v2", continuous={"ema_decay": 0.9})
    model = build_model(3, 2, alpha=0.25)
    ctx = TrainingContext(s, model, {}, "multiclass", 2, NumericPath("cpu", "fp32", False), torch.Generator(), "cpu",
                          lambda: np.zeros((2, 8, 8, 3), np.uint8))
    t = load_trainer("unimatch_v2")(ctx)
    first = next(model.parameters())
    with torch.no_grad():
        first.fill_(1.0)
    t.after_step(1)  # r = 0: the student's copy
    assert torch.equal(next(t.teacher.parameters()), first)
    with torch.no_grad():
        first.fill_(3.0)
    t.after_step(2)  # r = 1/2
    assert torch.allclose(next(t.teacher.parameters()), torch.full_like(first, 2.0))
    t.after_step(100)  # r = min(0.99, 0.9) = 0.9
    assert torch.allclose(next(t.teacher.parameters()), torch.full_like(first, 0.9 * 2 + 0.1 * 3))


@pytest.mark.parametrize("trainer", CONTINUOUS_TRAINERS)
def test_training_resumes_bit_identically(trainer, store, tmp_path, monkeypatch):
    """Killed after its second save, each trainer resumes to the uninterrupted run's weights
    (the unlabeled streams, the generator and, V2, the EMA teacher are resume state)."""
    settings = settings_for(trainer, steps=6, eval_every=2, continuous={"threshold": 0.5})
    whole = train.run(str(store), str(tmp_path / "whole.pt"), settings, progress=False)
    out = tmp_path / "resumed.pt"
    with monkeypatch.context() as m:
        interrupt_after_saves(m, 2)
        with pytest.raises(Interrupted):
            train.run(str(store), str(out), settings, progress=False)
    resumed = train.run(str(store), str(out), settings, progress=False)
    assert resumed["resumed_at"] == [4] and whole["resumed_at"] == []
    a, b = (torch.load(p, weights_only=True) for p in (tmp_path / "whole.pt", out))
    assert a["history"] == b["history"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.parametrize("trainer, name, encoder", [("unimatch", "unet", "resnet18"),
                                                    ("unimatch_v2", "dpt", "tu-vit_tiny_patch16_224"),
                                                    ("fixmatch", "fpn", "tu-convnext_atto")])
def test_continuous_trainers_on_the_model_zoo(store32, tmp_path, trainer, name, encoder):
    """The feature streams on the encoder/decoder split of smp's CNNs and of a ViT (DPT)."""
    from test_models_zoo import _model, zoo_settings
    settings = zoo_settings(steps=2, eval_every=2, model=_model(name, encoder), trainer=trainer)
    settings = replace(settings, options={"continuous": continuous(threshold=0.0)})
    result = train.run(str(store32), str(tmp_path / "m.pt"), settings, progress=False)
    assert 0 <= result["best_val_miou"] <= 1


def test_im_online_needs_a_pseudo_label_store(store, tmp_path):
    from im_core.errors import InputError
    settings = settings_for("fixmatch", steps=2, eval_every=2, continuous={"im_online": True})
    with pytest.raises(InputError, match="im_online"):
        train.run(str(store), str(tmp_path / "m.pt"), settings, progress=False)


def test_im_online_ignores_the_left_out_pixels(store):
    """With every pixel left out, the unlabeled stream counts none: the unlabeled loss is 0."""
    from im_core.trainers import load_trainer
    from im_core.trainers.base import TrainingContext
    from im_core.runtime.numeric_path import NumericPath
    from im_core.models import build_model
    from im_core.data.read import read_split
    from im_core.io import open_store
    unlabeled = read_split(open_store(store), "unlabeled", with_masks=False).images
    s = settings_for("unimatch", continuous={"im_online": True, "threshold": 0.0})
    model = build_model(3, 4, alpha=0.25)
    everything = np.ones(unlabeled.shape[:3], bool)
    ctx = TrainingContext(s, model, {}, "multiclass", 4, NumericPath("cpu", "fp32", False), torch.Generator().manual_seed(0), "cpu",
                          lambda: unlabeled, lambda: everything)
    t = load_trainer("unimatch")(ctx)
    views, _ = t.draw()
    assert not views.valid.any()
    _, extra = t.forward_with_labeled(model, torch.rand(2, 3, *unlabeled.shape[1:3]) * 255, t.draw(), 1, 4)
    assert extra.item() == 0
    ctx.left_out = lambda: np.zeros(unlabeled.shape[:3], bool)
    t = load_trainer("unimatch")(ctx)
    _, extra = t.forward_with_labeled(model, torch.rand(2, 3, *unlabeled.shape[1:3]) * 255, t.draw(), 1, 4)
    assert extra.item() > 0


def test_config_checks(tmp_path):
    from im_core.config import validate_config
    from im_core.errors import InputError
    base = {"datasets": {"d": {"source": "demo", "n_images": 20, "size": [32, 32]}},
            "experiments": {"e": {"dataset": "d", "generations": 1, "stage0": {"trainer": "unimatch",
                                                                              "continuous": {"im_online": True}}}}}
    with pytest.raises(InputError, match="stage0.continuous.im_online"):
        validate_config(base)
    base["experiments"]["e"]["stage0"] = {"trainer": "fixmatch", "feature_consistency": 1.0}
    with pytest.raises(InputError, match="feature_consistency"):
        validate_config(base)


@pytest.mark.slow
def test_tiny_unimatch_then_im_from_its_models(tmp_path):
    config = tiny_comparison(["ldt", "fixmatch", "unimatch", "unimatch_v2", "unimatch_im", "unimatch_im_unimatch",
                              "unimatch_im_online"])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "results/tiny/compare.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    table = pd.read_csv(tmp_path / "results" / "tiny" / "compare.csv").set_index(["method", "generation"])
    for method in ("unimatch_im", "unimatch_im_unimatch", "unimatch_im_online"):
        assert table.loc[(method, 0), "test_miou"] == table.loc[("unimatch", 0), "test_miou"]  # gen0 = UniMatch's
        assert (method, 1) in table.index
    root = tmp_path / "results/tiny/compare"
    ckpt = torch.load(root / "unimatch/seed0/gen0/models/m0/model.pt", weights_only=True)
    assert ckpt["settings"]["trainer"] == "unimatch"
    student = torch.load(root / "unimatch_im_online/seed0/gen1/models/m0/model.pt", weights_only=True)
    assert student["settings"]["trainer"] == "unimatch" and student["settings"]["continuous"]["im_online"]
    rerun = snakemake(tmp_path, "results/tiny/compare.csv", "-n")
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr
