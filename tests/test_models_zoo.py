"""The architectures on pretrained encoders (models/registry.py, smp_models.py, weights.py):
each builds with random weights, trains a step, saves and reloads; weights from a file; the
error without weights; strides, encoders and Noisy Student in the config checks; normalisation;
the encoder's learning rate and freezing; gradient checkpointing (the same loss, gradients and
BatchNorm statistics, its config checks, through the training job); training, resume, CCT, the mean teacher and a parent
through the training job; and (slow) a tiny IM run through Snakemake with the no-op rerun.
Nothing here downloads: every model is built with `weights: none` or from a file written here."""
import copy

import pytest
import torch
import yaml
from conftest import Interrupted, interrupt_after_saves, replace, train_settings

from im_core.config import resolve_dataset
from im_core.config.validate import validate_config
from im_core.data.store import prepare
from im_core.errors import InputError
from im_core.io import write_json
from im_core.models import auxiliary_decoder, build_model, count_parameters
from im_core.models.checkpoints import load_checkpoint, read_checkpoint
from im_core.models.registry import model_stride
from im_core.runtime import resume
from im_core.steps import predict, train
from im_core.trainers.optim import make_optimizer, scaled_lr

# (name, encoder, a size that fits its stride); small encoders of each family
MODELS = [
    ("unet", "resnet18", 32),
    ("deeplabv3plus", "resnet18", 32),
    ("fpn", "tu-convnext_atto", 32),
    ("dpt", "tu-vit_tiny_patch16_224", 32),
    ("dpt", "tu-vit_small_patch14_dinov2", 28),
]


def _args(name, encoder, in_channels=3, out_channels=3):
    return dict(in_channels=in_channels, out_channels=out_channels, name=name, encoder=encoder)


