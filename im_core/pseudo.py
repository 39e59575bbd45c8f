"""Pseudo-labels of a generation from the previous generation's teachers.

Builders: `im` (inconsistency masks of the top-n teachers' hard predictions), and, without any
mask, `model_ensemble` (argmax of the top-n teachers' averaged probabilities),
`input_ensemble` (the best teacher's probabilities averaged over flips), `best_teacher`
(the best teacher's hard prediction, as in Noisy Student) and `parent` (the prediction of the
model one student continues from: GIST/RIST/FIST's pseudo-labels, one store per student). The
one-model builders can erase labels below a confidence (Label Erase, with an optional
temperature on the logits); the store's `im` then holds the erased pixels.

Teacher predictions are stacked as n x N x H x W (multi-class class indices, binary 0/1) or
n x N x C x H x W (multi-label, 0/1 per channel). The inconsistency mask (IM) is where the
teachers do not all agree; for multi-label it is the union of the per-channel masks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.morphology import dilation, erosion, footprint_rectangle

from .io import InputError, atomic_output, create_array, open_store, read_json, share_one_heap
from .data import label_shape, split_indices
from .curriculum import assign, class_keys, key_count, sample_confidences, thresholds
from .stages import parent_id

LABEL_MODES = ("ignore", "im_class")


@dataclass
class PseudoLabels:
    images: np.ndarray       # N x H x W x C uint8, IM pixels black when block_input
    labels: np.ndarray       # N x H x W (N x C x H x W) uint8
    im: np.ndarray           # N x H x W bool
    im_fraction: np.ndarray  # N float
    keep: np.ndarray         # N bool: False where the class-presence filter dropped the image


def inconsistency_mask(preds: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """True where the teachers' discretized predictions are not all equal."""
    disagree = np.any(preds != preds[:1], axis=0)
    return disagree.any(axis=1) if multilabel else disagree


def morph_mask(im: np.ndarray, erode: int = 0, dilate: int = 0) -> np.ndarray:
    """Erode then dilate each image's IM with square kernels of the given sides (0 = skip)."""
    if not erode and not dilate:
        return im
    out = np.empty_like(im)
    for i, m in enumerate(im):
        if erode:
            m = erosion(m, footprint_rectangle((erode, erode)))
        if dilate:
            m = dilation(m, footprint_rectangle((dilate, dilate)))
        out[i] = m
    return out


def majority_vote(preds: np.ndarray, task: str, num_classes: int) -> np.ndarray:
    """Most frequent teacher value per pixel (ties go to the lower class / to 0); votes are
    counted in uint8 (at most 255 teachers)."""
    if task == "multiclass":
        counts = np.stack([(preds == c).sum(0, dtype=np.uint8) for c in range(num_classes)])
        return counts.argmax(0).astype(np.uint8)
    return (2 * preds.sum(0, dtype=np.uint16) > len(preds)).astype(np.uint8)


def class_presence_disagreement(preds: np.ndarray, task: str, num_classes: int) -> np.ndarray:
    """Per image: True if the teachers disagree on which classes appear in it."""
    n, count = preds.shape[:2]
    if task == "multiclass":
        present = np.stack([[np.bincount(p.ravel(), minlength=num_classes) > 0 for p in teacher] for teacher in preds])
    elif task == "multilabel":
        present = preds.reshape(n, count, preds.shape[2], -1).any(-1)
    else:
        present = preds.reshape(n, count, -1).any(-1)
    return np.any(present != present[:1], axis=(0, *range(2, present.ndim)))


