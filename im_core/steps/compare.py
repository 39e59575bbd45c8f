"""One table of methods x generations: the best-on-dev model's dev, val and test mIoU (data-set
level and per image) and path, mean and standard deviation over seeds, the paired difference
(same seed) of its test mIoU to LDT and to a reference method with a 95 % interval, the budget
spent to reach it, the generation the development set chooses, and a plot of it.

A run is one method with one seed: its generations' metrics tables (gen0 first). Baselines
(FDT, LDT, ALDT, ...) have gen0 only; self-training methods list their start's gen0 as theirs.
The budget of a row is what every model of its generations up to this one cost (image-steps,
evaluate.model_budget), gen0 and the teachers included.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import atomic_output
from ..methods.presets import BASELINES, LABELS

SCORES = ("val_miou", "val_miou_per_image", "test_miou", "test_miou_per_image")
# per generation, not per model: the same in every row of a metrics table
GENERATION_STATS = ("im_fraction", "pseudo_accuracy", "pseudo_coverage")
# columns of newer metrics tables (older ones lack them: empty in the comparison)
OPTIONAL_STATS = ("im_error_recall",)
BUDGET = ("image_steps",)
BASELINE = "ldt"


def parse_run(text: str) -> tuple[str, int, list[str]]:
    """'METHOD:SEED=gen0.csv,gen1.csv' -> (method, seed, files)."""
    head, _, files = text.partition("=")
    method, _, seed = head.rpartition(":")
    if not method or not seed.lstrip("-").isdigit() or not files:
        raise InputError(f"--runs {text!r}: expected METHOD:SEED=gen0.csv,gen1.csv,...")
    return method, int(seed), [f for f in files.split(",") if f]


def run_rows(method: str, seed: int, files: list[str]) -> list[dict]:
    """One row per generation: the rank-1 (best on the development set) model's scores and path,
    the mean test mIoU of all the generation's models, and the pseudo-label statistics; `chosen`
    marks the generation whose best model has the best dev mIoU of the run (after gen0 where
    there are later generations; GIST/RIST's result)."""
    rows = []
    for table_file in files:
        try:
            table = pd.read_csv(table_file)
        except (OSError, pd.errors.ParserError) as e:
            raise InputError(f"{table_file}: cannot read this metrics table ({e})") from e
        missing = [c for c in ("generation", "rank", *SCORES, *GENERATION_STATS) if c not in table.columns]
        if missing:
            raise InputError(f"{table_file}: not a generation metrics table; missing columns {missing}")
        best = table.sort_values("rank").iloc[0]
        row = {"method": method, "seed": seed, "generation": int(best["generation"]), "models": len(table),
               **{k: float(best[k]) for k in SCORES}, "test_miou_models_mean": float(table["test_miou"].mean())}
        row.update({k: float(best[k]) for k in GENERATION_STATS})
        row.update({k: float(best.get(k, np.nan)) for k in OPTIONAL_STATS})
        row.update({k: float(table[k].sum(min_count=1)) if k in table else np.nan for k in BUDGET})
        path = best.get("path", "")
        row.update(dev_miou=float(best.get("dev_miou", best["val_miou"])), path="" if pd.isna(path) else str(path))
        # the best model's per-image test confusions (written beside the table; older tables have none)
        confusions = os.path.join(os.path.dirname(table_file), "test_confusions.zarr")
        row.update(best_model=str(best.get("model_id", "")), confusions=confusions if os.path.exists(confusions) else "")
        row["numeric_paths"] = sorted(set(table["numeric_path"].dropna().astype(str)) - {""}) if "numeric_path" in table else []
        rows.append(row)
    for k in BUDGET:  # a generation's budget includes the generations before it (its teachers, gen0)
        running = 0.0
        for r in rows:
            running += r[k]
            r[k] = running
    candidates = [r for r in rows if r["generation"] > 0] or rows
    chosen = max(candidates, key=lambda r: (r["dev_miou"], -r["generation"]))
    for r in rows:
        r["chosen"] = int(r is chosen)
    return rows


def paired_difference(differences: list[float]) -> dict:
    """Mean of per-seed differences, the half-width of its 95 % t-interval (nan with one seed)
    and whether the interval excludes 0 (`resolved`)."""
    d = np.asarray(differences, float)
    if len(d) == 0:
        return {"mean": np.nan, "ci95": np.nan, "resolved": False}
    if len(d) == 1:
        return {"mean": float(d[0]), "ci95": np.nan, "resolved": False}
    from scipy.stats import t
    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"mean": float(d.mean()), "ci95": half, "resolved": bool(abs(d.mean()) > half)}


BOOTSTRAP_DRAWS = 2000


