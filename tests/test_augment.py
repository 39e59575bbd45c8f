"""Batch augmentation, the in-memory batch source and the numerical-path choice."""
import os
import platform

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from conftest import TRAIN_SETTINGS, augment, replace

from im_core.data.augment import NO_AUGMENT, augment_batch, crop_boxes, gaussian_blur, geometric
from im_core.data.batches import Batches, TrainingTensors
from im_core.models.losses import segmentation_loss
from im_core.runtime.cpu import capped_flags, cpu_has_native_bf16
from im_core.runtime.devices import claim_gpu
from im_core.runtime.numeric_path import NumericPath, choose_path, resolve_channels_last, resolve_precision
from im_core.runtime.process import keep_freed_memory
from im_core.settings import FeatureConsistency, NumericRequest, Photometric
from im_core.steps.train import graph_eligible


def labelled_batch(n=6, size=16, seed=0):
    """Images whose red channel encodes the label (10 x class) and a blocked mask on class 2."""
    rng = np.random.default_rng(seed)
    labels = torch.from_numpy(rng.integers(0, 4, (n, size, size)).astype(np.uint8))
    labels[:, :4, :4] = 255  # an ignored corner
    images = torch.stack([labels * 0 + 50, labels * 0 + 60, labels * 0 + 70], 1).to(torch.uint8)
    images[:, 0] = torch.where(labels == 255, 200, labels * 10).to(torch.uint8)
    blocked = labels == 2
    images[blocked[:, None].expand_as(images)] = 0
    return images, labels, blocked


def test_flips_move_images_labels_and_mask_together_exactly():
    images, labels, blocked = labelled_batch()
    x, y, b = geometric(images, labels, blocked, augment(hflip=True, vflip=True, scale=[1.0, 1.0]),
                        torch.Generator().manual_seed(1))
    assert x.dtype == torch.float32 and y.dtype == torch.uint8 and b.dtype == torch.bool
    assert torch.equal(b, y == 2)
    assert torch.equal(x[:, 0][~b], torch.where(y == 255, 200, y * 10).float()[~b])
    flipped = [i for i in range(len(x)) if not torch.equal(y[i], labels[i])]
    assert flipped, "with p=0.5 per axis some of 6 images must be flipped"
    for i in range(len(x)):
        assert any(torch.equal(y[i], labels[i].flip(d)) if d else torch.equal(y[i], labels[i])
                   for d in [(), (-1,), (-2,), (-2, -1)])


def test_scale_crops_keep_labels_nearest_and_the_mask_aligned():
    images, labels, blocked = labelled_batch(n=8, size=32)
    x, y, b = augment_batch(images, labels, blocked, augment(hflip=True, scale=[0.3, 0.6]),
                            torch.Generator().manual_seed(2))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8, 32, 32)
    assert set(torch.unique(y).tolist()) <= {0, 1, 2, 3, 255}  # nearest: no blended class values
    assert torch.equal(b, y == 2)  # labels and mask went through one nearest resampling
    assert (x[b[:, None].expand_as(x)] == 0).all()  # blocked pixels are black
    assert not torch.equal(y, labels)  # the crops zoom in


def test_same_generator_state_gives_the_same_batch():
    images, labels, blocked = labelled_batch()
    settings = augment(hflip=True, scale=[0.5, 1.0], noise=10, blur=1.5, contrast=0.2, brightness=5)
    a = augment_batch(images, labels, blocked, settings, torch.Generator().manual_seed(5))
    b = augment_batch(images, labels, blocked, settings, torch.Generator().manual_seed(5))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert a[0].min() >= 0 and a[0].max() <= 255


def test_crop_boxes_lie_inside_the_image_with_the_asked_area():
    boxes = crop_boxes(2000, (0.5, 1.0), torch.Generator().manual_seed(0))
    w, h, left, top = boxes.unbind(1)
    assert (w <= 1).all() and (h <= 1).all() and (left >= 0).all() and (top >= 0).all()
    assert (left + w <= 1 + 1e-6).all() and (top + h <= 1 + 1e-6).all()
    area = w * h
    assert area.min() >= 0.5 - 1e-6 and area.max() <= 1.0 + 1e-6
    ratio = w / h
    assert ratio.min() >= 0.8 - 1e-5 and ratio.max() <= 1.25 + 1e-5


def test_batch_blur_matches_torchvision_per_image_and_skips_small_sigma():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 24, 24, generator=g) * 255
    sigma = torch.tensor([1.5, 0.05, 1.5])
    out = gaussian_blur(images, sigma)
    assert torch.equal(out[1], images[1])
    k = 2 * int(np.ceil(3 * 1.5)) + 1
    expected = TF.gaussian_blur(images[0], [k, k], [1.5, 1.5])
    assert torch.allclose(out[0], expected, atol=1e-3)