def build_pseudo_labels(preds: np.ndarray, images: np.ndarray, task: str, num_classes: int, *,
                        block_input: bool = True, block_output: bool = True, label_mode: str = "ignore",
                        ignore_index: int = 255, erode: int = 0, dilate: int = 0,
                        filter_class_disagreement: bool = False) -> PseudoLabels:
    if label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
    multilabel = task == "multilabel"
    raw_im = inconsistency_mask(preds, multilabel)
    im = morph_mask(raw_im, erode, dilate)
    # Outside the IM the teachers agree, except where erosion shrank the IM: take the vote there.
    labels = majority_vote(preds, task, num_classes)
    if block_output:
        im_value = ignore_index if label_mode == "ignore" else (num_classes if task == "multiclass" else 0)
        where = im[:, None] if multilabel else im
        labels = np.where(np.broadcast_to(where, labels.shape), np.uint8(im_value), labels)
    masked = np.where(im[..., None], np.uint8(0), images) if block_input else images.copy()
    keep = ~class_presence_disagreement(preds, task, num_classes) if filter_class_disagreement else np.ones(len(images), bool)
    return PseudoLabels(masked, labels.astype(np.uint8), im, im.reshape(len(im), -1).mean(1), keep)


BUILDERS = ("im", "model_ensemble", "input_ensemble", "best_teacher", "parent", "class_balanced")
ONE_TEACHER_BUILDERS = ("best_teacher", "parent")  # one model's prediction: Label Erase applies


def teacher_count(builder: str, teachers: int) -> int:
    return teachers if builder in ("im", "model_ensemble") else 1


