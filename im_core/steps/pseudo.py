"""Pseudo-labels of a generation from the previous generation's teachers (builders/: which ones,
and how), written as a zarr store chunk by chunk, so memory stays flat in the unlabeled split's
size."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..builders import Builder, builder as builder_named
from ..data.read import label_shape, split_indices
from ..errors import InputError
from ..io import atomic_output, create_array, open_store, read_json
from ..runtime.process import share_one_heap
from ..settings import NumericRequest, PseudoSettings

CHUNK_IMAGES = 256  # unlabeled images built and written at a time: memory flat in the split's size

# (store positions, images or None, task, classes) -> the teachers' hard labels (n x ...) and the
# first teacher's confidence (None where the builder needs none; every teacher's, n x ..., where
# the builder weighs its pixels)
Teachers = Callable[[slice, np.ndarray | None, str, int], tuple[np.ndarray, np.ndarray | None]]


def teacher_source(builder: Builder, chosen: list[str], stores: dict[str, str], checkpoints: list[str] | None,
                   size: tuple[int, int], settings: PseudoSettings) -> Teachers:
    """The teachers' predictions: read from their prediction stores, or computed by running
    their checkpoints where the builder needs what is not stored."""
    if builder.reruns(settings):
        from ..models.checkpoints import checkpoints_by_id, load_checkpoint
        from ..runtime.devices import pick_device
        from ..runtime.numeric_path import choose_path
        if not checkpoints:
            raise InputError(f"pseudo_labels.builder {settings.builder!r} with these settings runs the teachers: "
                             "pass their --checkpoints")
        by_id = checkpoints_by_id(checkpoints)
        missing = [t for t in chosen if t not in by_id]
        if missing:
            raise InputError(f"teachers {missing} are not among the checkpoints {checkpoints}")
        device = pick_device()
        loaded = [load_checkpoint(by_id[t], device) for t in chosen]
        path = choose_path(NumericRequest.of_checkpoint(loaded[0][1].get("settings")), size, device)
        models = [path.model(m) for m, _ in loaded]
        return lambda rows, images, task, n: builder.rerun(models, images, task, n, settings, path)
    arrays = [open_store(stores[t])["unlabeled/labels"] for t in chosen]
    if builder.weighs_pixels(settings):  # every teacher's confidence, n x ...
        every = [open_store(stores[t])["unlabeled/confidence"] for t in chosen]
        return lambda rows, images, task, n: (np.stack([a[rows] for a in arrays]), np.stack([c[rows] for c in every]))
    confidence = open_store(stores[chosen[0]])["unlabeled/confidence"] if builder.needs_confidence(settings) else None
    return lambda rows, images, task, n: (np.stack([a[rows] for a in arrays]),
                                         confidence[rows] if confidence is not None else None)


def run(data: str, selection: str, predictions: list[str], out: str, settings: PseudoSettings, generation: int,
        checkpoints: list[str] | None = None, parent: str | None = None,
        earlier_selections: list[str] | None = None) -> dict:
    """Build the pseudo-label store of `generation` from the teachers named in `selection` (or,
    builder `parent`, from the one student's parent `parent` names; `earlier_selections`: those
    of the generations before, most recent first, where the builder draws teachers from them)."""
    share_one_heap()
    builder = builder_named(settings.builder)
    if not builder.makes_labels:
        raise InputError(f"pseudo_labels.builder: {settings.builder!r} makes no pseudo-labels")
    chosen = builder.teachers(read_json(selection) | {"earlier": [read_json(p) for p in earlier_selections or []]},
                              settings, parent, generation)
    stores = {open_store(p).attrs["model_id"]: p for p in predictions}
    missing = [t for t in chosen if t not in stores]
    if missing:
        raise InputError(f"{selection}: teachers {missing} have no predictions among {list(stores)}")
    data_store = open_store(data)
    task, class_names = data_store.attrs["task"], data_store.attrs["class_names"]
    ignore, size = data_store.attrs["ignore_index"], tuple(data_store.attrs["size"])
    index = split_indices(data_store, "unlabeled")
    if len(index) == 0:
        raise InputError(f"{data}: the data set has no unlabeled images, so there is nothing to pseudo-label")
    teachers = teacher_source(builder, chosen, stores, checkpoints, size, settings)
    label_mode = builder.label_mode(settings)
    label_dims = ("image", "label", "y", "x") if task == "multilabel" else ("image", "y", "x")
    n, fractions, kept = len(index), [], 0
    extra_attrs, prepared = builder.prepare(teachers, n, task, len(class_names), settings)
    with atomic_output(out) as tmp:
        group = open_store(tmp, mode="w")
        arrays = {
            "images": create_array(group, "images", (n, *size, data_store["images"].shape[-1]), np.uint8, ("image", "y", "x", "channel")),
            "labels": create_array(group, "labels", (n, *label_shape(task, len(class_names), size)), np.uint8, label_dims),
            "im": create_array(group, "im", (n, *size), bool, ("image", "y", "x")),
            "im_fraction": create_array(group, "im_fraction", (n,), np.float32, ("image",)),
            "keep": create_array(group, "keep", (n,), bool, ("image",)),
        }
        if builder.weighs_pixels(settings):
            arrays["weight"] = create_array(group, "weight", arrays["labels"].shape, np.uint8, label_dims)
        for start in range(0, n, CHUNK_IMAGES):
            rows = slice(start, min(n, start + CHUNK_IMAGES))
            images = data_store["images"].get_orthogonal_selection((index[rows],))
            preds, confidence = teachers(rows, images, task, len(class_names))
            pl = builder.build(preds, confidence, images, task, len(class_names), ignore, settings, prepared)
            for name, values in (("images", pl.images), ("labels", pl.labels), ("im", pl.im),
                                 ("im_fraction", pl.im_fraction.astype(np.float32)), ("keep", pl.keep)):
                arrays[name][rows] = values
            if pl.weight is not None:
                arrays["weight"][rows] = pl.weight
            fractions.append(pl.im_fraction)
            kept += int(pl.keep.sum())
        create_array(group, "index", index.shape, index.dtype, ("image",))[:] = index
        mean_im_fraction = float(np.concatenate(fractions).mean())
        group.attrs.update({
            "kind": "im_core.pseudo_labels", "builder": settings.builder, "generation": generation, "teachers": chosen,
            "task": task, "class_names": class_names, "palette": data_store.attrs["palette"],
            "ignore_index": ignore, "label_mode": label_mode,
            "im_class_index": len(class_names) if label_mode == "im_class" and task == "multiclass" else None,
            "settings": settings.to_params(), "mean_im_fraction": mean_im_fraction,
            "images_kept": kept, "names": [data_store.attrs["names"][i] for i in index], **extra_attrs,
        })
    return {"teachers": chosen, "mean_im_fraction": mean_im_fraction, "images_kept": kept}
