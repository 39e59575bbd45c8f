"""Score a model's predictions, and write a generation's metrics table."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics
from ..builders import builder
from ..data.read import read_split
from ..data.splits import dev_positions
from ..io import atomic_output, open_store, read_json, write_array, write_json
from ..runtime.path_rule import describe


def score_model(predictions: str, data: str, out: str, splits: tuple[str, ...] = ("val", "test"),
                dev_images: int | str | None = None, dev_seed: int = 0) -> dict:
    """Metrics of one model on the val and test splits, and on the development set (`dev`: the
    val split, or `dev_images` of its images drawn from `dev_seed`, which rank the models) -> JSON."""
    pred_store, data_store = open_store(predictions), open_store(data)
    attrs = data_store.attrs
    result = {"model_id": pred_store.attrs["model_id"], "generation": pred_store.attrs["generation"],
              "lineage": pred_store.attrs.get("lineage", {}),
              "numeric_path": describe(pred_store.attrs.get("train_numeric_path"))}

    def score(pred: np.ndarray, truth: np.ndarray) -> dict:
        return metrics.score(pred, truth, attrs["class_names"], attrs["ignore_index"], attrs["task"] == "multilabel")

    for split in splits:
        truth = read_split(data_store, split)
        pred = pred_store[f"{split}/labels"][:]
        result[split] = score(pred, truth.masks) | {"images": len(truth.index)}
        if split == "val":
            dev = dev_positions(len(truth.index), dev_images, dev_seed, truth.masks, len(attrs["class_names"]))
            result["dev"] = (dict(result["val"]) if len(dev) == len(truth.index)
                             else score(pred[dev], truth.masks[dev]) | {"images": len(dev)})
    write_json(out, result)
    return result


NO_PSEUDO_LABELS = {"im_fraction": float("nan"), "pseudo_images": 0, "pseudo_images_kept": 0,
                    "pseudo_coverage": float("nan"), "pseudo_accuracy": float("nan"),
                    "im_error_recall": float("nan")}
NO_BUDGET = {"trainer": "", "steps": float("nan"), "image_steps": float("nan")}


def model_budget(checkpoint: str) -> dict:
    """What training one model cost: its trainer, optimizer steps and image-steps (steps x the
    images it draws per step: the batch, twice that for a trainer that also draws an unlabeled
    batch, trainers/__init__.py). Not its seconds: the tables are the same on every rerun, and
    a clock is not (the checkpoint and Snakemake's benchmark files have the time)."""
    from ..models.checkpoints import read_checkpoint
    from ..trainers import trainer_spec
    ckpt = read_checkpoint(checkpoint)
    settings, history = ckpt.get("settings", {}), ckpt.get("history") or [{}]
    steps = history[-1].get("step", float("nan"))
    trainer = settings.get("trainer", "supervised")
    per_step = settings.get("batch_size", float("nan")) * (2 if trainer_spec(trainer).draws_unlabeled else 1)
    return {"model_id": ckpt["model_id"], "trainer": trainer, "steps": steps, "image_steps": steps * per_step}


def error_recall(labels: np.ndarray, truth: np.ndarray, left_out: np.ndarray, ignore_index: int,
                 class_names: list[str]) -> dict:
    """How much of a teacher's error the pseudo-labels left out: of the pixels where the
    teacher's label (`labels`, N x H x W, or N x L x H x W multi-label) is wrong against the
    ground truth, the share inside `left_out` (N x H x W: the IM; multi-label also N x L x H x W,
    each label's own mask); per true class, or per label (its wrong pixels). nan where there is
    no error to find."""
    known = truth != ignore_index
    wrong = known & (labels != truth)
    multilabel = labels.ndim == 4
    inside = (left_out if left_out.ndim == 4 else left_out[:, None]) if multilabel else left_out
    share = lambda w, m: float((w & m).sum() / w.sum()) if w.any() else float("nan")  # noqa: E731
    out = {"im_error_recall": share(wrong, inside)}
    for k, name in enumerate(class_names):
        if multilabel:  # label k's wrong pixels against its own mask (or the union, one channel)
            out[f"im_error_recall_{name}"] = share(wrong[:, k], inside[:, k if inside.shape[1] > 1 else 0])
        else:
            out[f"im_error_recall_{name}"] = share(wrong & (truth == k), inside)
    return out


def left_out_of_the_loss(store, rows: np.ndarray) -> np.ndarray:
    """The pixels the pseudo-labels of `rows` leave out: the IM (N x H x W); for a per-label IM of
    multi-label data in ignore mode, each label's own mask (N x L x H x W: where that label is
    ignored), since its union is not what leaves a label out of the loss."""
    settings = store.attrs.get("settings") or {}
    if (store.attrs.get("task") == "multilabel" and settings.get("per_label") and settings.get("block_output")
            and store.attrs.get("label_mode") == "ignore"):
        return store["labels"].get_orthogonal_selection((rows,)) == store.attrs["ignore_index"]
    return store["im"].get_orthogonal_selection((rows,))


def pseudo_label_statistics(pseudo: str, data: str, teacher_predictions: dict[str, str] | None = None) -> dict:
    """IM fraction and, where the unlabeled split has (hidden) ground truth, accuracy and coverage;
    with the teachers' prediction stores (model id -> store), the share of the first teacher's
    wrong pixels that the pseudo-labels left out (`im_error_recall`, overall and per class/label:
    does the mask mark the errors?)."""
    store, data_store = open_store(pseudo), open_store(data)
    index = store["index"][:]
    keep = store["keep"][:]
    has_truth = data_store["has_mask"].get_orthogonal_selection((index[keep],))
    # only a builder whose left-out pixels mark the teachers' disagreement has an IM fraction to report
    im_fraction = (float(store["im_fraction"][:].mean()) if builder(store.attrs.get("builder", "im")).reports_mask
                   else float("nan"))
    stats = dict(NO_PSEUDO_LABELS, im_fraction=im_fraction, pseudo_images=int(len(index)),
                 pseudo_images_kept=int(keep.sum()))
    if has_truth.any():
        truth = data_store["masks"].get_orthogonal_selection((index[keep],))
        labels = store["labels"].get_orthogonal_selection((np.flatnonzero(keep),))
        stats.update(metrics.pseudo_label_quality(labels[has_truth], truth[has_truth], data_store.attrs["ignore_index"],
                                                  len(data_store.attrs["class_names"]), data_store.attrs["class_names"]))
        teacher = (store.attrs.get("teachers") or [None])[0]
        if teacher in (teacher_predictions or {}):
            rows = np.flatnonzero(keep)[has_truth]
            predicted = open_store(teacher_predictions[teacher])["unlabeled/labels"].get_orthogonal_selection((rows,))
            left_out = left_out_of_the_loss(store, rows)
            stats.update(error_recall(predicted, truth[has_truth], left_out, data_store.attrs["ignore_index"],
                                      data_store.attrs["class_names"]))
    return stats


def generation_table(score_files: list[str], selection: str, generation: int, pseudo: dict[str, str] | None,
                     data: str, checkpoints: list[str] | None = None,
                     teacher_predictions: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per model, best first: rank, lineage (init, parent, label source, path), what
    training it cost (`checkpoints`: model_budget), the dev, val and test scores, and the
    statistics of the pseudo-labels it trained on (`pseudo`: model id -> pseudo-label store; a
    model without one has none; `teacher_predictions`: model id -> prediction store, for the
    mask's error recall)."""
    sel = read_json(selection)
    pseudo = pseudo or {}
    stats = {store: pseudo_label_statistics(store, data, teacher_predictions) for store in set(pseudo.values())}
    budgets = {b["model_id"]: b for b in map(model_budget, checkpoints or [])}
    rows = []
    for path in score_files:
        s = read_json(path)
        lineage = s.get("lineage", {})
        row = {"generation": generation, "model_id": s["model_id"], "rank": sel["ranking"].index(s["model_id"]) + 1,
               "selected": "yes" if s["model_id"] in sel["selected"] else "no",
               "init": lineage.get("init", ""), "parent": lineage.get("parent", ""),
               "label_source": lineage.get("label_source", ""), "path": lineage.get("path", ""),
               "best_so_far": sel.get("best_so_far", {}).get("model_id", ""),
               "numeric_path": s.get("numeric_path", "")}
        row.update({k: v for k, v in budgets.get(s["model_id"], NO_BUDGET).items() if k != "model_id"})
        for split in ("dev", "val", "test"):
            row.update({f"{split}_{k}": v for k, v in s.get(split, s["val"]).items() if k != "images"})
        row.update(NO_PSEUDO_LABELS)
        row.update(stats.get(pseudo.get(s["model_id"]), {}))
        rows.append(row)
    return pd.DataFrame(rows).sort_values("rank")


def write_test_confusions(predictions: list[str], data: str, out: str) -> None:
    """A store of each model's per-image confusions on the test split (an array per model id,
    image x channel x truth x prediction; metrics.per_image_confusions): what a bootstrap over
    the test images resamples where a comparison has one seed."""
    data_store = open_store(data)
    attrs = data_store.attrs
    truth = read_split(data_store, "test").masks
    with atomic_output(out) as tmp:
        group = open_store(tmp, mode="w")
        group.attrs.update({"kind": "im_core.test_confusions", "multilabel": attrs["task"] == "multilabel",
                            "class_names": attrs["class_names"]})
        for path in predictions:
            store = open_store(path)
            confusions = metrics.per_image_confusions(store["test/labels"][:], truth, len(attrs["class_names"]),
                                                      attrs["ignore_index"], attrs["task"] == "multilabel")
            write_array(group, store.attrs["model_id"], confusions, ("image", "channel", "truth", "prediction"))


def write_generation_metrics(score_files: list[str], selection: str, generation: int, pseudo: dict[str, str] | None,
                             data: str, out: str, checkpoints: list[str] | None = None,
                             teacher_predictions: dict[str, str] | None = None, predictions: list[str] | None = None,
                             confusions_out: str | None = None) -> pd.DataFrame:
    table = generation_table(score_files, selection, generation, pseudo, data, checkpoints, teacher_predictions)
    with atomic_output(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    if confusions_out:
        write_test_confusions(predictions or [], data, confusions_out)
    return table
