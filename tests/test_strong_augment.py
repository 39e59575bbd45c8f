"""The strong augmentation of FixMatch/UniMatch (im_core.data.strong): the photometric view,
CutMix boxes and pasting, all drawn from the generator passed in."""
import dataclasses

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from im_core.data.strong import (AUTHORS, VIEW_DRAWS, StrongAugment, color_jitter_one, cutmix_boxes,
                                 jitter_factors, paste, strong_view)

OFF = dataclasses.replace(AUTHORS, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, cutmix_p=0.0)
ALWAYS = dataclasses.replace(AUTHORS, jitter_p=1.0, grayscale_p=1.0, blur_p=1.0, cutmix_p=1.0)


def images(n=4, c=3, size=12, seed=0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed)) * 255


def view(x, settings=AUTHORS, seed=1, blocked=None):
    return strong_view(x, settings, torch.Generator().manual_seed(seed), blocked)


def test_authors_settings_are_active_and_off_is_not():
    assert AUTHORS.active and AUTHORS.photometric_active and AUTHORS.cutmix_active
    assert not OFF.active
    with pytest.raises(ValueError):
        dataclasses.replace(AUTHORS, jitter_p=1.5)
    with pytest.raises(ValueError):
        dataclasses.replace(AUTHORS, hue=0.6)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("settings", [AUTHORS, ALWAYS])
def test_shape_dtype_and_range_kept(channels, settings):
    x = images(c=channels)
    out = view(x, settings)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 255
    assert not torch.equal(out, x)


def test_one_channel_image_is_left_grey_by_saturation_hue_and_grayscale():
    x = images(c=1)
    only_colour = dataclasses.replace(OFF, jitter_p=1.0, brightness=0.0, contrast=0.0, grayscale_p=1.0)
    assert torch.allclose(view(x, only_colour), x, atol=1e-3)


def test_same_seed_same_view_other_seed_other_view():
    x = images()
    assert torch.equal(view(x, seed=5), view(x, seed=5))
    assert not torch.equal(view(x, seed=5), view(x, seed=6))


def test_restored_generator_state_resumes_bit_identically():
    x = images()
    generator = torch.Generator().manual_seed(3)
    strong_view(x, AUTHORS, generator)
    state = generator.get_state()
    first = strong_view(x, AUTHORS, generator), cutmix_boxes(4, 12, 12, 0.5, (0.02, 0.4), (0.3, 1 / 0.3), generator)
    generator.set_state(state)
    again = strong_view(x, AUTHORS, generator), cutmix_boxes(4, 12, 12, 0.5, (0.02, 0.4), (0.3, 1 / 0.3), generator)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_nothing_on_leaves_the_input_unchanged():
    x = images()
    assert torch.equal(view(x, OFF), x)
    assert not cutmix_boxes(8, 12, 12, 0.0, (0.02, 0.4), (0.3, 1 / 0.3), torch.Generator().manual_seed(0)).any()


def test_grayscale_makes_the_channels_equal():
    out = view(images(), dataclasses.replace(OFF, grayscale_p=1.0))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_jitter_is_torchvisions_with_factors_and_order_per_image():
    x = images(n=3)
    x[1:] = x[0]  # the same image three times: each gets its own factors
    settings = dataclasses.replace(OFF, jitter_p=1.0)
    out = view(x, settings, seed=7)
    u = torch.rand(3, VIEW_DRAWS, generator=torch.Generator().manual_seed(7))
    factors, order = jitter_factors(u[:, 1:5], settings), u[:, 5:9].argsort(1)
    for i in range(3):
        expected = x[i] / 255
        for index in order[i].tolist():
            adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)[index]
            expected = adjust(expected, float(factors[i, index]))
        assert torch.allclose(out[i], expected * 255, atol=1e-3)
        assert torch.allclose(color_jitter_one(x[i] / 255, factors[i].tolist(), order[i].tolist()), expected)
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    lo, hi = factors[:, :3].min(), factors[:, :3].max()
    assert 0.5 <= lo and hi <= 1.5 and factors[:, 3].abs().max() <= 0.25


