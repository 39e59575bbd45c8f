"""Bad input is stopped with a message naming the file or config key and the cause, or handled
in a documented way (README: "What is checked"). Nothing of the user's data is modified."""
import copy
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from im_core.config import load_config_file, resolve_dataset, validate_config
from im_core.data.splits import SPLITS, assign_splits, split_sizes
from im_core.data.store import _crop_boxes, prepare
from im_core.errors import InputError
from im_core.io import open_store

MINIMAL = {"datasets": {"d": {"source": "demo"}}, "experiments": {"e": {"dataset": "d"}}}


def write_folder(root: Path, n: int = 8, size=(16, 16), mask_values=(0, 1, 2), image_suffix: str = ".png",
                 mask_suffix: str = ".png", unlabeled: int = 0) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"img{i}{image_suffix}")
        mask = rng.choice(np.array(mask_values, np.uint8), size)
        Image.fromarray(mask).save(root / "masks" / f"img{i}{mask_suffix}")
    if unlabeled:
        (root / "unlabeled").mkdir()
        for i in range(unlabeled):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "unlabeled" / f"u{i}.png")
    return root


def folder_cfg(path: Path, **extra) -> dict:
    cfg = {"source": "folder", "path": str(path), "class_names": ["bg", "a", "b"], "ignore_index": 255, "seed": 0,
           "labeled_fraction": 0.5, "val_fraction": 0.25, "test_fraction": 0.25, "size": [16, 16]}
    cfg.update(extra)
    return resolve_dataset("mine", cfg)


def config_with(dataset: dict, experiment: dict | None = None) -> dict:
    return {"datasets": {"mine": dataset}, "experiments": {"e": dict({"dataset": "mine"}, **(experiment or {}))}}


# ---------------------------------------------------------------- A: configuration, checked up front

@pytest.mark.parametrize("dataset", [
    {"source": "demo", "size": [40, 40]},
    {"source": "folder", "path": "anywhere", "class_names": ["bg", "fg"], "size": [40, 64]},
    {"source": "suim", "path": "data/SUIM", "size": [40, 64]},
])
def test_size_not_a_multiple_of_16_is_refused_at_config_time(dataset):
    with pytest.raises(InputError, match=r"datasets\.mine\.size: 40x\d+ is not a multiple of 16 .*use e\.g\. \[48, "):
        validate_config(config_with(dataset))


def test_ignore_index_that_is_a_class_is_refused():
    dataset = {"source": "folder", "path": "anywhere", "class_names": ["skin", "lesion"], "ignore_index": 1}
    with pytest.raises(InputError, match=r"datasets\.mine\.ignore_index: 1 is the index of class 'lesion'"):
        validate_config(config_with(dataset))


def test_im_class_index_that_is_the_ignore_index_is_refused():
    dataset = {"source": "folder", "path": "anywhere", "class_names": ["bg", "a", "b"], "ignore_index": 3}
    with pytest.raises(InputError, match=r"experiments\.e\.pseudo_labels\.label_mode: 'im_class' labels IM pixels 3.*"
                                         r"datasets\.mine\.ignore_index"):
        validate_config(config_with(dataset, {"pseudo_labels": {"label_mode": "im_class"}}))


def test_split_lists_are_read_relative_to_the_data_set_folder(tmp_path):
    root = write_folder(tmp_path / "data", n=6)
    (root / "lists").mkdir()
    for split, names in {"labeled": ["img0.png", "img1.png"], "val": ["img2.png"], "test": ["img3.png"],
                         "unlabeled": ["img4.png", "img5"]}.items():
        (root / "lists" / f"{split}.txt").write_text("\n".join(names) + "\n")
    lists = {s: f"lists/{s}.txt" for s in SPLITS}
    validate_config(config_with({"source": "folder", "path": str(root), "class_names": ["bg", "a", "b"],
                                 "split_lists": lists}))  # found at config time too
    prepare(folder_cfg(root, split_lists=lists), tmp_path / "data.zarr")
    store = open_store(tmp_path / "data.zarr")
    by_name = dict(zip(store.attrs["names"], store["split"][:].tolist()))
    assert by_name == {"img0.png": 0, "img1.png": 0, "img2.png": 2, "img3.png": 3, "img4.png": 1, "img5.png": 1}


