"""The step vocabulary: what each model job of a generation (a "stage") is.

Every model of generation g >= 1 has a plan: where its weights start (from scratch, or from a
parent of generation g-1 chosen by its rank in that generation's selection or by its index,
i.e. the same path, or the best model of all earlier generations, DST-CBC's best so far), which labels it trains on (`L` ground truth only, `P` pseudo-labels only,
a fixed share of ground truth in every batch, or both pooled) and whose pseudo-labels those are
(the generation's store, built from the previous generation's top-n teachers, or its own
parent's prediction). The students' `search` lays the plans out:

- none:   every student alike, as `students` says (IM, the baselines, FIST);
- beam:   GIST. Generation 1 continues the best stage-0 model twice, once on `L` and once on
          `P`; from generation 2 each of the top `beam_width` models of the previous generation
          (ranked on the development set) has an `L` child (even index) and a `P` child (odd);
- random: RIST. `paths` random L/P paths drawn from the experiment's seed; path i's model of
          generation 1 continues the best stage-0 model, later ones model i of the previous
          generation.

The path of a model (e.g. "LPPL") is its parent's path plus its own letter: L, P, or M for a
mix (pooled, or a fixed share).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEARCHES = ("none", "beam", "random")


@dataclass(frozen=True)
class ModelPlan:
    parent: str | None            # "rank:<r>"/"index:<i>" of generation g-1, "best_so_far" of any earlier; None = scratch
    labeled_share: float | None   # 1 = L, 0 = P, between = a fixed share per batch, None = pooled
    pseudo: str | None            # "generation" (the generation's store), "parent" (its parent's prediction), None

    @property
    def letter(self) -> str:
        return path_letter(self.labeled_share, self.pseudo is not None)


def path_letter(labeled_share: float | None, with_pseudo: bool) -> str:
    """L (ground truth only), P (pseudo-labels only) or M (a mix of both)."""
    if not with_pseudo or labeled_share == 1:
        return "L"
    return "P" if labeled_share == 0 else "M"


def longest_run(path: str) -> int:
    """The most equal choices in a row."""
    best = run = 0
    for i, c in enumerate(path):
        run = run + 1 if i and c == path[i - 1] else 1
        best = max(best, run)
    return best


def draw_paths(seed: int, count: int, stages: int, max_run: int | None = 4) -> list[str]:
    """`count` random L/P paths of `stages` letters, each from its own generator seeded by
    (seed, path index), so path i does not depend on how many paths are drawn. A path with more
    than `max_run` equal choices in a row (the paper's degenerate cases) is drawn again
    (None: keep every path)."""
    if max_run is not None and max_run < 1:
        raise ValueError(f"max_run must be at least 1 or None, got {max_run}")
    paths = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        while True:
            path = "".join("LP"[b] for b in rng.integers(0, 2, stages))
            if max_run is None or longest_run(path) <= max_run:
                break
        paths.append(path)
    return paths


def beam_models(generation: int, beam_width: int, previous_models: int) -> int:
    """GIST: two children (L, P) per beam member; generation 1 has one member, the best stage-0 model."""
    return 2 if generation == 1 else 2 * min(beam_width, previous_models)


def plan_model(students: dict, builder, generation: int, index: int, stages: int, seed: int,
               continues_parent: bool = False) -> ModelPlan:
    """The plan of model `index` of `generation` >= 1 from the students' settings of that
    generation, its pseudo-label builder (builders/), the experiment's number of stages and seed;
    `continues_parent`: the students' trainer always continues its teacher (trainers/)."""
    search = students["search"]
    if search == "beam":
        parent, share = f"rank:{index // 2 if generation > 1 else 0}", (1.0, 0.0)[index % 2]
    elif search == "random":
        path = draw_paths(seed, index + 1, stages, students["max_run"])[index]
        parent, share = ("rank:0" if generation == 1 else f"index:{index}"), float(path[generation - 1] == "L")
    else:
        parent = None
        if continues_parent or students["init"] == "parent":
            parent = {"best": "rank:0", "same_index": f"index:{index}", "best_so_far": "best_so_far"}[students["parent"]]
        share = students["labeled_share"]
    if not builder.makes_labels or share == 1:
        pseudo = None
    else:
        pseudo = "parent" if builder.per_student else "generation"
    return ModelPlan(parent, share, pseudo)


def parent_id(parent: str, selection: dict, generation: int) -> str:
    """The model id a plan's parent names, given generation g-1's selection (its ranking, best
    first, and the best model so far over all generations up to g-1)."""
    kind, _, value = parent.partition(":")
    if kind == "rank":
        r, ranking = int(value), selection["ranking"]
        if r >= len(ranking):
            raise ValueError(f"parent rank {r}: generation {generation - 1} ranks only {len(ranking)} models")
        return ranking[r]
    if kind == "index":
        return f"gen{generation - 1}_m{int(value)}"
    if kind == "best_so_far":
        if "best_so_far" not in selection:
            raise ValueError(f"parent best_so_far: generation {generation - 1}'s selection has no best_so_far record")
        return selection["best_so_far"]["model_id"]
    raise ValueError(f"parent {parent!r}: expected 'rank:<r>', 'index:<i>' or 'best_so_far'")


def lineage(generation: int, parent: dict | None, pseudo: str | None, labels: str = "labeled",
            labeled_share: float | None = None) -> dict:
    """Where a model comes from: its generation, its initialisation (from scratch, or a parent
    model's weights), its label source: "L" the labeled ground truth (with ALDT's copies),
    "L (all)" every training image's ground truth (FDT), "L+P" that pooled with pseudo-labels,
    "P" pseudo-labels only, "L:0.25+P:0.75" a fixed share of each in every batch; and its path,
    the letters (L, P, M for a mix) of the stages from its first ancestor trained from scratch
    after gen0 (a parent's path plus its own letter; gen0's is empty)."""
    source = "L" if labels == "labeled" else "L (all)"
    share = labeled_share
    if pseudo and share is not None:
        source = {1: source, 0: "P"}.get(share, f"{source}:{share:g}+P:{1 - share:g}")
    elif pseudo:
        source += "+P"
    letter = path_letter(share, bool(pseudo)) if generation > 0 else ""
    return {"generation": generation, "init": "parent" if parent else "scratch",
            "parent": parent["model_id"] if parent else "", "parent_checkpoint": parent["checkpoint"] if parent else "",
            "label_source": source, "path": (parent["path"] if parent else "") + letter}