def test_blocked_pixels_are_black_in_every_channel():
    x = images()
    blocked = torch.zeros(4, 12, 12, dtype=torch.bool)
    blocked[:, 2:6, 3:9] = True
    out = view(x, ALWAYS, blocked=blocked)
    assert (out[blocked[:, None].expand_as(out)] == 0).all()
    assert (out[~blocked[:, None].expand_as(out)] > 0).any()


def test_generator_advances_alike_whatever_the_coins_say():
    x = images()
    after = []
    for settings, p in ((OFF, 0.0), (ALWAYS, 1.0)):
        generator = torch.Generator().manual_seed(11)
        strong_view(x, settings, generator)
        cutmix_boxes(4, 12, 12, p, (0.02, 0.4), (0.3, 1 / 0.3), generator)
        after.append(torch.rand(8, generator=generator))
    assert torch.equal(after[0], after[1])


def test_cutmix_boxes_are_rectangles_of_the_configured_area_inside_the_image():
    n, height, width, area = 2000, 40, 50, (0.02, 0.4)
    boxes = cutmix_boxes(n, height, width, 0.5, area, (0.3, 1 / 0.3), torch.Generator().manual_seed(0))
    assert boxes.shape == (n, height, width) and boxes.dtype == torch.bool
    rows, cols = boxes.any(2), boxes.any(1)
    assert torch.equal(boxes, rows[:, :, None] & cols[:, None, :])  # one axis-aligned rectangle (or none)
    for side in (rows, cols):  # contiguous: one run of True per side (zero-padded: two changes)
        changes = (torch.nn.functional.pad(side.int(), (1, 1)).diff(dim=1) != 0).sum(1)
        assert torch.equal(changes, 2 * side.any(1).long())
    sizes = boxes.sum((1, 2)).double() / (height * width)
    applied = sizes > 0
    assert 0.45 < applied.double().mean() < 0.55
    fractions = sizes[applied]
    # int() of both sides (and clipping to the image) only shrinks a box, by under a pixel row and column
    assert fractions.max() <= area[1] and fractions.min() >= 0.5 * area[0]
    assert fractions.max() > 0.8 * area[1] and fractions.min() < 1.5 * area[0]
    assert 0.8 * sum(area) / 2 < fractions.mean() < sum(area) / 2


def test_cutmix_boxes_at_p_one_always_and_fit_small_images():
    boxes = cutmix_boxes(200, 5, 7, 1.0, (0.02, 0.4), (0.3, 1 / 0.3), torch.Generator().manual_seed(2))
    assert boxes.shape == (200, 5, 7)
    assert (boxes.sum((1, 2)) <= 0.4 * 35).all()


def test_paste_carries_images_labels_and_multilabels_inside_the_box_only():
    g = torch.Generator().manual_seed(4)
    box = cutmix_boxes(6, 10, 10, 1.0, (0.1, 0.4), (0.3, 1 / 0.3), g)
    assert box.any((1, 2)).all()
    for shape in ((6, 3, 10, 10), (6, 10, 10), (6, 4, 10, 10)):
        target = torch.randint(0, 5, shape, generator=g)
        source = torch.randint(5, 10, shape, generator=g)
        out = paste(target, source, box)
        inside = box if len(shape) == 3 else box[:, None].expand(shape)
        assert out.dtype == target.dtype and out.shape == target.shape
        assert torch.equal(out[inside], source[inside]) and torch.equal(out[~inside], target[~inside])
    confidence, ignore = torch.rand(6, 10, 10, generator=g), torch.rand(6, 10, 10, generator=g) > 0.5
    assert torch.equal(paste(confidence, confidence.flip(0), box)[box], confidence.flip(0)[box])
    assert torch.equal(paste(ignore, ~ignore, box), ignore ^ box)
    with pytest.raises(ValueError):
        paste(torch.zeros(6, 10, 10), torch.zeros(6, 10, 10), box[:, :5])


def test_settings_have_no_defaults():
    with pytest.raises(TypeError):
        StrongAugment()