def test_missing_split_list_says_where_it_looked_at_config_time_and_in_the_data_job(tmp_path):
    root = write_folder(tmp_path / "data", n=6)
    lists = {"labeled": "lab.txt", "val": str(tmp_path / "val.txt"), "test": str(tmp_path / "val.txt")}
    (tmp_path / "val.txt").write_text("img2.png\n")
    expected = rf"{root.resolve() / 'lab.txt'}: split list not found \(datasets\.mine\.split_lists\.labeled: 'lab\.txt'"
    dataset = {"source": "folder", "path": str(root), "class_names": ["bg", "a", "b"], "split_lists": lists}
    with pytest.raises(InputError, match=expected):
        validate_config(config_with(dataset))
    with pytest.raises(InputError, match=expected):
        prepare(folder_cfg(root, split_lists=lists), tmp_path / "data.zarr")


def test_split_lists_on_a_source_without_files_are_refused():
    with pytest.raises(InputError, match=r"datasets\.mine\.split_lists: applies to the folder source only"):
        validate_config(config_with({"source": "suim", "path": "data/SUIM", "split_lists": {"test": "t.txt"}}))


@pytest.mark.parametrize("fractions, split", [
    ({"test_fraction": 0.0}, "test"),
    ({"val_fraction": 0.0}, "val"),
    ({"labeled_fraction": 1.0}, "unlabeled"),
])
def test_split_left_empty_by_the_fractions_is_refused_at_config_time(fractions, split):
    with pytest.raises(InputError, match=rf"datasets\.mine: split '{split}' would be empty \(images per split: "):
        validate_config(config_with(dict({"source": "demo", "n_images": 50}, **fractions)))
    folder = dict({"source": "folder", "path": "anywhere", "class_names": ["bg", "fg"]}, **fractions)
    with pytest.raises(InputError, match=rf"datasets\.mine: split '{split}' would be empty \(whatever the number of "
                                         rf"images: .*{list(fractions)[0]} "):
        validate_config(config_with(folder))


def test_demo_split_sizes_are_known_exactly_at_config_time():
    # 12 images: test round(0.2 * 12) = 2, val round(0.1 * 12) = 1, labeled max(1, round(0.1 * 9)) = 1
    assert split_sizes(12, {"test_fraction": 0.2, "val_fraction": 0.1, "labeled_fraction": 0.1}) == \
        {"labeled": 1, "unlabeled": 8, "val": 1, "test": 2}
    with pytest.raises(InputError, match=r"split 'val' would be empty \(images per split: labeled 1, unlabeled 7, "
                                         r"val 0, test 2\); raise datasets\.mine\.val_fraction"):
        validate_config(config_with({"source": "demo", "n_images": 10, "val_fraction": 0.04}))


def test_assign_splits_refuses_an_empty_test_or_unlabeled_split_and_names_the_counts():
    cfg = {"name": "mine", "seed": 0, "labeled_fraction": 0.5, "val_fraction": 0.25, "test_fraction": 0.1}
    with pytest.raises(InputError, match=r"datasets\.mine: split 'test' would be empty \(images per split: labeled 2, "
                                         r"unlabeled 1, val 1, test 0\); raise datasets\.mine\.test_fraction"):
        assign_splits([None] * 4, cfg)
    with pytest.raises(InputError, match=r"split 'unlabeled' would be empty .*lower datasets\.mine\.labeled_fraction"):
        assign_splits([None] * 8, dict(cfg, labeled_fraction=0.9, test_fraction=0.25))
    # every image labeled on purpose (labeled_fraction 1, as bench/demo_gap.py's FDT store): allowed here,
    # refused by the config check (every experiment predicts the unlabeled split)
    splits = assign_splits([None] * 8, dict(cfg, labeled_fraction=1.0, test_fraction=0.25))
    assert set(splits) == {"labeled", "val", "test"}


