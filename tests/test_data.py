import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from im_core.config import resolve_dataset
from im_core.data.read import read_split, training_arrays
from im_core.data.splits import SPLITS
from im_core.data.store import prepare
from im_core.data.images import nearest_palette_index
from im_core.data.suim import SUIM_PALETTE
from im_core.errors import InputError
from im_core.io import chunk_shape, open_store


def _folder_cfg(path, **extra):
    cfg = {"source": "folder", "path": str(path), "class_names": ["bg", "a", "b"], "ignore_index": 255,
           "seed": 0, "labeled_fraction": 0.5, "val_fraction": 0.25, "test_fraction": 0.25, "size": [16, 16]}
    cfg.update(extra)
    return resolve_dataset("mine", cfg)


def make_folder(root: Path, n=8, size=(16, 16), unlabeled=0):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"img{i}.png")
        Image.fromarray(rng.integers(0, 3, size, dtype=np.uint8)).save(root / "masks" / f"img{i}.png")
    if unlabeled:
        (root / "unlabeled").mkdir()
        for i in range(unlabeled):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "unlabeled" / f"u{i}.jpg")
    return root


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_folder_source_builds_store_with_splits_and_unlabeled_images(tmp_path):
    root = make_folder(tmp_path / "data", n=8, unlabeled=3)
    before = _tree_digest(root)
    summary = prepare(_folder_cfg(root), tmp_path / "data.zarr")
    store = open_store(tmp_path / "data.zarr")
    assert store["images"].shape == (11, 16, 16, 3) and store["images"].dtype == np.uint8
    assert store["masks"].shape == (11, 16, 16)
    assert summary["splits"]["unlabeled"] >= 3 and sum(summary["splits"].values()) == 11
    assert store.attrs["class_names"] == ["bg", "a", "b"] and len(store.attrs["palette"]) == 3
    # images from unlabeled/ have no mask: all ignore, flagged, and in the unlabeled split
    names = store.attrs["names"]
    u = [i for i, n in enumerate(names) if n.startswith("u")]
    assert not store["has_mask"][:][u].any()
    assert (store["split"][:][u] == SPLITS.index("unlabeled")).all()
    assert (store["masks"][:][u] == 255).all()
    # the masks round-trip for a labeled image
    i = names.index("img0.png")
    assert (store["masks"][i] == np.asarray(Image.open(root / "masks" / "img0.png"))).all()
    assert _tree_digest(root) == before  # nothing of the user's data changed


def test_chunks_hold_whole_samples_within_the_byte_limit():
    assert chunk_shape((1000, 32, 32, 3), 1) == (64, 32, 32, 3)
    assert chunk_shape((10, 32, 32), 1) == (10, 32, 32)
    assert chunk_shape((10_000, 256, 256, 3), 1) == (16, 256, 256, 3)  # 3 MiB
    assert chunk_shape((10_000, 256, 256), 1) == (64, 256, 256)  # 4 MiB
    assert chunk_shape((3, 4096, 4096, 3), 1) == (1, 4096, 4096, 3)
    assert chunk_shape((100_000,), 8) == (65536,)
    # the blocks that prediction (512) and pseudo-label building (256) write stay chunk-aligned
    for shape in [(1000, 32, 32, 3), (1000, 7, 300, 300), (1000, 1024, 1024, 3)]:
        assert 256 % chunk_shape(shape, 1)[0] == 0


def test_store_written_in_windows_across_chunks_reads_back_whole(tmp_path):
    root = make_folder(tmp_path / "data", n=8, unlabeled=3)
    prepare(_folder_cfg(root), tmp_path / "whole.zarr")
    prepare(_folder_cfg(root), tmp_path / "windows.zarr", window=3)  # 11 images, one chunk, four writes
    whole, windows = open_store(tmp_path / "whole.zarr"), open_store(tmp_path / "windows.zarr")
    assert whole["images"].chunks == (11, 16, 16, 3)
    for name in ("images", "masks", "split", "has_mask"):
        assert (whole[name][:] == windows[name][:]).all()


def test_training_sees_only_the_labeled_split(tmp_path):
    root = make_folder(tmp_path / "data", n=8)
    prepare(_folder_cfg(root), tmp_path / "data.zarr")
    store = open_store(tmp_path / "data.zarr")
    labeled = training_arrays(store)
    assert (store["split"][:][labeled.index] == SPLITS.index("labeled")).all()
    assert len(labeled.index) == len(read_split(store, "labeled").index)


