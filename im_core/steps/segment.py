"""Apply a trained model to a folder of new images: class-index PNGs and coloured previews.

Every image file Pillow reads under the input folder (subfolders too, linked ones followed once,
hidden files left out) is read as the model's input (RGB or grayscale), resized to the training
size (bilinear) and predicted in batches; the probabilities are resized back to the image's own
size (bilinear) and the labels taken there. Images are read as data preparation reads them
(data/images.py): at their displayed orientation (EXIF applied), so masks and previews have the
displayed size and orientation and carry no EXIF orientation; more than 8 bits scaled to 0..255
by `intensity_range` (give the one of the data set the model was trained on); an image over
`max_image_pixels` is an error naming it. Images are read, predicted and written a batch at a
time, so memory stays flat in the number of images. The output folder is written under a
temporary name and renamed when complete:

    <out>/masks/<name>.png            multiclass, binary: class index per pixel (8-bit, palette PNG)
    <out>/masks/<label>/<name>.png    multilabel: 0/255 per label
    <out>/previews/<name>.png         the image blended with the palette colours
    <out>/summary.json                checkpoint, model id, images, classes, intensity_range, seconds
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.folder import list_images as list_image_files
from ..data.images import AUTO, Intensity, intensity_rule, read_image, reading_images, resize_pair
from ..errors import InputError, few_names
from ..io import open_store, read_json
from ..owned_folder import OwnedFolder
from ..models.checkpoints import load_checkpoint
from ..models.inference import predict_logits
from ..models.losses import discretize_probabilities, probabilities
from ..runtime.devices import pick_device
from ..runtime.numeric_path import choose_path
from ..runtime.process import start_job
from ..settings import NumericRequest

log = logging.getLogger("im_core.segment")

KIND = "im_core.segmentation"
PREVIEW_OPACITY = 0.5   # share of the class colour in a preview pixel


# ---------------------------------------------------------------- choosing the model

def choose_checkpoint(selection: str | os.PathLike, checkpoints: list[str | os.PathLike], rank: int = 1) -> Path:
    """The checkpoint of the model ranked `rank` (1 = best) in a selection file, among
    `checkpoints` (a model id gen<g>_m<i> is the checkpoint in a folder m<i>)."""
    try:
        ranking = read_json(selection)["ranking"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{selection}: not a readable selection file with a 'ranking' ({e}); "
                         "rebuild it with snakemake") from e
    if not 1 <= rank <= len(ranking):
        raise InputError(f"rank {rank}: {selection} ranks {len(ranking)} models (1 = best); choose 1..{len(ranking)}")
    model_id = ranking[rank - 1]
    index = re.search(r"_(m\d+)$", model_id)
    by_folder = {Path(c).parent.name: Path(c) for c in checkpoints}
    if index is None or index.group(1) not in by_folder:
        raise InputError(f"{selection}: its rank-{rank} model {model_id} is not among the checkpoints "
                         f"{few_names([str(c) for c in checkpoints])}")
    return by_folder[index.group(1)]


def checkpoint_for(results_dir: str | os.PathLike, experiment: str, generation: int, rank: int = 1) -> Path:
    """The checkpoint of a generation's model ranked `rank` on the development set (1 = best):
    <results>/<experiment>/gen<g>/models/m<i>/model.pt, read from the generation's selection.json."""
    exp_dir = Path(results_dir) / experiment
    gen_dir = exp_dir / f"gen{generation}"
    build = f"build it with: snakemake --cores all {gen_dir}/metrics.csv"
    if not exp_dir.is_dir():
        known = sorted({p.parent.parent.name for p in Path(results_dir).glob("*/gen*/selection.json")})
        raise InputError(f"{exp_dir}: experiment {experiment!r} has no results in {results_dir}"
                         f"{f' (experiments there: {known})' if known else ''}; {build}")
    selection = gen_dir / "selection.json"
    if not selection.is_file():
        done = sorted(int(p.name[3:]) for p in exp_dir.glob("gen*") if (p / "selection.json").is_file()
                      and p.name[3:].isdigit())
        raise InputError(f"{selection}: generation {generation} of experiment {experiment!r} has not been run "
                         f"(generations with a selection: {done or 'none'}); {build}")
    return choose_checkpoint(selection, sorted((gen_dir / "models").glob("m*/model.pt")), rank)


# ---------------------------------------------------------------- files