def test_split_lists_without_a_test_list_leave_test_empty(tmp_path):
    root = write_folder(tmp_path / "data", n=6, unlabeled=1)
    for split in ("labeled", "val"):
        (root / f"{split}.txt").write_text("img0.png\n" if split == "labeled" else "img1.png\n")
    dataset = {"source": "folder", "path": str(root), "class_names": ["bg", "a", "b"],
               "split_lists": {"labeled": "labeled.txt", "val": "val.txt"}}
    with pytest.raises(InputError, match=r"datasets\.mine\.split_lists: no 'test' list, so split 'test' would be empty"):
        validate_config(config_with(dataset))
    with pytest.raises(InputError, match=r"split 'test' would be empty \(images per split: labeled 1, unlabeled 1, "
                                         r"val 1, test 0\)"):
        prepare(folder_cfg(root, split_lists=dataset["split_lists"]), tmp_path / "data.zarr")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("datasets:\n  demo: {source: demo}\nexperiments:\n  demo: {dataset: demo\n  other: 1\n")
    with pytest.raises(InputError, match=rf"{path}:5:\d+: YAML syntax error: .*expected ',' or '}}'"):
        load_config_file(path)
    path.write_text("- a list\n")
    with pytest.raises(InputError, match=rf"{path}: the top level must be a mapping"):
        load_config_file(path)
    path.write_text("datasets: {d: {source: demo}}\nexperiments: {e: {dataset: d}}\n")
    assert validate_config(load_config_file(path))["experiments"]["e"]["dataset"] == "d"


def test_students_on_all_labels_and_pseudo_labels_are_refused():
    bad = copy.deepcopy(MINIMAL)
    bad["experiments"]["e"]["students"] = {"labels": "all"}
    with pytest.raises(InputError, match=r"experiments\.e: students\.labels 'all' .* with pseudo_labels\.builder 'im' "
                                         r"from generation 1: the students would train on the ground truth and on "
                                         r"pseudo-labels of the same unlabeled images"):
        validate_config(bad)
    late = copy.deepcopy(MINIMAL)
    late["experiments"]["e"]["overrides"] = [{"from_generation": 2, "students": {"labels": "all"}}]
    with pytest.raises(InputError, match=r"from generation 2"):
        validate_config(late)
    # an override past the last generation never runs; no pseudo-labels (consistency) is no leak
    late["experiments"]["e"]["generations"] = 1
    validate_config(late)
    fine = copy.deepcopy(MINIMAL)
    fine["experiments"]["e"].update(students={"labels": "all", "trainer": "consistency"}, pseudo_labels={"builder": "none"})
    validate_config(fine)
    teachers_on_all = copy.deepcopy(MINIMAL)
    teachers_on_all["experiments"]["e"]["stage0"] = {"labels": "all"}
    with pytest.raises(InputError, match=r"experiments\.e: stage0\.labels 'all' .* self-training generation"):
        validate_config(teachers_on_all)
    teachers_on_all["experiments"]["e"]["generations"] = 0  # FDT itself
    validate_config(teachers_on_all)


def test_fdt_still_validates_in_a_comparison():
    cfg = copy.deepcopy(MINIMAL)
    cfg["experiments"]["e"].update(stage0={"models": 3}, students={"models": 3}, selection={"top_k": 2},
                                   pseudo_labels={"teachers": 2})
    cfg["comparisons"] = {"d": {"base": "e", "methods": ["fdt", "im"]}}
    exps = validate_config(cfg)["experiments"]
    assert exps["d/compare/fdt/seed0"]["stage0"]["labels"] == "all" and exps["d/compare/fdt/seed0"]["generations"] == 0


# ---------------------------------------------------------------- B: data preparation

def binary_cfg(root: Path, **extra) -> dict:
    return folder_cfg(root, class_names=["bg", "fg"], task="binary", **extra)


def test_binary_masks_stored_as_0_255_are_refused_with_the_option_named(tmp_path):
    root = write_folder(tmp_path / "data", n=8, mask_values=(0, 255))
    with pytest.raises(InputError, match=r"masks/img0\.png: the masks hold 0 and 255 but no 1 \(8 of 8 masks contain "
                                         r"255\).*every foreground pixel would be lost.*datasets\.mine\.binary_255: true"):
        prepare(binary_cfg(root), tmp_path / "data.zarr")
    assert not (tmp_path / "data.zarr").exists()