def bootstrap_difference(a: np.ndarray, b: np.ndarray, multilabel: bool, draws: int = BOOTSTRAP_DRAWS,
                         seed: int = 0) -> dict:
    """The test-mIoU difference of two models on the same test images from their per-image
    confusions (N x K x c x c each), with a 95 % percentile interval over `draws` resamples of
    the images (the same resample for both: paired); resolved where the interval excludes 0."""
    from ..metrics import miou_of
    if len(a) != len(b):
        raise InputError(f"per-image confusions of {len(a)} and {len(b)} test images cannot be paired")
    rng = np.random.default_rng(seed)
    diffs = np.empty(draws)
    for i in range(draws):
        pick = rng.integers(0, len(a), len(a))
        diffs[i] = miou_of(a[pick].sum(0), multilabel) - miou_of(b[pick].sum(0), multilabel)
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    mean = miou_of(a.sum(0), multilabel) - miou_of(b.sum(0), multilabel)
    return {"mean": float(mean), "ci95": float((high - low) / 2), "resolved": bool(low > 0 or high < 0),
            "over": "images"}


def _confusions(row: pd.Series) -> tuple[np.ndarray, bool] | None:
    """The row's best model's per-image test confusions and whether they are multi-label."""
    if not row.get("confusions"):
        return None
    from ..io import open_store
    store = open_store(row["confusions"])
    if row["best_model"] not in store:
        return None
    return store[row["best_model"]][:], bool(store.attrs["multilabel"])


def differences_to(per_run: pd.DataFrame, reference: str, column: str = "test_miou") -> dict[tuple[str, int], dict]:
    """(method, generation) -> its paired difference to `reference` over the seeds both ran: at
    the same generation where the reference has it, else the reference's last (a baseline's
    gen0); a row with gen0 only (a baseline) against the reference's last generation."""
    ref = per_run[per_run["method"] == reference]
    if ref.empty:
        return {}
    last = ref.groupby("seed")["generation"].max()
    one_generation = per_run.groupby("method")["generation"].max() == 0
    by_key = {(int(r["seed"]), int(r["generation"])): r for _, r in ref.iterrows()}
    out = {}
    for (method, generation), group in per_run.groupby(["method", "generation"], sort=False):
        diffs, pairs = [], []
        for _, r in group.iterrows():
            seed = int(r["seed"])
            if seed not in last.index:
                continue
            same = (seed, generation) in by_key and not one_generation[method]
            g = generation if same else int(last[seed])
            diffs.append(r[column] - by_key[(seed, g)][column])
            pairs.append((r, by_key[(seed, g)]))
        out[(method, generation)] = paired_difference(diffs) | {"over": "seeds"}
        if len(pairs) == 1:  # one seed: the interval comes from resampling the test images instead
            a, b = (_confusions(row) for row in pairs[0])
            if a is not None and b is not None:
                out[(method, generation)] = bootstrap_difference(a[0], b[0], a[1])
    return out


def comparison_table(runs: list[tuple[str, int, list[str]]], reference: str | None = None) -> pd.DataFrame:
    """Methods x generations, each value the mean over seeds with its standard deviation
    (sample std; empty with one seed); the paired test-mIoU differences to LDT and to
    `reference` (diff_<method>, its 95 % interval diff_<method>_ci95 and whether that excludes
    0, diff_<method>_resolved); the budget (mean over seeds)."""
    per_run = pd.DataFrame([r for run in runs for r in run_rows(*run)])
    numeric_path = one_numeric_path(per_run)
    values = ["dev_miou", *SCORES, "test_miou_models_mean", *GENERATION_STATS, *OPTIONAL_STATS, *BUDGET]
    references = list(dict.fromkeys(r for r in (BASELINE, reference) if r))
    diffs = {r: differences_to(per_run, r) for r in references}
    order = {m: i for i, m in enumerate(dict.fromkeys(m for m, _, _ in runs))}
    out = []
    for (method, generation), group in per_run.groupby(["method", "generation"], sort=False):
        row = {"method": method, "label": LABELS.get(method, method), "generation": generation,
               "seeds": group["seed"].nunique(), "models": int(group["models"].iloc[0]),
               # the best model's path per seed, and in how many seeds the dev set chooses this generation
               "path": "/".join(group["path"]) if group["path"].str.len().any() else "", "chosen": int(group["chosen"].sum()),
               "numeric_path": numeric_path}
        for v in values:
            row[v] = group[v].mean()
            row[f"{v}_std"] = group[v].std(ddof=1) if len(group) > 1 else np.nan
        for r in references:
            d = diffs[r].get((method, generation))
            if d is not None and method != r:
                row.update({f"diff_{r}": d["mean"], f"diff_{r}_ci95": d["ci95"], f"diff_{r}_resolved": d["resolved"],
                            f"diff_{r}_over": d["over"]})
        out.append(row)
    table = pd.DataFrame(out)
    table["_order"] = table["method"].map(order)
    return table.sort_values(["_order", "generation"]).drop(columns="_order").reset_index(drop=True)


