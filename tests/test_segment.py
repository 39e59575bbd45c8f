"""`im-core segment`: a trained model applied to a folder of new images."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from im_core.steps import segment
from im_core.errors import InputError
from im_core.models import build_model

REPO = Path(__file__).resolve().parents[1]
PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25]]


def make_checkpoint(path, task="multiclass", classes=3, in_channels=3, extra_im_class=False, size=(16, 32),
                    model_id="gen1_m0", **extra):
    out = {"multiclass": classes + int(extra_im_class), "binary": 1, "multilabel": classes}[task]
    torch.manual_seed(0)
    model_args = {"in_channels": in_channels, "out_channels": out, "alpha": 0.25, "dropout": 0.0}
    ckpt = {"state_dict": build_model(**model_args).state_dict(), "model_args": model_args, "task": task,
            "class_names": [f"class {i}" for i in range(classes)], "palette": PALETTE[:classes], "size": list(size),
            "ignore_index": 255, "model_id": model_id, "generation": 1,
            "settings": {"precision": "fp32", "channels_last": False}, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def make_images(folder, shapes, mode="RGB"):
    rng = np.random.default_rng(0)
    for name, (h, w) in shapes.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return folder


SHAPES = {"a.png": (20, 30), "b.jpg": (17, 9), "sub/c.png": (40, 64)}


def test_segmenting_keeps_names_sizes_and_classes(tmp_path):
    images = make_images(tmp_path / "in", SHAPES)
    (images / ".hidden.png").write_bytes((images / "a.png").read_bytes())
    (images / "notes.txt").write_text("not an image")
    ckpt = make_checkpoint(tmp_path / "m.pt", extra_im_class=True)
    result = segment.run(str(images), str(tmp_path / "out"), str(ckpt), batch_size=2)
    assert result["images"] == 3
    for name, shape in SHAPES.items():
        mask = Image.open(tmp_path / "out" / "masks" / name.replace(".jpg", ".png"))
        assert mask.mode == "P" and (mask.height, mask.width) == shape
        assert np.asarray(mask).max() < 3  # never the extra IM channel
        preview = Image.open(tmp_path / "out" / "previews" / name.replace(".jpg", ".png"))
        assert preview.mode == "RGB" and (preview.height, preview.width) == shape
    assert not (tmp_path / "out" / "masks" / ".hidden.png").exists()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == 3 and summary["model_id"] == "gen1_m0"
    assert summary["classes"] == ["class 0", "class 1", "class 2"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial output left


def test_labels_are_taken_at_the_image_size():
    probs = torch.zeros(2, 2, 2)
    probs[1, :, 1] = 1.0  # right column: class 1
    probs[0, :, 0] = 1.0
    labels = segment.labels_at(probs, (4, 8), "multiclass", 2)
    assert labels.shape == (4, 8) and labels[:, 0].max() == 0 and labels[:, -1].min() == 1
    assert segment.labels_at(torch.full((1, 2, 2), 0.7), (3, 3), "binary", 2).tolist() == [[1] * 3] * 3


def test_grayscale_model_on_grayscale_images(tmp_path):
    images = make_images(tmp_path / "in", {"x.png": (24, 24), "y.tif": (10, 50)}, mode="L")
    ckpt = make_checkpoint(tmp_path / "m.pt", task="binary", classes=2, in_channels=1)
    segment.run(str(images), str(tmp_path / "out"), str(ckpt))
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "y.png"))
    assert mask.shape == (10, 50) and set(np.unique(mask)) <= {0, 1}
    assert segment.read_input(images / "x.png", 1).shape == (24, 24, 1)
    assert segment.read_input(images / "x.png", 3).shape == (24, 24, 3)


def test_multilabel_writes_one_mask_per_label(tmp_path):
    images = make_images(tmp_path / "in", {"a.png": (20, 30), "s/b.png": (16, 16)})
    ckpt = make_checkpoint(tmp_path / "m.pt", task="multilabel", classes=3)
    segment.run(str(images), str(tmp_path / "out"), str(ckpt))
    for label in ("class_0", "class_1", "class_2"):
        mask = np.asarray(Image.open(tmp_path / "out" / "masks" / label / "s" / "b.png"))
        assert mask.shape == (16, 16) and set(np.unique(mask)) <= {0, 255}
    assert (tmp_path / "out" / "previews" / "a.png").exists()
    assert not (tmp_path / "out" / "masks" / "a.png").exists()


def test_blend_of_overlapping_labels_averages_their_colours():
    image = np.zeros((1, 2, 3), np.uint8)
    labels = np.array([[[1, 0]], [[1, 0]]], np.uint8)  # 2 labels on pixel 0, none on pixel 1
    out = segment.blend(image, labels, [[200, 0, 0], [0, 200, 0]], opacity=1.0)
    assert out[0, 0].tolist() == [100, 100, 0] and out[0, 1].tolist() == [0, 0, 0]


def test_old_checkpoint_needs_the_data_store(tmp_path):
    from conftest import make_demo_store

    ckpt = make_checkpoint(tmp_path / "m.pt")
    old = torch.load(ckpt, weights_only=True)
    del old["palette"], old["size"]
    facts = segment.model_facts(old, ckpt, make_demo_store(tmp_path / "data.zarr", n_images=10))
    assert facts["size"] == (16, 16) and len(facts["palette"]) >= 3
    with pytest.raises(InputError, match="m.pt.*pass --data"):
        segment.model_facts(old, ckpt)


def test_checkpoint_for_picks_rank_1_and_names_a_missing_generation(tmp_path):
    gen = tmp_path / "results" / "demo" / "gen2"
    for i in range(3):
        make_checkpoint(gen / "models" / f"m{i}" / "model.pt", model_id=f"gen2_m{i}")
    (gen / "selection.json").write_text(json.dumps({"ranking": ["gen2_m2", "gen2_m0", "gen2_m1"],
                                                    "best_so_far": {"model_id": "gen1_m1", "generation": 1}}))
    assert segment.checkpoint_for(tmp_path / "results", "demo", 2) == gen / "models" / "m2" / "model.pt"
    assert segment.checkpoint_for(tmp_path / "results", "demo", 2, rank=2) == gen / "models" / "m0" / "model.pt"
    with pytest.raises(InputError, match=r"generation 3 of experiment 'demo' has not been run.*\[2\].*gen3/metrics.csv"):
        segment.checkpoint_for(tmp_path / "results", "demo", 3)
    with pytest.raises(InputError, match="experiment 'other' has no results"):
        segment.checkpoint_for(tmp_path / "results", "other", 0)
    with pytest.raises(InputError, match="ranks 3 models"):
        segment.checkpoint_for(tmp_path / "results", "demo", 2, rank=4)


def test_output_inside_the_input_is_refused(tmp_path):
    images = make_images(tmp_path / "in", {"a.png": (16, 16)})
    ckpt = make_checkpoint(tmp_path / "m.pt")
    for out in (images, images / "seg", tmp_path):
        with pytest.raises(InputError, match="--out"):
            segment.run(str(images), str(out), str(ckpt))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("someone's file")
    with pytest.raises(InputError, match="holds files that `im-core segment` did not write \\(keep.txt\\)"):
        segment.run(str(images), str(tmp_path / "other"), str(ckpt))
    assert sorted(p.name for p in images.iterdir()) == ["a.png"]


def test_two_inputs_with_one_output_name_are_an_error(tmp_path):
    with pytest.raises(InputError, match="both would be written as a.png"):
        segment.output_names([Path("a.jpg"), Path("a.png")])


def test_cli_end_to_end(tmp_path):
    images = make_images(tmp_path / "in", {"a.png": (20, 30), "d/b.png": (33, 18)})
    gen = tmp_path / "results" / "demo" / "gen3"
    for i in range(2):
        make_checkpoint(gen / "models" / f"m{i}" / "model.pt", model_id=f"gen3_m{i}")
    (gen / "selection.json").write_text(json.dumps({"ranking": ["gen3_m1", "gen3_m0"]}))
    base = [sys.executable, "-m", "im_core.cli", "segment", "--images", str(images), "--out", str(tmp_path / "seg"),
            "--results", str(tmp_path / "results"), "--experiment", "demo"]
    done = subprocess.run(base + ["--generation", "3", "--batch-size", "1"], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "seg" / "summary.json").read_text())["model_id"] == "gen3_m1"
    assert Image.open(tmp_path / "seg" / "masks" / "d" / "b.png").size == (18, 33)
    done = subprocess.run(base + ["--generation", "4"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2 and "has not been run" in done.stderr and "Traceback" not in done.stderr


def test_config_check_names_a_segment_entry_without_its_experiment_or_generation():
    from im_core import config as imc
    base = {"datasets": {"d": {"source": "demo"}}, "experiments": {"e": {"dataset": "d", "generations": 2}}}
    with pytest.raises(InputError, match=r"segment\.new\.experiment: 'nope' is not an experiment"):
        imc.validate_config({**base, "segment": {"new": {"experiment": "nope", "generation": 1, "images": "x"}}})
    with pytest.raises(InputError, match=r"segment\.new\.generation: 3 is beyond experiments\.e\.generations \(2\)"):
        imc.validate_config({**base, "segment": {"new": {"experiment": "e", "generation": 3, "images": "x"}}})


def test_a_rerun_never_replaces_or_deletes_what_segment_did_not_write(tmp_path):
    images = make_images(tmp_path / "in", {"a.png": (16, 16), "b.png": (16, 16)})
    ckpt = make_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "out"
    segment.run(str(images), str(out), str(ckpt))
    (out / "notes.txt").write_text("what I saw")                       # a person's files in the folder
    (out / "masks" / "a_corrected.png").write_bytes(b"my mask")
    (images / "b.png").unlink()                                        # an input gone: its old outputs go too
    make_images(images, {"c.png": (16, 16)})
    segment.run(str(images), str(out), str(ckpt))
    assert (out / "notes.txt").read_text() == "what I saw" and (out / "masks" / "a_corrected.png").read_bytes() == b"my mask"
    assert (out / "masks" / "c.png").exists() and not (out / "masks" / "b.png").exists()
    # a hand-corrected mask where the rerun would write: it stops before any work, and names it
    (out / "masks" / "a.png").write_bytes(b"corrected by hand")
    with pytest.raises(InputError, match=r"would replace 1 file\(s\) .*changed since it wrote them \(masks/a.png\)"):
        segment.run(str(images), str(out), str(ckpt))
    assert (out / "masks" / "a.png").read_bytes() == b"corrected by hand" and (out / "summary.json").exists()
    assert not list(tmp_path.glob(".out.partial*"))


@pytest.mark.slow
def test_the_workflow_reruns_a_segmentation_beside_the_persons_files(tmp_path):
    from test_workflow import snakemake
    import yaml
    images = make_images(tmp_path / "photos", {"a.png": (20, 30), "b.jpg": (17, 9)})
    work = tmp_path / "work"
    work.mkdir()
    config = {"datasets": {"d": {"source": "demo", "n_images": 40, "size": [16, 16], "labeled_fraction": 0.3,
                                 "val_fraction": 0.2, "test_fraction": 0.2}},
              "experiments": {"e": {"dataset": "d", "generations": 0, "stage0": {"models": 1}, "selection": {"top_k": 1},
                                    "model": {"alpha": 0.25}, "train": {"steps": 2, "eval_every": 2, "batch_size": 4}}},
              "segment": {"mine": {"experiment": "e", "generation": 0, "images": str(images)}}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/segment/mine/summary.json"
    run = snakemake(work, target)
    assert run.returncode == 0, run.stderr[-3000:]
    out = work / "results" / "segment" / "mine"
    assert (out / "masks" / "a.png").exists() and (out / "previews" / "b.png").exists()
    (out / "notes.txt").write_text("mine")
    rerun = snakemake(work, "--forcerun", "segment_images", "--", target)
    assert rerun.returncode == 0 and "segment_images" in rerun.stdout + rerun.stderr, rerun.stderr[-3000:]
    assert (out / "notes.txt").read_text() == "mine" and (out / "masks" / "a.png").exists()