def label_erase(labels: np.ndarray, confidence: np.ndarray, threshold: float, ignore_index: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Label Erase: pixels whose confidence (uint8, p x 255) is below `threshold` (a probability)
    become `ignore_index`; with the erased pixels (N x H x W, any channel for multi-label)."""
    erased = confidence.astype(np.float32) < np.float32(threshold) * 255
    out = np.where(erased, np.uint8(ignore_index), labels)
    return out, (erased.any(1) if erased.ndim == 4 else erased)


def choose_teachers(builder: str, selection: dict, teachers: int, parent: str | None, generation: int,
                    agreement: bool = False) -> list[str]:
    """The model ids the builder reads: the selection's top-n (or best), one student's parent,
    or (class_balanced) the best model so far, followed, for its agreement filter, by the top-n."""
    if builder == "class_balanced":
        best = parent_id("best_so_far", selection, generation)
        return list(dict.fromkeys([best, *(selection["selected"][:teachers] if agreement else [])]))
    if builder != "parent":
        return selection["selected"][: teacher_count(builder, teachers)]
    if not parent:
        raise InputError("pseudo_labels.builder 'parent' builds one student's pseudo-labels: pass --parent "
                         "(rank:<r> or index:<i> of the previous generation)")
    try:
        return [parent_id(parent, selection, generation)]
    except ValueError as e:
        raise InputError(f"--parent {parent}: {e}") from e


def ensemble_predictions(models: list, images: np.ndarray, task: str, num_classes: int, flips: bool,
                         batch_size: int = 64, path=None) -> np.ndarray:
    """Hard labels from the probabilities averaged over models (and over flips), 1 x N x ..."""
    import torch
    from .losses import discretize_probabilities
    from .predict import predict_probabilities
    total = 0
    for model in models:
        total = total + predict_probabilities(model, images, task, batch_size, flips=flips, path=path)
    labels = discretize_probabilities(torch.from_numpy(total / len(models)), task, num_classes)
    return labels.numpy().astype(np.uint8)[None]


CHUNK_IMAGES = 256  # unlabeled images built and written at a time: memory flat in the split's size


def _teacher_source(builder: str, chosen: list[str], stores: dict, checkpoints: list[str] | None,
                    size: tuple[int, int], settings: dict):
    """A function (store index positions, images, task, classes) -> the teachers' hard labels for
    those images (n x ...) and, where Label Erase needs it, the one teacher's confidence."""
    rerun = builder in ("model_ensemble", "input_ensemble") or (
        settings.get("label_erase", 0) > 0 and settings.get("temperature", 1.0) != 1.0)
    # Label Erase and the class-balanced thresholds read the (first) teacher's stored confidence
    needs_confidence = (builder in ONE_TEACHER_BUILDERS and settings.get("label_erase", 0) > 0) or builder == "class_balanced"
    if rerun:
        from .predict import checkpoints_by_id, load_checkpoint
        from .runtime import choose_path, pick_device
        if not checkpoints:
            raise InputError(f"pseudo_labels.builder {builder!r} with these settings runs the teachers: pass their "
                             "--checkpoints")
        by_id = checkpoints_by_id(checkpoints)
        missing = [t for t in chosen if t not in by_id]
        if missing:
            raise InputError(f"teachers {missing} are not among the checkpoints {checkpoints}")
        device = pick_device()
        loaded = [load_checkpoint(by_id[t], device) for t in chosen]
        path = choose_path(loaded[0][1].get("settings", {}), size, device)
        models = [path.model(m) for m, _ in loaded]
        if builder in ("model_ensemble", "input_ensemble"):
            return lambda rows, images, task, n: (
                ensemble_predictions(models, images, task, n, builder == "input_ensemble", path=path), None)
        return lambda rows, images, task, n: tempered_prediction(models[0], images, task, n, settings["temperature"],
                                                                 path)
    arrays = [open_store(stores[t])["unlabeled/labels"] for t in chosen]
    confidence = open_store(stores[chosen[0]])["unlabeled/confidence"] if needs_confidence else None
    return lambda rows, images, task, n: (np.stack([a[rows] for a in arrays]),
                                         confidence[rows] if confidence is not None else None)


def tempered_prediction(model, images: np.ndarray, task: str, num_classes: int, temperature: float, path
                        ) -> tuple[np.ndarray, np.ndarray]:
    """One model's hard labels (1 x ...) and their confidence with the logits divided by `temperature`."""
    from .losses import confidence, discretize
    from .predict import predict_logits
    labels, conf = [], []
    for logits in predict_logits(model, images, 64, path):
        labels.append(discretize(logits, task, num_classes).cpu().numpy())
        conf.append(confidence(logits / temperature, task, num_classes).cpu().numpy())
    return np.concatenate(labels)[None], np.concatenate(conf)


def _agreement(preds: np.ndarray, task: str, settings: dict) -> np.ndarray:
    """Where the previous round's top-n agree (the class-balanced builder's IM filter: they are
    the last n of the teachers read; the first is the best so far, which may be of an earlier
    round), shaped to broadcast over the labels; everywhere without the filter."""
    n = min(settings.get("teachers", 1), len(preds))
    valid = ~inconsistency_mask(preds[-n:], task == "multilabel")
    if not settings.get("agreement", False) or n == 1:
        valid[:] = True
    return valid[:, None] if task == "multilabel" else valid


def curriculum_thresholds(teachers, n: int, task: str, num_classes: int, settings: dict) -> np.ndarray:
    """DST-CBC's per-class thresholds (uint8 units) over the whole unlabeled split, from the best
    model's confidence, inside the teachers' agreement where that filter is on."""
    count = key_count(task, num_classes)
    samples = [[] for _ in range(count)]
    for start in range(0, n, CHUNK_IMAGES):
        preds, confidence = teachers(slice(start, min(n, start + CHUNK_IMAGES)), None, task, num_classes)
        keys = class_keys(preds[0], task == "multilabel")
        for k, values in enumerate(sample_confidences(keys, confidence, _agreement(preds, task, settings), count)):
            samples[k].append(values)
    return thresholds([np.concatenate(v) for v in samples], settings["ratio"])


def run(data: str, selection: str, predictions: list[str], out: str, settings: dict, generation: int,
        checkpoints: list[str] | None = None, parent: str | None = None) -> dict:
    """Build the pseudo-label store of `generation` from the teachers named in `selection` (or,
    builder `parent`, from the one student's parent `parent` names)."""
    share_one_heap()
    builder = settings.get("builder", "im")
    if builder not in BUILDERS:
        raise InputError(f"pseudo_labels.builder: {builder!r} makes no pseudo-labels; builders: {list(BUILDERS)}")
    chosen = choose_teachers(builder, read_json(selection), settings.get("teachers", 1), parent, generation,
                             settings.get("agreement", False))
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
    teachers = _teacher_source(builder, chosen, stores, checkpoints, size, settings)
    # one prediction has no inconsistency: the IM-only settings do nothing for the other builders
    label_mode = settings["label_mode"] if builder == "im" else "ignore"
    label_dims = ("image", "label", "y", "x") if task == "multilabel" else ("image", "y", "x")
    n, fractions, kept, extra_attrs = len(index), [], 0, {}
    if builder == "class_balanced":
        limits = curriculum_thresholds(teachers, n, task, len(class_names), settings)
        extra_attrs = {"ratio": settings["ratio"], "thresholds": (limits / 255).round(4).tolist()}
    with atomic_output(out) as tmp:
        group = open_store(tmp, mode="w")
        arrays = {
            "images": create_array(group, "images", (n, *size, data_store["images"].shape[-1]), np.uint8, ("image", "y", "x", "channel")),
            "labels": create_array(group, "labels", (n, *label_shape(task, len(class_names), size)), np.uint8, label_dims),
            "im": create_array(group, "im", (n, *size), bool, ("image", "y", "x")),
            "im_fraction": create_array(group, "im_fraction", (n,), np.float32, ("image",)),
            "keep": create_array(group, "keep", (n,), bool, ("image",)),
        }
        for start in range(0, n, CHUNK_IMAGES):
            rows = slice(start, min(n, start + CHUNK_IMAGES))
            images = data_store["images"].get_orthogonal_selection((index[rows],))
            preds, confidence = teachers(rows, images, task, len(class_names))
            if builder == "class_balanced":
                keys = class_keys(preds[0], task == "multilabel")
                labels, left_out = assign(preds[0], keys, confidence, limits, _agreement(preds, task, settings),
                                          ignore)
                pl = PseudoLabels(images, labels, left_out, left_out.reshape(len(images), -1).mean(1),
                                  np.ones(len(images), bool))
            else:
                pl = build_pseudo_labels(
                    preds, images, task, len(class_names),
                    block_input=settings["block_input"], block_output=settings["block_output"], label_mode=label_mode,
                    ignore_index=ignore, erode=settings["erode"], dilate=settings["dilate"],
                    filter_class_disagreement=settings["filter_class_disagreement"],
                )
            if confidence is not None and builder != "class_balanced":  # Label Erase: the store's left-out mask
                pl.labels, pl.im = label_erase(pl.labels, confidence, settings["label_erase"], ignore)
                pl.im_fraction = pl.im.reshape(len(pl.im), -1).mean(1)
            for name, values in (("images", pl.images), ("labels", pl.labels), ("im", pl.im),
                                 ("im_fraction", pl.im_fraction.astype(np.float32)), ("keep", pl.keep)):
                arrays[name][rows] = values
            fractions.append(pl.im_fraction)
            kept += int(pl.keep.sum())
        create_array(group, "index", index.shape, index.dtype, ("image",))[:] = index
        mean_im_fraction = float(np.concatenate(fractions).mean())
        group.attrs.update({
            "kind": "im_core.pseudo_labels", "builder": builder, "generation": generation, "teachers": chosen,
            "task": task, "class_names": class_names, "palette": data_store.attrs["palette"],
            "ignore_index": ignore, "label_mode": label_mode,
            "im_class_index": len(class_names) if label_mode == "im_class" and task == "multiclass" else None,
            "settings": settings, "mean_im_fraction": mean_im_fraction,
            "images_kept": kept, "names": [data_store.attrs["names"][i] for i in index], **extra_attrs,
        })
    return {"teachers": chosen, "mean_im_fraction": mean_im_fraction, "images_kept": kept}