def test_fixed_split_lists(tmp_path):
    root = make_folder(tmp_path / "data", n=6)
    lists = {}
    for split, names in {"labeled": ["img0.png", "img1.png"], "val": ["img2.png"], "test": ["img3", "img4.png"],
                         "unlabeled": ["img5.png"]}.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(names) + "\n")
        lists[split] = str(tmp_path / f"{split}.txt")
    prepare(_folder_cfg(root, split_lists=lists), tmp_path / "data.zarr")
    store = open_store(tmp_path / "data.zarr")
    by_name = dict(zip(store.attrs["names"], store["split"][:]))
    assert by_name == {"img0.png": 0, "img1.png": 0, "img2.png": 2, "img3.png": 3, "img4.png": 3, "img5.png": 1}


def test_resize_uses_nearest_for_masks(tmp_path):
    root = make_folder(tmp_path / "data", n=4, size=(20, 24))
    prepare(_folder_cfg(root, size=[32, 32]), tmp_path / "data.zarr")
    masks = open_store(tmp_path / "data.zarr")["masks"][:]
    assert masks.shape == (4, 32, 32) and set(np.unique(masks)) <= {0, 1, 2}


def test_missing_folder_names_the_key(tmp_path):
    with pytest.raises(InputError, match=r"nowhere.*datasets\.mine\.path"):
        prepare(_folder_cfg(tmp_path / "nowhere"), tmp_path / "data.zarr")
    assert not (tmp_path / "data.zarr").exists()


def test_mask_size_mismatch_names_the_file(tmp_path):
    root = make_folder(tmp_path / "data", n=4)
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(root / "masks" / "img2.png")
    with pytest.raises(InputError, match=r"img2\.png: mask is 16x8 but its image is 16x16"):
        prepare(_folder_cfg(root), tmp_path / "data.zarr")


def test_mask_value_outside_classes_names_the_file_and_values(tmp_path):
    root = make_folder(tmp_path / "data", n=4)
    bad = np.zeros((16, 16), np.uint8)
    bad[0, 0] = 7
    Image.fromarray(bad).save(root / "masks" / "img1.png")
    with pytest.raises(InputError, match=r"img1\.png: mask values \[7\] are outside the 3 classes"):
        prepare(_folder_cfg(root), tmp_path / "data.zarr")


def test_ignore_index_is_allowed_in_masks(tmp_path):
    root = make_folder(tmp_path / "data", n=4)
    m = np.zeros((16, 16), np.uint8)
    m[:4] = 255
    m[8:, 8:] = 2
    Image.fromarray(m).save(root / "masks" / "img1.png")
    prepare(_folder_cfg(root), tmp_path / "data.zarr")
    store = open_store(tmp_path / "data.zarr")
    stored = store["masks"][store.attrs["names"].index("img1.png")]
    assert (stored == m).all()  # kept as the ignore index (and the classes as they were), not an error


def test_unreadable_image_names_the_file(tmp_path):
    root = make_folder(tmp_path / "data", n=4)
    (root / "images" / "img3.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"img3\.png: cannot read this image"):
        prepare(_folder_cfg(root), tmp_path / "data.zarr")


def test_rgb_mask_is_rejected_with_advice(tmp_path):
    root = make_folder(tmp_path / "data", n=4)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "masks" / "img0.png")
    with pytest.raises(InputError, match=r"img0\.png: mask has mode RGB; expected a single-channel class-index PNG"):
        prepare(_folder_cfg(root), tmp_path / "data.zarr")


def test_image_without_mask_in_images_folder(tmp_path):
    root = make_folder(tmp_path / "data", n=4)
    (root / "masks" / "img0.png").unlink()
    with pytest.raises(InputError, match=r"img0\.png: no mask with this name"):
        prepare(_folder_cfg(root), tmp_path / "data.zarr")


def test_size_not_multiple_of_16(tmp_path):
    root = make_folder(tmp_path / "data", n=4)
    with pytest.raises(InputError, match=r"size: 20x16 is not a multiple of 16"):
        prepare(_folder_cfg(root, size=[20, 16]), tmp_path / "data.zarr")