def test_binary_255_option_reads_255_as_class_1(tmp_path):
    root = write_folder(tmp_path / "data", n=8, mask_values=(0, 255))
    prepare(binary_cfg(root, binary_255=True), tmp_path / "data.zarr")
    store = open_store(tmp_path / "data.zarr")
    i = store.attrs["names"].index("img3.png")
    original = np.asarray(Image.open(root / "masks" / "img3.png"))
    assert (store["masks"][i] == (original == 255)).all()
    assert set(np.unique(np.asarray(Image.open(root / "masks" / "img3.png"))).tolist()) == {0, 255}  # file untouched


def test_binary_255_option_needs_two_classes_and_the_folder_source():
    with pytest.raises(InputError, match=r"datasets\.mine\.binary_255: maps mask value 255 to class 1 of a 2-class "
                                         r"data set; this one has 3 classes"):
        validate_config(config_with({"source": "folder", "path": "x", "class_names": ["a", "b", "c"], "binary_255": True}))
    with pytest.raises(InputError, match=r"datasets\.mine\.binary_255: applies to the folder source only"):
        validate_config(config_with({"source": "demo", "binary_255": True}))


def test_0_255_masks_with_another_ignore_index_point_to_the_option(tmp_path):
    root = write_folder(tmp_path / "data", n=4, mask_values=(0, 255))
    with pytest.raises(InputError, match=r"mask values \[255\] are outside the 2 classes .*binary_255: true"):
        prepare(binary_cfg(root, ignore_index=254), tmp_path / "data.zarr")


def test_some_masks_with_255_and_no_foreground_are_warned_about(tmp_path, caplog):
    root = write_folder(tmp_path / "data", n=8, mask_values=(0, 1))
    Image.fromarray(np.array([[0, 255] * 8] * 16, np.uint8)).save(root / "masks" / "img5.png")
    with caplog.at_level(logging.WARNING, logger="im_core.sources"):
        prepare(binary_cfg(root), tmp_path / "data.zarr")
    assert re.search(r"1 masks contain 255 .* but no class 1 .*img5\.png", caplog.text)


def test_every_pillow_image_format_is_read(tmp_path):
    root = write_folder(tmp_path / "data", n=8, image_suffix=".webp")
    Image.open(root / "images" / "img1.webp").convert("RGB").save(root / "images" / "img1.tga")
    (root / "images" / "img1.webp").unlink()
    prepare(folder_cfg(root), tmp_path / "data.zarr")
    names = open_store(tmp_path / "data.zarr").attrs["names"]
    assert "img0.webp" in names and "img1.tga" in names and len(names) == 8


@pytest.mark.parametrize("suffix, save, message", [
    (".jpg", {}, r"img0\.jpg: mask stored as JPEG, whose compression changes pixel values"),
    (".webp", {"lossless": False}, r"img0\.webp: mask stored as WEBP \(lossy\)"),
])
def test_lossy_mask_is_refused(tmp_path, suffix, save, message):
    root = write_folder(tmp_path / "data", n=4)
    Image.open(root / "masks" / "img0.png").save(root / "masks" / f"img0{suffix}", **save)
    (root / "masks" / "img0.png").unlink()
    with pytest.raises(InputError, match=message + r".*save the masks losslessly \(PNG\)"):
        prepare(folder_cfg(root), tmp_path / "data.zarr")


def test_files_that_are_not_images_are_skipped_with_a_warning(tmp_path, caplog):
    root = write_folder(tmp_path / "data", n=8)
    (root / "images" / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="im_core.sources"):
        prepare(folder_cfg(root), tmp_path / "data.zarr")
    assert "skipped 1 entries" in caplog.text and "notes.txt" in caplog.text


def test_two_images_with_one_stem_are_named(tmp_path):
    root = write_folder(tmp_path / "data", n=4)
    Image.open(root / "images" / "img2.png").save(root / "images" / "img2.jpg")
    with pytest.raises(InputError, match=r"images/img2\.jpg and .*images/img2\.png: two images with the name stem 'img2'"):
        prepare(folder_cfg(root), tmp_path / "data.zarr")


def test_two_masks_with_one_stem_are_named(tmp_path):
    root = write_folder(tmp_path / "data", n=4)
    Image.open(root / "masks" / "img1.png").save(root / "masks" / "img1.bmp")
    with pytest.raises(InputError, match=r"masks/img1\.bmp and .*masks/img1\.png: two masks with the name stem 'img1'"):
        prepare(folder_cfg(root), tmp_path / "data.zarr")


