"""Pictures of what is in the stores: palette-coloured labels with the IM in grey, the
per-generation preview montage, the generation plots, and a renderer for any store."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from ..io import atomic_output, open_store

IM_GREY = (128, 128, 128)
UNKNOWN_WHITE = (255, 255, 255)


def colorize(labels: np.ndarray, palette: list, ignore_index: int = 255, im: np.ndarray | None = None,
             im_class_index: int | None = None) -> np.ndarray:
    """H x W class indices (or C x H x W multi-label 0/1) -> H x W x 3 uint8.

    Classes take their palette colour (multi-label: a pixel with several labels shows their
    colours as diagonal stripes, one without any label is black); pixels inside the IM, or labeled with the extra IM
    class, are grey; other ignored pixels (not annotated) are white."""
    pal = np.asarray(palette, dtype=np.uint8)
    if labels.ndim == 3:  # multi-label: overlapping labels as diagonal stripes of their colours
        active = labels == 1
        yy, xx = np.indices(labels.shape[1:])
        stripe = ((yy + xx) // 2) % np.maximum(active.sum(0), 1)
        shown = active & (np.cumsum(active, 0) - 1 == stripe)  # one active label per pixel, in turn
        rgb = np.einsum("chw,cd->hwd", shown.astype(np.int32), pal.astype(np.int32)).astype(np.uint8)
        unknown = (labels == ignore_index).any(0)
    else:
        rgb = pal[np.clip(labels, 0, len(pal) - 1)]
        unknown = labels == ignore_index
        if im_class_index is not None:
            unknown = unknown & ~(labels == im_class_index)
            rgb = np.where((labels == im_class_index)[..., None], np.uint8(IM_GREY), rgb)
    rgb = np.where(unknown[..., None], np.uint8(UNKNOWN_WHITE), rgb)
    if im is not None:
        rgb = np.where(im[..., None], np.uint8(IM_GREY), rgb)
    return rgb.astype(np.uint8)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 1 grayscale or H x W x 3 -> H x W x 3."""
    return np.repeat(image, 3, -1) if image.shape[-1] == 1 else image


def _upscale(tile: np.ndarray, min_side: int) -> np.ndarray:
    factor = max(1, int(np.ceil(min_side / min(tile.shape[:2]))))
    return np.repeat(np.repeat(tile, factor, 0), factor, 1)


