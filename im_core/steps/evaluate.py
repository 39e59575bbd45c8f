"""Score a model's predictions, and write a generation's metrics table."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics
from ..builders import builder
from ..data.read import read_split
from ..data.splits import dev_positions
from ..io import atomic_output, open_store, read_json, write_json
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
                    "pseudo_coverage": float("nan"), "pseudo_accuracy": float("nan")}


def pseudo_label_statistics(pseudo: str, data: str) -> dict:
    """IM fraction and, where the unlabeled split has (hidden) ground truth, accuracy and coverage."""
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
    return stats


def generation_table(score_files: list[str], selection: str, generation: int, pseudo: dict[str, str] | None,
                     data: str) -> pd.DataFrame:
    """One row per model, best first: rank, lineage (init, parent, label source, path), the dev,
    val and test scores, and the statistics of the pseudo-labels it trained on (`pseudo`: model
    id -> pseudo-label store; a model without one has none)."""
    sel = read_json(selection)
    pseudo = pseudo or {}
    stats = {store: pseudo_label_statistics(store, data) for store in set(pseudo.values())}
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
        for split in ("dev", "val", "test"):
            row.update({f"{split}_{k}": v for k, v in s.get(split, s["val"]).items() if k != "images"})
        row.update(NO_PSEUDO_LABELS)
        row.update(stats.get(pseudo.get(s["model_id"]), {}))
        rows.append(row)
    return pd.DataFrame(rows).sort_values("rank")


def write_generation_metrics(score_files: list[str], selection: str, generation: int, pseudo: dict[str, str] | None,
                             data: str, out: str) -> pd.DataFrame:
    table = generation_table(score_files, selection, generation, pseudo, data)
    with atomic_output(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    return table