def list_images(folder: str | os.PathLike) -> list[Path]:
    """Every file under `folder` (recursively) with a suffix Pillow reads, as paths relative to
    it, sorted; hidden files and folders (names starting with '.') are left out."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: images folder not found (--images); pass a folder of images")
    return [p.relative_to(root) for p in list_image_files(root, recursive=True)]


def output_names(files: list[Path]) -> list[Path]:
    """Each input's output name (its relative path with .png); two inputs with one output name
    (a.jpg and a.png) are an error."""
    names: dict[Path, Path] = {}
    for f in files:
        name = f.with_suffix(".png")
        if name in names:
            raise InputError(f"{names[name]} and {f}: both would be written as {name}; rename or move one of them")
        names[name] = f
    return list(names)


def check_folders(images: str | os.PathLike, out: str | os.PathLike) -> None:
    """Refuse an output folder equal to or inside the images folder, and one that holds the
    images (what may be written into an existing output folder: owned_folder.py)."""
    src, dst = Path(images).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents:
        raise InputError(f"--out {out}: inside the images folder {images}; choose an output folder outside it")
    if dst in src.parents:
        raise InputError(f"--out {out}: holds the images folder {images}; choose another output folder")


def planned_outputs(names: list[Path], task: str, class_names: list[str]) -> set[str]:
    """The files a run writes into its output folder (write_outputs, and summary.json)."""
    masks = ([f"masks/{folder}/{name.as_posix()}" for folder in label_folders(class_names) for name in names]
             if task == "multilabel" else [f"masks/{name.as_posix()}" for name in names])
    return set(masks) | {f"previews/{name.as_posix()}" for name in names} | {"summary.json"}


def read_input(path: Path, channels: int, intensity: Intensity = AUTO) -> np.ndarray:
    """An image as H x W x `channels` uint8 (RGB, or grayscale for 1-channel models), at its
    displayed orientation, by the bit-depth rule `intensity`."""
    if channels not in (1, 3):
        raise InputError(f"the model reads {channels}-channel images; only 1 (grayscale) and 3 (RGB) are supported")
    return read_image(path, channels, intensity)


# ---------------------------------------------------------------- labels and pictures

def labels_at(probs: torch.Tensor, shape: tuple[int, int], task: str, num_classes: int) -> np.ndarray:
    """C x h x w probabilities -> labels at `shape` (H x W class indices; multilabel C x H x W 0/1),
    the probabilities resized bilinearly first (an extra IM channel is never chosen)."""
    if tuple(probs.shape[-2:]) != tuple(shape):
        probs = F.interpolate(probs[None].float(), size=tuple(shape), mode="bilinear", align_corners=False)[0]
    return discretize_probabilities(probs[None], task, num_classes)[0].to(torch.uint8).cpu().numpy()


def mask_image(labels: np.ndarray, palette: list) -> Image.Image:
    """H x W class indices -> an 8-bit palette PNG image (pixel value = class index)."""
    im = Image.fromarray(labels.astype(np.uint8))
    im.putpalette([v for colour in palette for v in colour])
    return im


def blend(image: np.ndarray, labels: np.ndarray, palette: list, opacity: float = PREVIEW_OPACITY) -> np.ndarray:
    """The image (H x W x 1 or 3) with the labels' palette colours over it; multilabel (C x H x W):
    the colours of overlapping labels averaged, pixels with no label left as they are."""
    rgb = (np.repeat(image, 3, -1) if image.shape[-1] == 1 else image).astype(np.float32)
    pal = np.asarray(palette, np.float32)
    if labels.ndim == 2:
        colours, labeled = pal[labels], np.ones(labels.shape, bool)
    else:
        active = labels.astype(np.float32)
        count = active.sum(0)[..., None]
        colours = np.einsum("chw,cd->hwd", active, pal[:len(active)]) / np.maximum(count, 1)
        labeled = count[..., 0] > 0
    mixed = np.where(labeled[..., None], (1 - opacity) * rgb + opacity * colours, rgb)
    return np.round(mixed).clip(0, 255).astype(np.uint8)


def label_folders(class_names: list[str]) -> list[str]:
    """Folder names for multilabel masks: the class names with path separators and other odd
    characters replaced, made unique."""
    out: list[str] = []
    for i, name in enumerate(class_names):
        safe = re.sub(r"[^\w.-]", "_", name).strip(".") or f"label{i}"
        out.append(safe if safe not in out else f"{safe}_{i}")
    return out


def write_outputs(root: Path, name: Path, image: np.ndarray, labels: np.ndarray, task: str,
                  class_names: list[str], palette: list) -> None:
    """One image's masks and preview under `root` (masks/, previews/)."""
    if task == "multilabel":
        for folder, channel in zip(label_folders(class_names), labels):
            _save(Image.fromarray((channel * 255).astype(np.uint8)), root / "masks" / folder / name)
    else:
        _save(mask_image(labels, palette), root / "masks" / name)
    _save(Image.fromarray(blend(image, labels, palette)), root / "previews" / name)