def test_suim_colour_mapping_including_off_palette_pixels():
    rgb = np.array([[[0, 0, 0], [0, 0, 255], [0, 255, 0], [0, 255, 255]],
                    [[255, 0, 0], [255, 0, 255], [255, 255, 0], [255, 255, 255]],
                    # off-palette: JPEG-like noise near a palette colour, and a grey in between
                    [[12, 5, 240], [250, 240, 20], [200, 30, 190], [100, 100, 100]]], np.uint8)
    idx = nearest_palette_index(rgb, SUIM_PALETTE)
    assert idx[0].tolist() == [0, 1, 2, 3]
    assert idx[1].tolist() == [4, 5, 6, 7]
    assert idx[2].tolist() == [1, 6, 5, 0]  # (100,100,100) is closer to black than to white


def test_suim_missing_folder_says_where_to_get_it(tmp_path):
    cfg = resolve_dataset("suim", {"source": "suim", "path": str(tmp_path / "SUIM"), "ignore_index": 255, "seed": 42,
                                   "labeled_fraction": 0.1, "val_fraction": 0.1, "test_fraction": 0.2})
    with pytest.raises(InputError, match=r"SUIM not found.*Download SUIM from https://.*train_val/images"):
        prepare(cfg, tmp_path / "data.zarr")


def test_suim_layout_is_read_and_colour_masks_mapped(tmp_path):
    root = tmp_path / "SUIM"
    for part in ("train_val", "TEST"):
        (root / part / "images").mkdir(parents=True)
        (root / part / "masks").mkdir(parents=True)
        for i in range(6 if part == "train_val" else 2):
            Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(root / part / "images" / f"f{i}.jpg")
            mask = np.zeros((40, 48, 3), np.uint8)
            mask[:, 24:] = (255, 255, 0)  # fish
            Image.fromarray(mask).save(root / part / "masks" / f"f{i}.bmp")
    cfg = resolve_dataset("suim", {"source": "suim", "path": str(root), "ignore_index": 255, "seed": 42, "size": [32, 32],
                                   "labeled_fraction": 0.5, "val_fraction": 0.2, "test_fraction": 0.2})
    summary = prepare(cfg, tmp_path / "data.zarr")
    assert summary["splits"]["test"] == 2  # the official TEST folder is the test split
    masks = open_store(tmp_path / "data.zarr")["masks"][:]
    assert set(np.unique(masks)) == {0, 6}


def test_demo_source_is_seeded(tmp_path):
    cfg = resolve_dataset("demo", {"source": "demo", "n_images": 20, "size": [32, 32], "seed": 3, "ignore_index": 255,
                                   "labeled_fraction": 0.1, "val_fraction": 0.2, "test_fraction": 0.2})
    prepare(cfg, tmp_path / "a.zarr")
    prepare(cfg, tmp_path / "b.zarr")
    a, b = open_store(tmp_path / "a.zarr"), open_store(tmp_path / "b.zarr")
    assert (a["images"][:] == b["images"][:]).all() and (a["split"][:] == b["split"][:]).all()
    assert len(np.unique(a["masks"][:])) >= 5


def test_suim_crops_only_the_training_splits(tmp_path):
    root = tmp_path / "SUIM"
    for part, count in (("train_val", 10), ("TEST", 2)):
        (root / part / "images").mkdir(parents=True)
        (root / part / "masks").mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(root / part / "images" / f"f{i}.jpg")
            Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / part / "masks" / f"f{i}.bmp")
    cfg = resolve_dataset("suim", {"source": "suim", "path": str(root), "ignore_index": 255, "seed": 42, "size": [32, 32],
                                   "labeled_fraction": 0.5, "val_fraction": 0.2, "test_fraction": 0.2,
                                   "crops_per_image": 2, "crop_min_side": 32, "crop_max_side": 40})
    summary = prepare(cfg, tmp_path / "data.zarr")
    # 10 train_val images: 2 val (whole), 4 labeled + 4 unlabeled (2 crops each); 2 TEST images whole
    assert summary["splits"] == {"labeled": 8, "unlabeled": 8, "val": 2, "test": 2}
    store = open_store(tmp_path / "data.zarr")
    crops = {SPLITS[c]: [] for c in set(store["split"][:].tolist())}
    for name, code in zip(store.attrs["names"], store["split"][:]):
        crops[SPLITS[code]].append("#crop" in name)
    assert all(crops["labeled"]) and all(crops["unlabeled"]) and not any(crops["val"]) and not any(crops["test"])
