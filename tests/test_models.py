import pytest
import torch

from im_core.io import atomic_output
from im_core.models.losses import discretize, output_channels, segmentation_loss
from im_core.models import build_model, count_parameters
from im_core.trainers.optim import lr_at


@pytest.mark.parametrize("alpha, expected", [(1.0, 0.68e6), (2.0, 2.72e6), (0.5, 0.17e6)])
def test_unet_parameter_count_matches_the_authors(alpha, expected):
    n = count_parameters(build_model(3, 9, alpha=alpha))  # 8 SUIM classes + IM class
    assert abs(n - expected) / expected < 0.01, n


def test_unet_output_shape_and_input_scaling():
    model = build_model(3, 4, alpha=0.25).eval()
    x = torch.randint(0, 256, (2, 3, 32, 48)).float()
    seen = []
    first_conv = model.stem[0][0]
    first_conv.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    out = model(x)
    assert out.shape == (2, 4, 32, 48)
    # the authors' 1x1 U-Net takes grey levels 0..255 and divides them by 255 itself
    assert torch.equal(seen[0], x / 255.0) and seen[0].max() <= 1.0


def test_output_channels_per_task():
    assert output_channels("multiclass", 8) == 8
    assert output_channels("multiclass", 8, extra_im_class=True) == 9
    assert output_channels("binary", 2) == 1
    assert output_channels("multilabel", 3) == 3


def test_losses_ignore_the_ignore_index():
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 1, 0, 0] = 10.0  # confident class 1 at pixel 0
    target = torch.tensor([[[1, 255]]])
    ce = segmentation_loss(logits, target, "multiclass", 255)
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(logits[..., :1], target[..., :1]).item())
    b_logits = torch.tensor([[[[5.0, -5.0]]]])
    b_target = torch.tensor([[[1, 255]]])
    bce = segmentation_loss(b_logits, b_target, "binary", 255)
    assert bce.item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(-5.0)).item())
    assert segmentation_loss(logits, torch.full((1, 1, 2), 255), "multiclass", 255).item() == 0.0


def test_discretize_never_picks_the_im_channel():
    logits = torch.tensor([[[[1.0]], [[2.0]], [[9.0]]]])  # channel 2 = extra IM class
    assert discretize(logits, "multiclass", 2).item() == 1
    assert discretize(torch.tensor([[[[0.3]]]]), "binary", 2).item() == 1
    assert discretize(torch.tensor([[[[-0.3]], [[0.2]]]]), "multilabel", 2).flatten().tolist() == [0, 1]


def test_lr_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_at(s, 100, 0.01, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01)
    assert max(lrs) == pytest.approx(0.01) and lrs[-1] < 1e-5
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    poly = [lr_at(s, 100, 0.01, 0, "poly", 0.9) for s in range(101)]
    assert poly[0] == pytest.approx(0.01) and poly[50] == pytest.approx(0.01 * 0.5 ** 0.9) and poly[100] == 0
    assert all(a >= b for a, b in zip(poly, poly[1:]))


def test_optimizer_is_adamw_or_sgd_with_momentum():
    from im_core.trainers.optim import make_optimizer
    model = torch.nn.Conv2d(3, 2, 1)
    adamw = make_optimizer(model, "adamw", lr=0.003, weight_decay=1e-4)
    sgd = make_optimizer(model, "sgd", lr=0.01, weight_decay=5e-4, momentum=0.9)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 1e-4
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer(model, "adam", lr=0.01, weight_decay=0)


def test_failed_write_leaves_no_output(tmp_path):
    target = tmp_path / "store.zarr"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.mkdir()
            (tmp / "zarr.json").write_text("{}")
            raise RuntimeError("job died")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.mkdir()
    assert target.is_dir()