def _save(im: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")


# ---------------------------------------------------------------- the job

def model_facts(ckpt: dict, checkpoint: str | os.PathLike, data: str | os.PathLike | None = None) -> dict:
    """task, class names, palette and training size of a checkpoint; older checkpoints lack the
    palette and size, which then come from the data store it was trained on (`data`)."""
    facts = {k: ckpt.get(k) for k in ("task", "class_names", "palette", "size")}
    missing = [k for k in ("palette", "size") if facts[k] is None]
    if missing and data is None:
        raise InputError(f"{checkpoint}: this checkpoint predates the {' and '.join(missing)} being stored in it; "
                         "pass --data with the data store it was trained on (results/<dataset>/data.zarr)")
    if missing:
        attrs = open_store(data).attrs
        for k in missing:
            if k not in attrs:
                raise InputError(f"{data}: the data store has no {k!r} attribute; is it an im_core data store?")
            facts[k] = attrs[k]
    facts["size"] = tuple(int(v) for v in facts["size"])
    if len(facts["palette"]) < len(facts["class_names"]):
        raise InputError(f"{checkpoint}: {len(facts['class_names'])} classes but {len(facts['palette'])} palette colours")
    return facts


def run(images: str, out: str, checkpoint: str, batch_size: int = 32, threads: int = 1,
        data: str | None = None, intensity_range="auto", max_image_pixels: int | None = None) -> dict:
    """Segment every image under `images` with the model of `checkpoint` into the folder `out`;
    images of more than 8 bits are scaled by `intensity_range` (auto, dtype, [low, high]), images
    of more than `max_image_pixels` pixels are refused (None: Pillow's limit)."""
    started = time.time()
    start_job(threads)
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    if max_image_pixels is not None and max_image_pixels < 1:
        raise InputError(f"--max-image-pixels {max_image_pixels}: must be at least 1")
    intensity = intensity_rule(intensity_range, "--intensity-range")
    check_folders(images, out)
    files = list_images(images)
    if not files:
        raise InputError(f"{images}: no image files Pillow reads here (by suffix, hidden files left out)")
    names = output_names(files)
    if not Path(checkpoint).is_file():
        raise InputError(f"{checkpoint}: checkpoint not found; pass a model.pt (results/<experiment>/gen<g>/models/m<i>/)")
    device = pick_device()
    model, ckpt = load_checkpoint(checkpoint, device)
    facts = model_facts(ckpt, checkpoint, data)
    task, class_names, palette, size = facts["task"], facts["class_names"], facts["palette"], facts["size"]
    folder = OwnedFolder(out, KIND, who="im-core segment")   # never over a file it did not write: stop before any work
    folder.check(planned_outputs(names, task, class_names))
    channels = ckpt["model_args"]["in_channels"]
    request = NumericRequest.of_checkpoint(ckpt.get("settings"))
    if device.type == "cpu" and request.precision == "fp16":
        request = dataclasses.replace(request, precision="auto")  # trained on a GPU in fp16; a CPU has no fp16 autocast
    path = choose_path(request, size, device)
    model = path.model(model)
    log.info("%s (%s, %s, %d classes, trained at %dx%d) on %d images of %s, batches of %d on %s", checkpoint,
             ckpt.get("model_id"), task, len(class_names), *size, len(files), images, batch_size, path.as_dict())
    root = Path(images)
    tmp = folder.staging()
    try:
        summary = _segment_into(tmp, root, files, names, model, path, ckpt, facts, channels, intensity,
                                batch_size, max_image_pixels, checkpoint, images, started)
        folder.commit(tmp)
    finally:
        folder.discard(tmp)
    return {k: summary[k] for k in ("model_id", "images", "seconds")}


def _segment_into(tmp: Path, root: Path, files: list, names: list[Path], model, path, ckpt: dict, facts: dict,
                  channels: int, intensity, batch_size: int, max_image_pixels: int | None, checkpoint, images,
                  started: float) -> dict:
    """Every image's masks and preview, and summary.json, written under `tmp`."""
    task, class_names, palette, size = facts["task"], facts["class_names"], facts["palette"], facts["size"]
    with reading_images(max_image_pixels, "--max-image-pixels"), torch.inference_mode():
        for start in range(0, len(files), batch_size):
            part = list(zip(files[start:start + batch_size], names[start:start + batch_size]))
            originals = [read_input(root / f, channels, intensity) for f, _ in part]
            batch = np.stack([resize_pair(im, None, size)[0] for im in originals])
            logits = torch.cat(list(predict_logits(model, batch, batch_size, path)))
            for (_, name), image, probs in zip(part, originals, probabilities(logits, task)):
                labels = labels_at(probs, image.shape[:2], task, len(class_names))
                write_outputs(tmp, name, image, labels, task, class_names, palette)
            log.info("%d/%d images", start + len(part), len(files))
        summary = {"kind": KIND, "checkpoint": str(checkpoint), "model_id": ckpt.get("model_id"),
                   "generation": ckpt.get("generation"), "images": len(files), "input": str(images), "task": task,
                   "classes": class_names, "palette": palette, "training_size": list(size),
                   "masks": ("masks/<label>/<name>.png: 0/255 per label" if task == "multilabel"
                             else "masks/<name>.png: class index per pixel"),
                   "intensity_range": intensity.describe(), "numeric_path": path.as_dict(),
                   "seconds": round(time.time() - started, 3)}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
