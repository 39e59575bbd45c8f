"""Rank a generation's models on the development set (validation) and choose the next generation's teachers."""
from __future__ import annotations

from ..io import read_json, write_json
from ..settings import SelectionSettings


def rank_models(scores: dict[str, float]) -> list[str]:
    """Model ids, best first; ties broken by id so the ranking is deterministic."""
    return sorted(scores, key=lambda m: (-scores[m], m))


def select(scores: dict[str, float], top_k: int) -> dict:
    """The top-k models are kept as the next generation's teachers (its builder uses the best n)."""
    ranking = rank_models(scores)
    return {"ranking": ranking, "selected": ranking[:top_k]}


def best_so_far(previous: dict | None, ranking: list[str], scores: dict[str, float], generation: int) -> dict:
    """The best model of this generation and every earlier one (DST-CBC's "best so far"): this
    generation's best where it beats the previous record, which a tie keeps."""
    best = {"model_id": ranking[0], "generation": generation, "score": scores[ranking[0]]}
    record = (previous or {}).get("best_so_far")
    return record if record and record["score"] >= best["score"] else best


def run(score_files: list[str], out: str, settings: SelectionSettings, generation: int,
        previous: str | None = None) -> dict:
    """Rank the models, keep the top k, and carry the best model so far (`previous`: the
    previous generation's selection)."""
    metric = settings.metric
    per_model = {s["model_id"]: s for s in map(read_json, score_files)}
    # ranked on the development set (the whole val split unless selection.dev_images caps it)
    dev = {m: s.get("dev", s["val"])[metric] for m, s in per_model.items()}
    result = select(dev, settings.top_k)
    result.update({"generation": generation, "metric": f"{'dev' if settings.dev_images else 'val'}_{metric}",
                   "scores": {m: dev[m] for m in result["ranking"]}})
    result["best_so_far"] = best_so_far(read_json(previous) if previous else None, result["ranking"], dev, generation)
    write_json(out, result)
    return result
