"""Folder layouts of the common public sets (the shipped examples on tiny hand-made folders),
multi-label masks, grayscale inputs, the streaming store and multi-label end to end."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from PIL import Image

from im_core import config as imc
from im_core.data.store import prepare
from im_core.errors import InputError
from im_core.data.folder import name_key
from test_workflow import snakemake

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "config" / "examples"


def example_dataset(name: str, path: Path, **changes) -> dict:
    """The shipped example's data set entry, validated, with its folder at `path`."""
    example = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    ds = dict(example["datasets"][name], path=str(path), size=[32, 32], **changes)
    config = imc.validate_config({"datasets": {name: ds}, "experiments": {}})
    return config["datasets"][name]


def save(array: np.ndarray, path: Path, mode: str | None = None, palette: list | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if palette:
        im.putpalette([v for c in palette for v in c])
    im.save(path)


def rgb(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def read_store(path: Path):
    return zarr.open_group(str(path), mode="r")


def test_name_key_takes_the_pattern_off_the_file_name():
    assert name_key("{stem}.*", "a/img1.png") == "a/img1"
    assert name_key("{stem}_segmentation.png", "ISIC_001_segmentation.png") == "ISIC_001"
    assert name_key("{stem}_segmentation.png", "ISIC_001.png") is None
    assert name_key("{stem}_leftImg8bit.png", "aachen/aachen_0_1_leftImg8bit.png") == "aachen/aachen_0_1"
    assert name_key("{stem}.*", "notes.txt") is None


def make_isic(root: Path, n: int = 10) -> None:
    for i in range(n):
        mask = np.zeros((40, 48), np.uint8)
        mask[10:20 + i, 5:30] = 255
        save(rgb(i), root / "ISIC2018_Task1-2_Training_Input" / f"ISIC_{i:07d}.jpg")
        save(mask, root / "ISIC2018_Task1_Training_GroundTruth" / f"ISIC_{i:07d}_segmentation.png")
    (root / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("licence")
    for i in range(3):
        save(rgb(100 + i), root / "ISIC2018_Task1-2_Validation_Input" / f"ISIC_{100 + i:07d}.jpg")


def test_isic2018_layout(tmp_path):
    make_isic(tmp_path / "isic")
    cfg = example_dataset("isic2018", tmp_path / "isic")
    summary = prepare(cfg, tmp_path / "data.zarr")
    store = read_store(tmp_path / "data.zarr")
    assert summary["images"] == 13 and summary["splits"]["unlabeled"] >= 3
    labeled = store["has_mask"][:]
    assert set(np.unique(store["masks"][:][labeled])) == {0, 1}  # 255 read as the lesion
    assert store["images"].shape[1:] == (32, 32, 3)


def test_isic2018_mask_that_is_not_0_255_is_named(tmp_path):
    make_isic(tmp_path / "isic")
    save(np.full((40, 48), 7, np.uint8), tmp_path / "isic" / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000003_segmentation.png")
    with pytest.raises(InputError, match=r"ISIC_0000003_segmentation\.png: mask values \[7\]"):
        prepare(example_dataset("isic2018", tmp_path / "isic"), tmp_path / "data.zarr")


def make_cityscapes(root: Path, ids: tuple[int, ...] = (0, 7, 8, 26, 33)) -> None:
    for city, frames in (("aachen", 4), ("bremen", 4)):
        for f in range(frames):
            stem = f"{city}_000000_{f:06d}"
            label_ids = np.array(ids, np.uint8)[np.arange(40 * 48).reshape(40, 48) % len(ids)]
            save(rgb(f), root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png")
            save(label_ids, root / "gtFine" / "train" / city / f"{stem}_gtFine_labelIds.png")
            save(label_ids, root / "gtFine" / "train" / city / f"{stem}_gtFine_instanceIds.png")  # not a mask here
    save(rgb(9), root / "leftImg8bit" / "train_extra" / "erlangen" / "erlangen_000000_000000_leftImg8bit.png")


def test_cityscapes_layout_maps_label_ids_to_train_ids(tmp_path):
    make_cityscapes(tmp_path / "cs")
    cfg = example_dataset("cityscapes", tmp_path / "cs", labeled_fraction=0.5, val_fraction=0.2, test_fraction=0.2)
    prepare(cfg, tmp_path / "data.zarr")
    store = read_store(tmp_path / "data.zarr")
    names = store.attrs["names"]
    assert "aachen/aachen_000000_000000_leftImg8bit.png" in names and len(names) == 9
    values = set(np.unique(store["masks"][:][store["has_mask"][:]]).tolist())
    assert values == {0, 1, 13, 18, 255}  # road, sidewalk, car, bicycle; id 0 -> ignored


def test_cityscapes_id_missing_from_the_map_is_named(tmp_path):
    make_cityscapes(tmp_path / "cs", ids=(7, 8, 34))
    cfg = example_dataset("cityscapes", tmp_path / "cs", labeled_fraction=0.5, val_fraction=0.2, test_fraction=0.2)
    with pytest.raises(InputError, match=r"gtFine_labelIds\.png: mask values \[34\] are not in datasets\.cityscapes\.layout\.value_map"):
        prepare(cfg, tmp_path / "data.zarr")


VOC_PALETTE = [[0, 0, 0], [128, 0, 0], [0, 128, 0]]


def make_voc(root: Path, colour: bool = False) -> None:
    for i in range(14):
        save(rgb(i), root / "JPEGImages" / f"2007_{i:06d}.jpg")
        if i >= 10:
            continue  # images without a mask: unlabeled
        index = np.zeros((40, 48), np.uint8)
        index[5:25, 5:25] = 1 + i % 2
        index[4, 4:26] = 255  # the void border
        if colour:
            pal = np.array(VOC_PALETTE + [[0] * 3] * 252 + [[224, 224, 192]], np.uint8)
            save(pal[index], root / "SegmentationClass" / f"2007_{i:06d}.png")
        else:
            save(index, root / "SegmentationClass" / f"2007_{i:06d}.png", "P", VOC_PALETTE + [[224, 224, 192]] * 253)


@pytest.mark.parametrize("colour", [False, True])
def test_voc_layout_index_and_colour_masks(tmp_path, colour):
    make_voc(tmp_path / "voc", colour)
    changes = {"class_names": ["background", "aeroplane", "bicycle"], "palette": VOC_PALETTE,
               "labeled_fraction": 0.5, "val_fraction": 0.2, "test_fraction": 0.2}
    cfg = example_dataset("voc2012", tmp_path / "voc", **changes)
    if colour:
        cfg["layout"] = dict(cfg["layout"], mask_format="palette", void_colour=[224, 224, 192])
    summary = prepare(cfg, tmp_path / "data.zarr")
    store = read_store(tmp_path / "data.zarr")
    assert summary["images"] == 14 and int((~store["has_mask"][:]).sum()) == 4
    assert set(np.unique(store["masks"][:][store["has_mask"][:]]).tolist()) <= {0, 1, 2, 255}
    assert 255 in np.unique(store["masks"][:][store["has_mask"][:]])


def make_multilabel(root: Path, labels=("alive", "dead", "position"), n: int = 12, value: int = 255) -> None:
    for i in range(n):
        save(rgb(i)[..., 0], root / "images" / f"img{i}.png")  # grayscale
        for k, label in enumerate(labels):
            (root / "masks" / label).mkdir(parents=True, exist_ok=True)
            if k == 2 and i % 3 == 0:
                continue  # this label absent for the image: all zero
            mask = np.zeros((40, 48), np.uint8)
            mask[5 + 3 * k:25, 5:25 + k] = value
            save(mask, root / "masks" / label / f"img{i}.png")
    for i in range(3):
        save(rgb(50 + i)[..., 0], root / "unlabeled" / f"u{i}.png")


def multilabel_cfg(root: Path, **layout) -> dict:
    ds = {"source": "folder", "path": str(root), "task": "multilabel", "class_names": ["alive", "dead", "position"],
          "size": [32, 32], "labeled_fraction": 0.5, "val_fraction": 0.2, "test_fraction": 0.2,
          **({"layout": layout} if layout else {})}
    return imc.validate_config({"datasets": {"ml": ds}, "experiments": {}})["datasets"]["ml"]


def test_multilabel_label_folders_grayscale(tmp_path):
    make_multilabel(tmp_path / "ml")
    prepare(multilabel_cfg(tmp_path / "ml"), tmp_path / "data.zarr")
    store = read_store(tmp_path / "data.zarr")
    assert store["images"].shape[1:] == (32, 32, 1) and store.attrs["channels"] == 1
    assert store["masks"].shape[1:] == (3, 32, 32)
    names = store.attrs["names"]
    img0 = names.index("img0.png")
    assert store["masks"][img0][2].max() == 0 and store["masks"][img0][0].max() == 1  # absent label = 0
    labeled = store["has_mask"][:]
    overlap = (store["masks"][:][labeled][:, 0] == 1) & (store["masks"][:][labeled][:, 1] == 1)
    assert overlap.any()  # labels overlap
    assert (store["masks"][:][~labeled] == 255).all()


def test_multilabel_channels_masks(tmp_path):
    root = tmp_path / "ml"
    for i in range(10):
        save(rgb(i), root / "images" / f"img{i}.png")
        mask = np.zeros((40, 48, 3), np.uint8)
        mask[5:20, 5:20, 0] = 255
        mask[10:30, 10:30, 1] = 255
        mask[12:14, 12:14, 2] = 255
        save(mask, root / "masks" / f"img{i}.png")
    save(rgb(99), root / "unlabeled" / "u.png")
    prepare(multilabel_cfg(root, mask_format="channels"), tmp_path / "data.zarr")
    store = read_store(tmp_path / "data.zarr")
    assert store["images"].shape[-1] == 3 and store["masks"].shape[1] == 3
    first = store["masks"][int(np.flatnonzero(store["has_mask"][:])[0])]
    assert first[0].any() and first[1].any() and (first[0] & first[1]).any()


def test_multilabel_missing_label_folder_is_named(tmp_path):
    make_multilabel(tmp_path / "ml", labels=("alive", "dead"))
    with pytest.raises(InputError, match=r"masks/position: folder not found.*one folder per label"):
        prepare(multilabel_cfg(tmp_path / "ml"), tmp_path / "data.zarr")


def test_multilabel_mask_outside_0_255_is_named(tmp_path):
    make_multilabel(tmp_path / "ml")
    save(np.full((40, 48), 3, np.uint8), tmp_path / "ml" / "masks" / "dead" / "img4.png")
    with pytest.raises(InputError, match=r"dead/img4\.png: values \[3\] in a binary label mask; expected 0"):
        prepare(multilabel_cfg(tmp_path / "ml"), tmp_path / "data.zarr")
    make_multilabel(tmp_path / "ml01", value=1)
    with pytest.raises(InputError, match=r"positive_value: 1"):
        prepare(multilabel_cfg(tmp_path / "ml01"), tmp_path / "data.zarr")
    prepare(multilabel_cfg(tmp_path / "ml01", positive_value=1), tmp_path / "data.zarr")


def test_store_is_the_same_whatever_the_window_and_threads(tmp_path):
    make_cityscapes(tmp_path / "cs")
    cfg = example_dataset("cityscapes", tmp_path / "cs", labeled_fraction=0.5, val_fraction=0.2, test_fraction=0.2,
                          crops_per_image=2, crop_min_side=16, crop_max_side=32)
    prepare(cfg, tmp_path / "a.zarr", threads=1, window=64)
    prepare(cfg, tmp_path / "b.zarr", threads=2, window=2)
    a, b = read_store(tmp_path / "a.zarr"), read_store(tmp_path / "b.zarr")
    for key in ("images", "masks", "split", "has_mask"):
        assert np.array_equal(a[key][:], b[key][:])
    assert a.attrs["names"] == b.attrs["names"] and any("#crop1" in n for n in a.attrs["names"])


def test_demo_cells_are_seeded_grayscale_and_overlapping():
    from im_core.data.synthetic_cells import make_cells
    images, labels = make_cells(6, 48, 3)
    again, _ = make_cells(6, 48, 3)
    assert images.shape == (6, 48, 48, 1) and labels.shape == (6, 3, 48, 48)
    assert np.array_equal(images, again)
    assert ((labels[:, 2] == 1) & ((labels[:, 0] == 1) | (labels[:, 1] == 1))).any()  # positions lie on cells


@pytest.mark.slow
def test_multilabel_cells_through_snakemake_to_gen1(tmp_path):
    config = {
        "datasets": {"cells": {"source": "demo_cells", "n_images": 40, "size": [32, 32], "seed": 1,
                               "labeled_fraction": 0.2, "val_fraction": 0.2, "test_fraction": 0.2}},
        "experiments": {"cells": {"dataset": "cells", "generations": 1, "model": {"alpha": 0.25},
                                  "train": {"batch_size": 8, "steps": 4, "eval_every": 2, "predict_batch_size": 32},
                                  "stage0": {"models": 2}, "students": {"models": 2},
                                  "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2}}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "results/cells/gen1/metrics.csv", "results/cells/gen1/preview.png")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    res = tmp_path / "results" / "cells"
    table = pd.read_csv(res / "gen1" / "metrics.csv")
    assert {"test_iou_alive", "test_iou_dead", "test_iou_position"} <= set(table.columns)
    pseudo = zarr.open_group(str(res / "gen1" / "pseudo.zarr"), mode="r")
    assert pseudo["labels"].shape[1:] == (3, 32, 32) and pseudo["images"].shape[-1] == 1
    im = pseudo["im"][:]
    assert (pseudo["labels"][:][np.broadcast_to(im[:, None], pseudo["labels"].shape)] == 255).all()  # IM: every label ignored
    settings = json.loads((res / "gen1" / "settings.json").read_text())
    assert settings["dataset"] == "cells"
    again = snakemake(tmp_path, "-n", "results/cells/gen1/metrics.csv")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
