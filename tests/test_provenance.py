"""A data store knows what it was built from, and the workflow rebuilds it (and everything after
it) when a file of the data set changes: a corrected mask, an added image, an edited split list."""
import os
import time
from pathlib import Path

import numpy as np
import yaml
import zarr
from PIL import Image

from test_workflow import snakemake

from im_core.data.provenance import content_hashes, differences, fingerprint, same_content, source_manifest

CLASSES = ["background", "thing"]


def write_folder(root: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"im{i:02d}.png")
        Image.fromarray(rng.integers(0, 2, (16, 16), dtype=np.uint8)).save(root / "masks" / f"im{i:02d}.png")
    return root


def dataset(root: Path) -> dict:
    return {"name": "mine", "source": "folder", "path": str(root), "class_names": CLASSES, "task": "binary",
            "size": [16, 16]}


def test_the_manifest_sees_every_change_and_says_which(tmp_path):
    root = write_folder(tmp_path / "data")
    (root / ".DS_Store").write_text("x")          # hidden files are not data
    before = source_manifest(dataset(root))
    assert len(before[str(root)]) == 24 and fingerprint(before) == fingerprint(source_manifest(dataset(root)))
    mask = root / "masks" / "im03.png"
    stat = mask.stat()
    Image.fromarray(np.ones((16, 16), np.uint8)).save(mask)
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))   # even restored with an older time
    Image.new("RGB", (16, 16)).save(root / "images" / "new.png")
    (root / ".DS_Store").write_text("changed")
    after = source_manifest(dataset(root))
    assert fingerprint(after) != fingerprint(before)
    assert differences(before, after) == [f"added {root}/images/new.png", f"changed {root}/masks/im03.png"]
    assert fingerprint(source_manifest({"name": "d", "source": "demo"})) == ""


def _new_times(root: Path, seconds: int = 100) -> None:
    """Every file of `root` a new time, bytes untouched (as a copy or a checkout leaves them)."""
    for path in root.rglob("*"):
        if path.is_file():
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))


def test_a_copy_with_new_times_is_the_same_content_and_a_real_change_is_not(tmp_path):
    root = write_folder(tmp_path / "data")
    (tmp_path / "train.txt").write_text("im00\nim01\n")
    cfg = dataset(root) | {"split_lists": {"train": str(tmp_path / "train.txt")}}
    recorded = source_manifest(cfg)
    hashes = content_hashes(recorded)
    assert set(hashes) == {str(root), str(tmp_path / "train.txt")} and len(hashes[str(root)]) == 24
    assert same_content(recorded, hashes, source_manifest(cfg))             # nothing changed
    _new_times(tmp_path)
    touched = source_manifest(cfg)
    assert fingerprint(touched) != fingerprint(recorded)                    # the times alone differ ...
    assert same_content(recorded, hashes, touched)                          # ... and the bytes are the same
    assert not same_content(recorded, None, touched)                        # a store without hashes: rebuilt
    (tmp_path / "train.txt").write_text("im00\nim02\n")                   # same size, other bytes
    assert not same_content(recorded, hashes, source_manifest(cfg))
    (tmp_path / "train.txt").write_text("im00\nim01\n")
    assert same_content(recorded, hashes, source_manifest(cfg))
    mask = root / "masks" / "im03.png"
    data = bytearray(mask.read_bytes())
    data[-20] ^= 1                                                         # one bit of one mask, same size
    mask.write_bytes(bytes(data))
    assert not same_content(recorded, hashes, source_manifest(cfg))
    mask.unlink()
    assert not same_content(recorded, hashes, source_manifest(cfg))        # a removed file


def test_a_symlink_loop_in_the_folder_is_walked_once(tmp_path):
    root = write_folder(tmp_path / "data", n=2)
    (root / "images" / "again").symlink_to(root / "images")
    assert len(source_manifest(dataset(root))[str(root)]) == 4


def test_editing_the_data_rebuilds_the_store_and_everything_after(tmp_path):
    root = write_folder(tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    ds = {k: v for k, v in dataset(root).items() if k != "name"}
    config = {"datasets": {"mine": {**ds, "labeled_fraction": 0.5, "val_fraction": 0.2,
                                    "test_fraction": 0.2}},
              "experiments": {"e": {"dataset": "mine", "generations": 0, "stage0": {"models": 1},
                                    "selection": {"top_k": 1},
                                    "train": {"steps": 2, "eval_every": 2, "batch_size": 2}}}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(work, "results/mine/data.zarr")
    assert run.returncode == 0, run.stderr[-3000:]
    store = zarr.open_group(str(work / "results/mine/data.zarr"), mode="r")
    assert store.attrs["built_from"]["files"] == {str(root): 24}
    assert len(store.attrs["source_manifest"][str(root)]) == 24
    assert "Nothing to be done" in (snakemake(work, "-n", "results/mine/data.zarr").stdout)
    assert len(store.attrs["source_hashes"][str(root)]) == 24

    _new_times(root)                                                        # the data copied: new times, same bytes
    plan = snakemake(work, "-n", "results/mine/data.zarr")
    assert "Nothing to be done" in plan.stdout and "it is kept" in plan.stdout + plan.stderr, plan.stdout[-3000:]

    time.sleep(0.01)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "im05.png")   # a corrected mask
    plan = snakemake(work, "-n", "results/e/gen0/metrics.csv")
    text = plan.stdout + plan.stderr
    assert "prepare_data" in plan.stdout and "Params have changed" in plan.stdout, text[-3000:]
    assert f"changed {root}/masks/im05.png" in text

    run = snakemake(work, "results/mine/data.zarr")
    assert run.returncode == 0, run.stderr[-3000:]
    Image.new("RGB", (16, 16)).save(root / "images" / "im99.png")     # a new image
    Image.new("L", (16, 16)).save(root / "masks" / "im99.png")
    plan = snakemake(work, "-n", "results/mine/data.zarr")
    assert "prepare_data" in plan.stdout and f"added {root}/images/im99.png" in plan.stdout + plan.stderr