def test_mask_without_image_is_named(tmp_path):
    root = write_folder(tmp_path / "data", n=4)
    (root / "images" / "img3.png").unlink()
    with pytest.raises(InputError, match=r"masks/img3\.png: no image with this name stem in .*images; add the image "
                                         r".* or remove the mask \(1 masks without an image: img3\.png\)"):
        prepare(folder_cfg(root), tmp_path / "data.zarr")


def test_same_name_in_images_and_unlabeled_is_named(tmp_path):
    root = write_folder(tmp_path / "data", n=4, unlabeled=1)
    Image.open(root / "images" / "img0.png").save(root / "unlabeled" / "img0.png")
    with pytest.raises(InputError, match=r"images/img0\.png and .*unlabeled/img0\.png: the same image name in images/ "
                                         r"and unlabeled/"):
        prepare(folder_cfg(root), tmp_path / "data.zarr")


def test_image_in_two_split_lists_names_both_lists_and_lines(tmp_path):
    root = write_folder(tmp_path / "data", n=6)
    (root / "lab.txt").write_text("img0.png\nimg1.png\n")
    (root / "val.txt").write_text("img2.png\n")
    (root / "test.txt").write_text("img3.png\n\nimg1\n")
    lists = {"labeled": "lab.txt", "val": "val.txt", "test": "test.txt"}
    with pytest.raises(InputError, match=r"test\.txt:3: 'img1' is also listed in .*lab\.txt:2 \(split 'labeled'\)"):
        prepare(folder_cfg(root, split_lists=lists), tmp_path / "data.zarr")


def test_much_enlarged_images_are_warned_about_once(tmp_path, caplog):
    root = write_folder(tmp_path / "data", n=8, size=(12, 16))
    with caplog.at_level(logging.WARNING, logger="im_core.data"):
        prepare(folder_cfg(root, size=[64, 64]), tmp_path / "data.zarr")  # 64 / 12 = 5.3x
    warnings = [r for r in caplog.records if "enlarged" in r.getMessage()]
    assert len(warnings) == 1
    assert re.search(r"datasets\.mine: 8 images \(or crops\) are enlarged more than 4x .*img0\.png \(5\.3x\).* and 3 more",
                     warnings[0].getMessage())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="im_core.data"):
        prepare(folder_cfg(root, size=[48, 48]), tmp_path / "data2.zarr")  # 4x: no warning
    assert "enlarged" not in caplog.text


def test_only_training_splits_are_cropped_validation_and_test_are_whole(tmp_path):
    root = write_folder(tmp_path / "data", n=8, size=(48, 64))
    prepare(folder_cfg(root, crops_per_image=2, crop_min_side=16, crop_max_side=32), tmp_path / "data.zarr")
    store = open_store(tmp_path / "data.zarr")
    names, split = store.attrs["names"], store["split"][:]
    for name, code in zip(names, split):
        whole = "#crop" not in name
        assert whole == (SPLITS[code] in ("val", "test")), (name, SPLITS[code])
    i = next(k for k, c in enumerate(split) if SPLITS[c] == "test")
    source = np.asarray(Image.open(root / "images" / names[i]).convert("RGB").resize((16, 16), Image.BILINEAR))
    assert (store["images"][i] == source).all()  # the whole image, resized


def test_crop_sides_lie_between_min_and_max_bounded_by_the_short_side():
    rng = np.random.default_rng(0)
    sides = [s for _, _, s in _crop_boxes(rng, 600, 800, 200, 256, 512)]
    assert min(sides) >= 256 and max(sides) <= 512 and max(sides) > 480  # 256-512, as the SUIM authors
    boxes = _crop_boxes(rng, 300, 800, 200, 256, 512)
    assert all(256 <= s <= 300 and t + s <= 300 and l + s <= 800 for t, l, s in boxes)  # bounded by the short side
    assert all(s == 100 for _, _, s in _crop_boxes(rng, 100, 400, 20, 256, 512))  # shorter than crop_min_side


def test_crop_min_side_above_crop_max_side_is_refused():
    with pytest.raises(InputError, match=r"datasets\.mine\.crop_min_side: 600 is larger than crop_max_side 512"):
        validate_config(config_with({"source": "suim", "path": "x", "crops_per_image": 2, "crop_min_side": 600}))