def one_numeric_path(per_run: pd.DataFrame) -> str:
    """The one numerical path every model of the comparison was trained on (metrics.csv's
    numeric_path; tables from before it was recorded have none). Models trained on different
    paths differ by more than some of the differences a table shows, so a mix is refused."""
    used: dict[str, list[str]] = {}
    for _, r in per_run.iterrows():
        for path in r["numeric_paths"]:
            used.setdefault(path, []).append(f"{r['method']} seed {r['seed']} gen{r['generation']}")
    if len(used) > 1:
        listed = "; ".join(f"{path}: {', '.join(rows[:3])}{' ...' if len(rows) > 3 else ''}" for path, rows in used.items())
        raise InputError(f"the comparison's models were trained on different numerical paths ({listed}); their "
                         "differences would mix with the methods': rerun them on one path (pin compute.numeric_path "
                         "and compute.train_threads, then rerun the training jobs of the other path)")
    return next(iter(used), "")


def _cell(row: pd.Series, column: str) -> str:
    """'mean' or 'mean ± std' (several seeds) of `column` in a table row; empty where there is none."""
    mean, std = row[column], row[f"{column}_std"]
    if pd.isna(mean):
        return ""
    if column in BUDGET:  # counts and seconds: whole numbers
        return f"{mean:,.0f}" if pd.isna(std) or std == 0 else f"{mean:,.0f} ± {std:,.0f}"
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def format_table(table: pd.DataFrame, columns: tuple[str, ...] = ("test_miou", "test_miou_per_image", "val_miou",
                                                                    "im_fraction")) -> str:
    """Markdown: one line per method and generation, 'mean ± std' where there are several seeds."""
    lines = ["| method | gen | seeds | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        lines.append(f"| {row['label']} | {row['generation']} | {row['seeds']} | "
                     + " | ".join(_cell(row, c) for c in columns) + " |")
    return "\n".join(lines)


def format_by_generation(table: pd.DataFrame, column: str) -> str:
    """Markdown: one line per method, `column` at each generation (baselines fill gen0 only)."""
    gens = sorted(table["generation"].unique())
    lines = ["| method | " + " | ".join(f"gen{g}" for g in gens) + " |", "|---|" + "---|" * len(gens)]
    for label, rows in table.groupby("label", sort=False):
        cells = {row["generation"]: _cell(row, column) for _, row in rows.iterrows()}
        lines.append(f"| {label} | " + " | ".join(cells.get(g, "") for g in gens) + " |")
    return "\n".join(lines)


def plot_comparison(table: pd.DataFrame, out: str | os.PathLike, title: str = "") -> None:
    """Test mIoU by generation per method (baselines as horizontal lines), IM fraction beside it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_miou, ax_im) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    last = max(1, int(table["generation"].max()))
    baseline_styles = {"fdt": ("black", ":"), "ldt": ("grey", "--"), "aldt": ("tab:brown", "--")}
    for method, rows in table.groupby("method", sort=False):
        label = rows["label"].iloc[0]
        gens, mean, std = rows["generation"].to_numpy(), rows["test_miou"].to_numpy(), rows["test_miou_std"].to_numpy()
        if method in BASELINES or len(rows) == 1:
            colour, style = baseline_styles.get(method, ("grey", "-."))
            ax_miou.hlines(mean[0], 0, last, colors=colour, linestyles=style, label=label)
            continue
        line, = ax_miou.plot(gens, mean, "o-", label=label)
        if not np.all(np.isnan(std)):
            ax_miou.fill_between(gens, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        im = rows[rows["generation"] > 0]
        if im["im_fraction"].notna().any():
            ax_im.plot(im["generation"], im["im_fraction"], "o-", color=line.get_color(), label=label)
    ax_miou.set_title("test mIoU of the best-on-val model" + (" (mean ± std over seeds)" if table["seeds"].max() > 1 else ""))
    ax_im.set_title("IM fraction (masked pixels of the pseudo-labels)")
    for ax in (ax_miou, ax_im):
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_miou.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if ax_im.lines:
        ax_im.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_comparison(runs: list[tuple[str, int, list[str]]], out: str, plot: str | None = None,
                     title: str = "", reference: str | None = None) -> pd.DataFrame:
    table = comparison_table(runs, reference)
    with atomic_output(out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    if plot:
        plot_comparison(table, plot, title)
    return table