def test_batches_visit_every_image_once_per_epoch():
    n, bs = 10, 4
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 16, 16).contiguous()
    data = TrainingTensors(images, torch.zeros(n, 16, 16, dtype=torch.uint8), torch.zeros(n, 16, 16, dtype=torch.bool))
    batches = Batches(data, bs, NO_AUGMENT, torch.Generator().manual_seed(0))
    assert batches.steps_per_epoch == 2  # the last, short batch is dropped
    stream = iter(batches)
    seen = torch.cat([next(stream)[0][:, 0, 0, 0] for _ in range(batches.steps_per_epoch)]).long().tolist()
    assert len(seen) == 8 and len(set(seen)) == 8
    assert Batches(data, 16, None, torch.Generator()).steps_per_epoch == 1  # fewer images than a batch: one batch


def test_training_tensors_from_store_layout():
    images = np.zeros((5, 16, 24, 3), np.uint8)
    t = TrainingTensors.from_arrays(images, np.zeros((5, 16, 24), np.uint8))
    assert t.images.shape == (5, 3, 16, 24) and t.blocked.shape == (5, 16, 24) and not t.blocked.any()
    assert t.nbytes() == 5 * 16 * 24 * (3 + 1 + 1) + 5


def test_loss_is_the_mean_over_valid_pixels_and_zero_when_all_are_ignored():
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8), dtype=torch.uint8)
    target[0, :3] = 255
    valid = target != 255
    expected = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid].long())
    assert torch.allclose(segmentation_loss(logits, target, "multiclass"), expected, atol=1e-6)
    empty = segmentation_loss(logits, torch.full_like(target, 255), "multiclass")
    empty.backward()
    assert float(empty.detach()) == 0.0
    binary = torch.randint(0, 2, (2, 8, 8), dtype=torch.uint8)
    binary[1, 0] = 255
    v = binary != 255
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0][v], binary[v].float())
    assert torch.allclose(segmentation_loss(logits[:, :1], binary, "binary"), expected, atol=1e-6)


AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
AVX2 = frozenset({"avx2", "fma"})


def test_precision_auto_takes_bf16_only_where_the_cpu_has_it():
    cpu = torch.device("cpu")
    assert cpu_has_native_bf16(AMX) and not cpu_has_native_bf16(AVX2)
    assert resolve_precision("auto", cpu, AMX) == "bf16"
    assert resolve_precision("auto", cpu, AVX2) == "fp32"
    assert resolve_precision("fp32", cpu, AMX) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", cpu, AMX)
    with pytest.raises(ValueError, match="fp16 is for CUDA"):
        choose_path(NumericRequest(precision="fp16"), (32, 32), cpu, AMX)


def test_channels_last_auto_follows_the_measurements():
    cpu = torch.device("cpu")
    assert resolve_channels_last("auto", cpu, (32, 32), "fp32", flags=AMX)      # AVX-512: pays at every size
    assert not resolve_channels_last("auto", cpu, (32, 32), "fp32", flags=AVX2)  # AVX2: 0.9x at 32 px
    assert resolve_channels_last("auto", cpu, (128, 128), "fp32", flags=AVX2)
    assert not resolve_channels_last(False, cpu, (128, 128), "fp32", flags=AMX)
    assert resolve_channels_last("auto", cpu, (128, 128), "bf16", flags=AMX)
    assert resolve_channels_last("auto", cpu, (32, 32), "bf16", flags=AMX)


def test_a_path_runs_the_model_in_its_format_and_precision():
    from im_core.models import build_model
    path = NumericPath(device="cpu", precision="bf16", channels_last=True)
    model = path.model(build_model(3, 2, 0.25))
    x = path.input(torch.rand(2, 3, 16, 16) * 255)
    assert x.is_contiguous(memory_format=torch.channels_last)
    with path.autocast():
        out = model(x)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 2, 16, 16)
    assert path.as_dict() == {"device": "cpu", "precision": "bf16", "channels_last": True, "compile": False,
                              "deterministic": False, "cuda_graph": False, "threads": None}


def test_jobs_claim_the_gpu_with_the_fewest_jobs(tmp_path):
    gpus = ["GPU-a", "GPU-b"]
    claims = [claim_gpu(gpus, str(tmp_path)) for _ in range(3)]
    assert [index for index, _ in claims] == [0, 1, 0]
    claims[0][1].close()  # the first job on GPU a ends (or is killed: the lock goes with the process)
    claims += [claim_gpu(gpus, str(tmp_path)) for _ in range(2)]
    assert [index for index, _ in claims[3:]] == [0, 1]


def test_cuda_graphs_where_a_training_step_calls_the_model_once():
    cuda, fixed = torch.device("cuda"), NumericRequest(precision="bf16", channels_last=True)
    autotune = torch.backends.cudnn.benchmark
    try:
        assert choose_path(fixed, (32, 32), cuda, graph_eligible=True).cuda_graph
        assert choose_path(replace(fixed, cuda_graphs=True), (32, 32), cuda, graph_eligible=True).cuda_graph
        assert not choose_path(replace(fixed, cuda_graphs=False), (32, 32), cuda, graph_eligible=True).cuda_graph
        assert not choose_path(replace(fixed, compile=True), (32, 32), cuda, graph_eligible=True).cuda_graph
        assert not choose_path(fixed, (32, 32), cuda, graph_eligible=False).cuda_graph
        assert not choose_path(fixed, (32, 32), torch.device("cpu"), graph_eligible=True).cuda_graph
    finally:
        torch.backends.cudnn.benchmark = autotune
    # the training step is eligible where its trainer calls the model once per batch
    assert graph_eligible(TRAIN_SETTINGS)
    for trainer in ("consistency", "cct"):  # the model runs on several batches per step
        assert not graph_eligible(replace(TRAIN_SETTINGS, trainer=trainer))
    assert not graph_eligible(replace(TRAIN_SETTINGS, feature_consistency=FeatureConsistency(1.0, 0.99, 0.5)))