def _legend(class_names: list[str], palette: list, width: int) -> np.ndarray:
    entries = list(zip(class_names, [tuple(c) for c in palette])) + [("IM (teachers disagree)", IM_GREY),
                                                                     ("not annotated", UNKNOWN_WHITE)]
    per_row = max(1, width // 170)
    rows = int(np.ceil(len(entries) / per_row))
    img = Image.new("RGB", (width, 18 * rows + 6), (30, 30, 30))
    draw = ImageDraw.Draw(img)
    for k, (name, colour) in enumerate(entries):
        x, y = 6 + (k % per_row) * 170, 4 + (k // per_row) * 18
        draw.rectangle([x, y, x + 12, y + 12], fill=colour, outline=(200, 200, 200))
        draw.text((x + 18, y), name[:24], fill=(230, 230, 230))
    return np.asarray(img)


def preview_montage(pseudo: str | os.PathLike, data: str | os.PathLike, count: int = 6, min_side: int = 96) -> np.ndarray:
    """One row per unlabeled image: input | masked input | pseudo-label (IM grey) | ground truth."""
    ps, ds = open_store(pseudo), open_store(data)
    n = ps["images"].shape[0]
    picks = np.linspace(0, n - 1, min(count, n)).round().astype(int) if n else np.array([], int)
    index = ps["index"][:]
    palette, ignore = ps.attrs["palette"], ps.attrs["ignore_index"]
    im_class = ps.attrs.get("im_class_index")
    rows = []
    for i in picks:
        j = int(index[i])
        original = as_rgb(ds["images"][j])
        label = colorize(ps["labels"][i], palette, ignore, ps["im"][i], im_class)
        truth = colorize(ds["masks"][j], palette, ignore) if ds["has_mask"][j] else np.full_like(original, 60)
        tiles = [_upscale(t, min_side) for t in (original, as_rgb(ps["images"][i]), label, truth)]
        gap = np.full((tiles[0].shape[0], 4, 3), 30, np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, gap)][:-1], 1))
    header = _header(["input", "masked input", "pseudo-label", "ground truth"], rows[0].shape[1] if rows else 400,
                     rows[0].shape[1] // 4 if rows else 100)
    spacer = np.full((4, header.shape[1], 3), 30, np.uint8)
    body = [x for r in rows for x in (r, spacer)]
    legend = _legend(ps.attrs["class_names"], palette, header.shape[1])
    return np.concatenate([header, *body, legend], 0)


def _header(titles: list[str], width: int, column: int) -> np.ndarray:
    img = Image.new("RGB", (width, 18), (30, 30, 30))
    draw = ImageDraw.Draw(img)
    for k, title in enumerate(titles):
        draw.text((k * column + 4, 3), title, fill=(230, 230, 230))
    return np.asarray(img)


def save_png(rgb: np.ndarray, out: str | os.PathLike) -> None:
    with atomic_output(out) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def write_preview(pseudo: str, data: str, out: str, count: int = 6) -> dict:
    rgb = preview_montage(pseudo, data, count)
    save_png(rgb, out)
    return {"size": list(rgb.shape[:2])}


def render(store: str, out: str, index: int | None = None, array: str | None = None, count: int = 16) -> dict:
    """Render a data, predictions or pseudo-label store (or one image of it) to PNG."""
    st = open_store(store)
    kind = st.attrs.get("kind", "")
    palette, ignore = st.attrs.get("palette"), st.attrs.get("ignore_index", 255)
    if palette is None:
        raise InputError(f"{store}: no palette attribute; is this an im_core store?")
    if kind == "im_core.predictions":
        split = array or st.attrs["splits"][0]
        labels = st[f"{split}/labels"]
        tiles = lambda i: [colorize(labels[i], palette, ignore)]  # noqa: E731
        n = labels.shape[0]
    elif kind == "im_core.pseudo_labels":
        tiles = lambda i: [as_rgb(st["images"][i]), colorize(st["labels"][i], palette, ignore, st["im"][i],  # noqa: E731
                                                    st.attrs.get("im_class_index"))]
        n = st["images"].shape[0]
    elif kind == "im_core.data":
        tiles = lambda i: [as_rgb(st["images"][i]), colorize(st["masks"][i], palette, ignore)]  # noqa: E731
        n = st["images"].shape[0]
    else:
        raise InputError(f"{store}: unknown store kind {kind!r}")
    if index is not None and not 0 <= index < n:
        raise InputError(f"--index {index}: {store} holds images 0..{n - 1}")
    picks = [index] if index is not None else list(range(min(count, n)))
    rows = [np.concatenate(tiles(i), 1) for i in picks]
    rgb = np.concatenate(rows, 0)
    save_png(_upscale(rgb, 64) if index is not None else rgb, out)
    return {"images": picks, "size": list(rgb.shape[:2])}


def generation_series(files: list[str]) -> dict[str, list]:
    """What the generations plot shows of one experiment (its metrics tables, gen0 first): per
    generation the test mIoU of the model ranked best on validation and the models' mean and
    (population) std; from generation 1 the IM fraction and the pseudo-labels' accuracy and
    coverage (the same for every model of a generation that shares its store: the first row's)."""
    import pandas as pd
    frames = [pd.read_csv(f) for f in files]
    gens = [int(t["generation"].iloc[0]) for t in frames]
    later = [(g, t.iloc[0]) for g, t in zip(gens, frames) if g > 0]
    return {"generation": gens,
            "best": [float(t.sort_values("rank")["test_miou"].iloc[0]) for t in frames],
            "mean": [float(t["test_miou"].mean()) for t in frames],
            "std": [float(t["test_miou"].std(ddof=0)) for t in frames],
            "later": [g for g, _ in later],
            "im_fraction": [float(r["im_fraction"]) for _, r in later],
            "pseudo_accuracy": [float(r["pseudo_accuracy"]) for _, r in later],
            "pseudo_coverage": [float(r["pseudo_coverage"]) for _, r in later]}


def plot_generations(tables: dict[str, list[str]], out: str | os.PathLike) -> dict[str, dict]:
    """Per experiment: test mIoU (best-on-val model, and mean ± std) by generation; IM fraction;
    pseudo-label accuracy and coverage. Returns what it plotted (`generation_series` per experiment)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    plotted = {}
    for name, files in tables.items():
        s = plotted[name] = generation_series(files)
        mean, std = np.array(s["mean"]), np.array(s["std"])
        line, = axes[0].plot(s["generation"], s["best"], "o-", label=f"{name} (best on val)")
        axes[0].fill_between(s["generation"], mean - std, mean + std, color=line.get_color(), alpha=0.15)
        axes[0].plot(s["generation"], mean, "--", color=line.get_color(), label=f"{name} (mean ± std)")
        if s["later"]:
            axes[1].plot(s["later"], s["im_fraction"], "o-", color=line.get_color(), label=name)
            axes[2].plot(s["later"], s["pseudo_accuracy"], "o-", color=line.get_color(), label=f"{name} accuracy")
            axes[2].plot(s["later"], s["pseudo_coverage"], "s:", color=line.get_color(), label=f"{name} coverage")
    for ax, title in zip(axes, ("test mIoU", "IM fraction (masked pixels)", "pseudo-labels vs hidden truth")):
        ax.set_title(title)
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return plotted


PATH_COLOURS = {"L": "tab:blue", "P": "tab:orange", "M": "tab:green"}


def _lineage_rows(tables: list[str]) -> dict[tuple[int, str], dict]:
    """(generation, model id) -> the model's row; older tables lack dev_miou (-> val_miou) and path."""
    import pandas as pd

    rows = {}
    for f in tables:
        t = pd.read_csv(f)
        t["dev_miou"] = t["dev_miou"] if "dev_miou" in t else t["val_miou"]
        for column in ("parent", "path"):
            t[column] = t[column].astype(object).fillna("").astype(str) if column in t else ""
        rows.update({(int(r["generation"]), r["model_id"]): r for r in t.to_dict("records")})
    return rows


def plot_paths(tables: list[str], out: str | os.PathLike, title: str = "") -> dict:
    """Every model by stage on the development and the test set, joined to its parent, the line
    coloured by the model's own letter; the best model on the development set over the stages
    >= 1 (ties: the earlier stage) starred, with its whole ancestry in bold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = _lineage_rows(tables)
    parent = lambda r: rows.get((r["generation"] - 1, r["parent"])) if r["parent"] else None  # noqa: E731
    pool = [r for r in rows.values() if r["generation"] >= 1] or list(rows.values())
    chosen = min(pool, key=lambda r: (-r["dev_miou"], r["generation"], r["rank"]))
    ancestry, r = [], chosen
    while r is not None:
        ancestry.append(r)
        r = parent(r)
    label = f"chosen {chosen['model_id']}: stage {chosen['generation']}, path {chosen['path'] or '-'}"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, column, name in zip(axes, ("dev_miou", "test_miou"), ("development", "test")):
        for r in rows.values():
            p, bold = parent(r), any(r is a for a in ancestry)
            if p is not None:
                ax.plot([p["generation"], r["generation"]], [p[column], r[column]], "-", lw=3 if bold else 1,
                        color=PATH_COLOURS.get(r["path"][-1:], "grey"), alpha=1 if bold else 0.5, zorder=4 if bold else 2)
        ax.scatter([r["generation"] for r in rows.values()], [r[column] for r in rows.values()], s=14, c="k", zorder=3)
        ax.scatter([chosen["generation"]], [chosen[column]], marker="*", s=260, c="gold", edgecolors="k", zorder=5)
        ax.set(title=f"{name} mIoU", xlabel="stage (generation)", ylabel="mIoU")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=c, label=k) for k, c in PATH_COLOURS.items()]
    handles.append(Line2D([], [], marker="*", ls="", ms=14, mfc="gold", mec="k", label=label))
    axes[0].legend(handles=handles, fontsize=7)
    fig.suptitle(f"{title}: {label}" if title else label, fontsize=10)
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return {"chosen": chosen["model_id"], "generation": int(chosen["generation"]), "path": chosen["path"],
            "dev_miou": float(chosen["dev_miou"]), "test_miou": float(chosen["test_miou"])}