@pytest.mark.parametrize("name, encoder, size", MODELS)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_each_architecture_trains_a_step_saves_and_reloads(name, encoder, size, in_channels, tmp_path):
    torch.manual_seed(0)
    args = _args(name, encoder, in_channels)
    model = build_model(**args)
    assert count_parameters(model) > 1e6
    x = torch.rand(2, in_channels, size, size) * 255
    out = model(x)
    assert out.shape == (2, 3, size, size)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.decoder.parameters() if p.requires_grad)
    features = model.encode(x)
    assert auxiliary_decoder(args)(features).shape == out.shape  # CCT's decoders take the same features
    with torch.no_grad():
        logits, deepest = model.eval().forward_with_features(x)
        assert deepest.dim() == 4 and torch.equal(logits, model.decode(model.encode(x)))
    path = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict(), "model_args": args, "model_id": "m", "task": "multiclass",
                "class_names": ["a", "b", "c"]}, path)
    assert read_checkpoint(path)["model_args"] == args
    reloaded, _ = load_checkpoint(path, torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(reloaded(x), model.eval()(x))


def test_a_checkpoint_records_no_weights_argument(tmp_path):
    args = dict(_args("unet", "resnet18"), weights="imagenet")
    torch.save({"state_dict": {}, "model_args": args, "model_id": "m", "task": "multiclass", "class_names": []},
               tmp_path / "m.pt")
    with pytest.raises(InputError, match="are not arguments of this project's model"):
        read_checkpoint(tmp_path / "m.pt")


def test_smp_encoder_weights_from_a_file_with_the_first_convolution_adapted(tmp_path):
    torch.manual_seed(1)
    source = build_model(**_args("unet", "resnet18")).encoder.state_dict()
    state = {f"encoder.{k}": v for k, v in source.items()} | {"fc.weight": torch.zeros(10, 512)}
    torch.save({"state_dict": state}, tmp_path / "resnet18.pth")
    gray = build_model(**_args("unet", "resnet18", in_channels=1), weights=str(tmp_path / "resnet18.pth"))
    loaded = gray.encoder.state_dict()
    assert torch.equal(loaded["conv1.weight"], source["conv1.weight"].sum(1, keepdim=True))  # smp's rule for 1 channel
    assert torch.equal(loaded["layer4.1.conv2.weight"], source["layer4.1.conv2.weight"])
    rgb = build_model(**_args("deeplabv3plus", "resnet18"), weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(rgb.encoder.state_dict()["conv1.weight"], source["conv1.weight"])


def test_timm_encoder_weights_from_a_file(tmp_path):
    import timm
    torch.manual_seed(2)
    source = timm.create_model("convnext_atto", pretrained=False).state_dict()
    torch.save(source, tmp_path / "convnext_atto.pth")
    model = build_model(**_args("fpn", "tu-convnext_atto"), weights=str(tmp_path / "convnext_atto.pth"))
    loaded = dict(model.encoder.named_parameters())
    key = next(k for k in loaded if k.endswith("stages_3.blocks.1.conv_dw.weight"))
    assert torch.equal(loaded[key], source["stages.3.blocks.1.conv_dw.weight"])


def test_a_weights_file_that_does_not_fit_or_exist_is_named(tmp_path):
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match=r"bad\.pth: not the weights of encoder 'resnet18'"):
        build_model(**_args("unet", "resnet18"), weights=str(tmp_path / "bad.pth"))
    with pytest.raises(InputError, match=r"neither 'imagenet', 'none' nor a weights file"):
        build_model(**_args("unet", "resnet18"), weights=str(tmp_path / "missing.pth"))


def test_without_internet_or_cache_the_error_names_what_it_looked_for(monkeypatch):
    import segmentation_models_pytorch as smp
    import timm.models._builder as timm_builder

    def offline(*args, **kwargs):
        raise OSError("no network (test)")

    monkeypatch.setattr(smp.encoders, "hf_hub_download", offline)
    monkeypatch.setattr(timm_builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(timm_builder, "load_state_dict_from_url", offline)
    with pytest.raises(InputError, match=r"smp-hub/resnet18\.imagenet at revision \w+ .*in the cache .*set "
                                         r"model\.weights to its path"):
        build_model(**_args("unet", "resnet18"), weights="imagenet")
    with pytest.raises(InputError, match=r"timm/vit_small_patch14_dinov2\.lvd142m .*timm\.create_model"):
        build_model(**_args("dpt", "tu-vit_small_patch14_dinov2"), weights="imagenet")


@pytest.mark.parametrize("encoder, mean", [("resnet18", (0.485, 0.456, 0.406)),
                                           ("tu-vit_tiny_patch16_224", (0.5, 0.5, 0.5))])
def test_the_encoder_sees_its_own_normalisation(encoder, mean):
    name = "dpt" if "vit" in encoder else "unet"
    model = build_model(**_args(name, encoder)).eval()
    std = (0.229, 0.224, 0.225) if encoder == "resnet18" else (0.5, 0.5, 0.5)
    seen = []
    model.encoder.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    x = torch.rand(1, 3, 32, 32) * 255
    model(x)
    expected = (x / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(seen[0], expected, atol=1e-5)
    gray = build_model(**_args(name, encoder, in_channels=1))
    assert torch.allclose(gray.input_mean.flatten(), torch.tensor([sum(mean) / 3 * 255]))


# ---------------------------------------------------------------- the config

def _config(model: dict, size=(32, 32), **experiment) -> dict:
    return {"datasets": {"d": {"source": "demo", "n_images": 40, "size": list(size)}},
            "experiments": {"e": {"dataset": "d", "generations": 1, "model": model, **experiment}}}


@pytest.mark.parametrize("model, size, message", [
    ({"name": "unet", "encoder": "resnet18"}, (48, 48), r"datasets\.d\.size: 48x48 is not a multiple of 32 .*"
                                                         r"experiments\.e\.model \(unet on resnet18\); use e\.g\. \[64, 64\]"),
    ({"name": "dpt", "encoder": "tu-vit_small_patch14_dinov2"}, (208, 208), r"208x208 is not a multiple of 28"),
    ({"name": "dpt", "encoder": "resnet50"}, (32, 32), r"experiments\.e\.model\.encoder: 'resnet50' is a "
                                                       r"convolutional encoder, which architecture 'dpt' does not take"),
    ({"name": "unet", "encoder": "tu-vit_small_patch14_dinov2"}, (32, 32), r"is a vision transformer encoder"),
    ({"name": "unet", "encoder": "resnet17"}, (32, 32), r"experiments\.e\.model\.encoder: 'resnet17' is not an encoder"),
    ({"name": "unet"}, (32, 32), r"experiments\.e\.model\.encoder: architecture 'unet' needs an encoder"),
    ({"name": "segformer", "encoder": "resnet18"}, (32, 32), r"experiments\.e\.model\.name: 'segformer' is not an"),
    ({"encoder": "resnet18"}, (32, 32), r"experiments\.e\.model\.encoder: applies to the pretrained-encoder"),
    ({"decoder_lr_multiplier": 10}, (32, 32), r"model\.decoder_lr_multiplier: applies to the pretrained-encoder"),
])
def test_model_settings_that_cannot_work_are_refused_by_key(model, size, message):
    with pytest.raises(InputError, match=message):
        validate_config(_config(model, size))


def test_fitting_sizes_pass_and_the_strides_are_the_architectures():
    validate_config(_config({"name": "dpt", "encoder": "tu-vit_small_patch14_dinov2", "weights": "none"}, (224, 224)))
    validate_config(_config({"name": "deeplabv3plus", "encoder": "resnet50"}, (48, 48)))
    assert [model_stride(m) for m in ({}, {"name": "unet", "encoder": "tu-convnext_tiny"},
                                      {"name": "deeplabv3plus", "encoder": "resnet101"},
                                      {"name": "dpt", "encoder": "tu-vit_base_patch14_dinov2.lvd142m"})] == [16, 32, 16, 28]


def test_noisy_student_widening_is_the_1x1_unets_only():
    model = {"name": "unet", "encoder": "resnet18"}
    with pytest.raises(InputError, match=r"noisy_student\.width: widening the students is defined for the 1x1 U-Net"):
        validate_config(_config(model, noisy_student={"enabled": True}))
    validate_config(_config(model, noisy_student={"enabled": True, "width": [1.0, 1.0]}))


# ---------------------------------------------------------------- training

@pytest.fixture(scope="module")
def store32(tmp_path_factory):
    cfg = resolve_dataset("t", {"source": "demo", "n_images": 24, "size": [32, 32], "seed": 0, "ignore_index": 255,
                                "labeled_fraction": 0.3, "val_fraction": 0.2, "test_fraction": 0.2})
    path = tmp_path_factory.mktemp("d32") / "data.zarr"
    prepare(cfg, path)
    return path


def _model(name="unet", encoder="resnet18", **changes):
    return {"name": name, "encoder": encoder, "weights": "none", "decoder_lr_multiplier": 1.0,
            "freeze_encoder_steps": 0, **changes}


def zoo_settings(**changes):
    return train_settings(**{"model": _model(), "batch_size": 4, **changes})


def test_the_decoder_learns_at_its_multiple_and_a_frozen_encoder_stays():
    settings = zoo_settings(model=_model(decoder_lr_multiplier=10.0, freeze_encoder_steps=-1))
    model = build_model(**settings.model.model_args(3, 3))
    own = torch.nn.Conv2d(1, 1, 1)
    opt = make_optimizer(model, "adamw", lr=0.01, weight_decay=1e-4, own=own, decoder_lr_multiplier=10.0)
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    groups = opt.param_groups
    assert {id(p) for p in groups[0]["params"]} == encoder_ids and groups[1]["params"][-1] is own.bias
    assert [scaled_lr(g, 0.01) for g in groups] == [0.01, pytest.approx(0.1)]
    model.train()
    model.freeze_encoder(settings.model.frozen_at(1))
    before = copy.deepcopy(model.state_dict())
    model(torch.rand(2, 3, 32, 32) * 255).square().mean().backward()
    opt.step()
    after = model.state_dict()
    encoder_keys = [k for k in after if k.startswith("encoder.")]
    assert all(torch.equal(before[k], after[k]) for k in encoder_keys)  # weights and BatchNorm statistics
    assert not all(torch.equal(before[k], after[k]) for k in after if k.startswith("decoder."))
    assert settings.model.frozen_at(10**6) and not zoo_settings(model=_model(freeze_encoder_steps=2)).model.frozen_at(3)


@pytest.mark.parametrize("case", ["unet_frozen_first_steps", "dpt_cct", "fpn_parent_mean_teacher"])
def test_training_resumes_to_the_same_weights(store32, tmp_path, monkeypatch, case):
    """A training job of each kind, killed after its second save, resumes to the weights of an
    uninterrupted run (CPU), and its checkpoint predicts."""
    init = {}
    if case == "unet_frozen_first_steps":
        settings = zoo_settings(steps=6, eval_every=2, model=_model(decoder_lr_multiplier=5.0, freeze_encoder_steps=3))
    elif case == "dpt_cct":
        from im_core.config import defaults
        cct = defaults("trainer")["cct"]
        settings = zoo_settings(steps=6, eval_every=2, trainer="cct",
                                model=_model("dpt", "tu-vit_tiny_patch16_224", decoder_lr_multiplier=4.0))
        settings = replace(settings, options={"cct": cct})
    else:
        model = _model("fpn", "tu-convnext_atto")
        parent_settings = zoo_settings(steps=2, eval_every=2, model=model)
        train.run(str(store32), str(tmp_path / "start.pt"), parent_settings, model_id="gen0_m0", progress=False)
        write_json(tmp_path / "sel.json", {"ranking": ["gen0_m0"], "selected": ["gen0_m0"]})
        init = {"init_selection": str(tmp_path / "sel.json"), "init_checkpoints": [str(tmp_path / "start.pt")]}
        settings = zoo_settings(steps=6, eval_every=2, model=model, init="parent", parent="rank:0",
                                feature_consistency={"feature_consistency": 1.0, "ema_decay": 0.9, "feature_dropout": 0.5})
    whole = train.run(str(store32), str(tmp_path / "whole.pt"), settings, progress=False, **init)
    out = tmp_path / "resumed.pt"
    with monkeypatch.context() as m:
        interrupt_after_saves(m, 2)
        with pytest.raises(Interrupted):
            train.run(str(store32), str(out), settings, progress=False, **init)
    resumed = train.run(str(store32), str(out), settings, progress=False, **init)
    assert resumed["resumed_at"] == [4] and whole["resumed_at"] == []
    a, b = (torch.load(p, weights_only=True) for p in (tmp_path / "whole.pt", out))
    assert a["history"] == b["history"] and a["model_args"]["name"] == settings.model.name
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    predict.run(str(out), str(store32), str(tmp_path / "p.zarr"), ["test"])


def test_a_parent_of_another_architecture_is_refused(store32, tmp_path):
    train.run(str(store32), str(tmp_path / "start.pt"), zoo_settings(steps=1, eval_every=1), model_id="gen0_m0",
              progress=False)
    write_json(tmp_path / "sel.json", {"ranking": ["gen0_m0"], "selected": ["gen0_m0"]})
    settings = zoo_settings(steps=1, eval_every=1, model=_model("fpn"), init="parent", parent="rank:0")
    with pytest.raises(InputError, match=r"the parent is a unet on resnet18, this model's settings ask for a fpn"):
        train.run(str(store32), str(tmp_path / "child.pt"), settings, progress=False, model_id="gen1_m0",
                  generation=1, init_selection=str(tmp_path / "sel.json"), init_checkpoints=[str(tmp_path / "start.pt")])


# ---------------------------------------------------------------- gradient checkpointing

@pytest.mark.parametrize("name, encoder, size", [("deeplabv3plus", "resnet18", 32),    # smp's ResNet: its stages
                                                 ("unet", "tu-resnet18", 64),          # timm's CNN wrapper
                                                 ("dpt", "tu-vit_tiny_patch16_224", 32)])  # timm's ViT blocks
def test_gradient_checkpointing_gives_the_same_loss_gradients_and_statistics(name, encoder, size):
    torch.manual_seed(0)
    plain = build_model(**_args(name, encoder, out_channels=4)).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_gradient_checkpointing(True)
    layers = [m for m in checkpointed.encoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    calls = {}
    for layer in layers:
        layer.register_forward_hook(lambda m, i, o: calls.__setitem__(m, calls.get(m, 0) + 1))
    x, y = torch.rand(2, 3, size, size) * 255, torch.randint(0, 4, (2, size, size))
    losses = []
    for model in (plain, checkpointed):
        torch.manual_seed(1)  # the same dropout masks (a recomputation replays the random state)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.detach())
    assert max(calls.values()) == 2  # the encoder's layers were run again in the backward pass
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-6)
    grads = dict(plain.named_parameters())
    for key, p in checkpointed.named_parameters():
        torch.testing.assert_close(p.grad, grads[key].grad, rtol=1e-5, atol=1e-6, msg=key)
    a, b = plain.state_dict(), checkpointed.state_dict()  # BatchNorm statistics updated once, as without it
    assert a.keys() == b.keys() and all(torch.allclose(a[k].double(), b[k].double(), atol=1e-6) for k in a)
    with torch.no_grad():  # prediction is not affected
        torch.testing.assert_close(plain.eval()(x), checkpointed.eval()(x))


@pytest.mark.parametrize("model, message", [
    ({"gradient_checkpointing": True}, r"experiments\.e\.model\.gradient_checkpointing: applies to the pretrained-"
                                       r"encoder architectures, not to 'unet1x1'"),
    ({"name": "unet", "encoder": "efficientnet-b0", "gradient_checkpointing": True},
     r"model\.gradient_checkpointing: not implemented for encoder 'efficientnet-b0'"),
])
def test_gradient_checkpointing_where_it_is_not_implemented_is_a_config_error(model, message):
    with pytest.raises(InputError, match=message):
        validate_config(_config(model, (32, 32)))


def test_gradient_checkpointing_is_a_training_option_out_of_the_params_when_off(store32, tmp_path, monkeypatch):
    from im_core.models.registry import model_params
    from im_core.models.smp_models import EncoderDecoder
    switched = []
    original = EncoderDecoder.set_gradient_checkpointing
    monkeypatch.setattr(EncoderDecoder, "set_gradient_checkpointing",
                        lambda self, enable=True: (switched.append(enable), original(self, enable)))
    on = {"name": "unet", "encoder": "resnet18", "gradient_checkpointing": True}
    validate_config(_config({**on, "weights": "none"}, (32, 32)))
    resolved = {"name": "unet", "encoder": "resnet18", "weights": "none", "decoder_lr_multiplier": 1.0,
                "freeze_encoder_steps": 0, "alpha": 1.0, "dropout": 0.0}
    assert "gradient_checkpointing" not in model_params({**resolved, "gradient_checkpointing": False})
    assert model_params({**resolved, "gradient_checkpointing": True})["gradient_checkpointing"] is True
    settings = zoo_settings(steps=2, eval_every=2, model=_model(gradient_checkpointing=True))
    assert not train.graph_eligible(settings)
    out, plain = tmp_path / "ckpt.pt", tmp_path / "plain.pt"
    train.run(str(store32), str(out), settings, progress=False)
    assert switched == [True]
    train.run(str(store32), str(plain), zoo_settings(steps=2, eval_every=2), progress=False)
    assert switched == [True]
    saved, without = (torch.load(p, weights_only=True) for p in (out, plain))
    assert saved["model_args"] == without["model_args"] == _args("unet", "resnet18",
                                                                 out_channels=saved["model_args"]["out_channels"])
    # the same weights and statistics as the job without it (CPU)
    assert all(torch.equal(saved["state_dict"][k], without["state_dict"][k]) for k in saved["state_dict"])
    model, _ = load_checkpoint(out, torch.device("cpu"))
    assert not model.gradient_checkpointing


# ---------------------------------------------------------------- end to end (Snakemake)

def _tiny(model: dict, size: int) -> dict:
    return {
        "default_experiments": ["z"],
        "datasets": {"z": {"source": "demo", "n_images": 40, "size": [size, size], "seed": 1,
                           "labeled_fraction": 0.25, "val_fraction": 0.15, "test_fraction": 0.15}},
        "experiments": {"z": {
            "dataset": "z", "generations": 2, "seed": 0, "model": model,
            "train": {"batch_size": 4, "steps": 4, "eval_every": 2, "predict_batch_size": 16},
            "stage0": {"models": 2}, "students": {"models": 2},
            "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2},
        }},
    }


@pytest.mark.slow
@pytest.mark.parametrize("model, size", [({"name": "unet", "encoder": "resnet18", "weights": "none"}, 32),
                                         ({"name": "dpt", "encoder": "tu-vit_small_patch14_dinov2",
                                           "weights": "none", "decoder_lr_multiplier": 10.0}, 112)])
def test_a_tiny_im_run_through_snakemake_and_its_noop_rerun(tmp_path, model, size):
    import pandas as pd
    from test_workflow import snakemake
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_tiny(model, size)))
    run = snakemake(tmp_path, "results/z/gen2/metrics.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    for g in range(3):
        table = pd.read_csv(tmp_path / "results" / "z" / f"gen{g}" / "metrics.csv")
        assert len(table) == 2 and table["test_miou"].between(0, 1).all()
    ckpt = torch.load(tmp_path / "results/z/gen2/models/m0/model.pt", weights_only=True)
    assert ckpt["model_args"]["name"] == model["name"] and "weights" not in ckpt["model_args"]
    again = snakemake(tmp_path, "-n", "results/z/gen2/metrics.csv")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]


# ---------------------------------------------------------------- the shipped configs

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "config" / "examples"


def _cityscapes_folder(root):
    """A tiny Cityscapes tree (train and val) and the split lists the example's comments make."""
    import numpy as np
    from PIL import Image
    lines = {"labeled": [], "unlabeled": [], "val_half_a": [], "val_half_b": []}
    for split, city, n in (("train", "aachen", 6), ("val", "frankfurt", 4)):
        for f in range(n):
            stem = f"{city}_000000_{f:06d}"
            for folder, suffix, array in (("leftImg8bit", "leftImg8bit", np.full((8, 16, 3), 9 * f, np.uint8)),
                                          ("gtFine", "gtFine_labelIds", np.full((8, 16), 7, np.uint8))):
                path = root / folder / split / city / f"{stem}_{suffix}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(path)
            image = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
            which = (("labeled" if f < 2 else "unlabeled") if split == "train"
                     else ("val_half_a" if f % 2 else "val_half_b"))
            # UniMatch's lists: "image mask" per line; the example's `cut -d ' ' -f 1` keeps the image
            lines[which].append(f"{image} gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png")
    (root / "splits").mkdir()
    for name, rows in lines.items():
        target = {"labeled": "1_16_labeled", "unlabeled": "1_16_unlabeled"}.get(name, name)
        (root / "splits" / f"{target}.txt").write_text("".join(r.split(" ")[0] + "\n" for r in rows))


def _suim_folder(root):
    import numpy as np
    from PIL import Image
    for part, n in (("train_val", 8), ("TEST", 2)):
        for sub in ("images", "masks"):
            (root / part / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(root / part / "images" / f"f{i}.jpg")
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / part / "masks" / f"f{i}.bmp")


@pytest.mark.parametrize("example, target, jobs", [
    # data store, then per generation: a training, prediction and score job per model, selection,
    # metrics (and from gen1 the pseudo-labels), plus the preview and plots
    ("cityscapes_pretrained", "results/cityscapes_1_16_deeplabv3plus_r50/gen3/metrics.csv", 52),
    ("cityscapes_pretrained", "results/cityscapes_1_16_dinov2_s_dpt/gen3/metrics.csv", 52),
    ("suim_resnet", "results/suim_unet_r34/gen5/metrics.csv", 114),
])
def test_the_shipped_pretrained_examples_validate_and_plan(tmp_path, example, target, jobs):
    from test_workflow import snakemake
    config = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    for name, ds in config["datasets"].items():
        ds["path"] = str(tmp_path / name)
        (_cityscapes_folder if ds["source"] == "folder" else _suim_folder)(tmp_path / name)
    validated = validate_config(copy.deepcopy(config))
    for exp in validated["experiments"].values():
        assert exp["model"]["weights"] == "imagenet" and exp["model"]["name"] != "unet1x1"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    plan = snakemake(tmp_path, "-n", target)
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-3000:]
    total = [line.split()[-1] for line in out.splitlines() if line.strip().startswith("total")]
    assert total and int(total[0]) == jobs, out[-2000:]