def test_noisy_student_noise_reaches_the_pseudo_labeled_pairs_only():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(1, 255, (6, 3, 16, 16), dtype=torch.uint8, generator=gen)
    labels = torch.zeros(6, 16, 16, dtype=torch.uint8)
    blocked = torch.zeros(6, 16, 16, dtype=torch.bool)
    pseudo = torch.tensor([False, False, False, True, True, True])
    x, _, _ = augment_batch(images, labels, blocked, NO_AUGMENT, gen, pseudo,
                            Photometric(noise=20.0, blur=1.0, contrast=0, brightness=0))
    assert torch.equal(x[:3], images[:3].float())
    assert all(not torch.equal(x[i], images[i].float()) for i in range(3, 6))


def test_deterministic_option_turns_on_deterministic_algorithms(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        path = choose_path(NumericRequest(deterministic=True, precision="fp32"), (32, 32), torch.device("cpu"))
        assert path.deterministic and path.as_dict()["deterministic"]
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    assert not choose_path(NumericRequest(precision="fp32"), (32, 32), torch.device("cpu")).deterministic


def _marked_pairs(n_truth: int, n_pseudo: int) -> TrainingTensors:
    n = n_truth + n_pseudo
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    pseudo = torch.arange(n) >= n_truth
    return TrainingTensors(images, torch.zeros(n, 8, 8, dtype=torch.uint8), torch.zeros(n, 8, 8, dtype=torch.bool),
                           pseudo)


@pytest.mark.parametrize("share, truth_per_batch", [(0.25, 2), (0.0, 0), (1.0, 8), (0.5, 4)])
def test_labeled_share_fixes_the_ground_truth_pairs_in_every_batch(share, truth_per_batch):
    data = _marked_pairs(10, 30)
    batches = Batches(data, 8, NO_AUGMENT, torch.Generator().manual_seed(0), labeled_share=share)
    seen = []
    for _ in range(12):
        x, _ = next(batches)
        ids = x[:, 0, 0, 0].long()
        assert len(ids) == 8 and int((ids < 10).sum()) == truth_per_batch
        seen += ids.tolist()
    if 0 < share < 1:
        assert set(seen) == set(range(40))  # both pools cycle through all their pairs


def test_mixed_batches_resume_where_they_stopped():
    data = _marked_pairs(10, 30)
    a = Batches(data, 8, augment(scale=[1.0, 1.0]), torch.Generator().manual_seed(1), labeled_share=0.25)
    for _ in range(5):
        next(a)
    state = a.state()
    expected = [next(a)[0] for _ in range(6)]
    b = Batches(data, 8, augment(scale=[1.0, 1.0]), torch.Generator().manual_seed(99), labeled_share=0.25)
    b.load_state(state)
    assert all(torch.equal(e, next(b)[0]) for e in expected)


def test_labeled_share_needs_the_pairs_it_asks_for():
    with pytest.raises(Exception, match="pseudo-labeled pairs per batch, but the training set has none"):
        Batches(_marked_pairs(10, 0), 8, None, torch.Generator(), labeled_share=0.5)


def test_instruction_set_caps_take_flags_away():
    amx = frozenset({"avx2", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile"})
    assert capped_flags(amx, "AVX2", None) == {"avx2"}
    assert capped_flags(amx, "avx512_core", None) == {"avx2", "avx512f", "avx512bw"}
    assert capped_flags(amx, "AVX512_CORE_BF16", None) == {"avx2", "avx512f", "avx512bw", "avx512_bf16"}
    assert capped_flags(amx, None, "avx2") == {"avx2", "amx_bf16", "amx_tile"}
    assert capped_flags(amx, "ALL", "AVX512") == amx


_RSS_AFTER_FREE = """
import ctypes, sys
from im_core.runtime.process import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss_mb()
block = libc.malloc(64 * 2**20)                  # a batch's activations, as large blocks go
ctypes.memset(block, 1, 64 * 2**20)              # touched: its pages are in
libc.free(block)
print(rss_mb() - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_keeps_a_freed_block_in_the_heap():
    """By default glibc serves a 64 MB block by mmap and gives it back at free; a job's setting
    keeps it in the heap, so the next step's activations find their pages already in."""
    import subprocess
    import sys
    kept = {mode: float(subprocess.run([sys.executable, "-c", _RSS_AFTER_FREE, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "keep")}
    assert kept["default"] < 16 and kept["keep"] > 48, kept
