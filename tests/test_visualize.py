import numpy as np
import pytest
from PIL import Image

from im_core.cli import main as cli
from im_core.config import resolve_dataset
from im_core.data.store import prepare
from im_core.data.images import nearest_palette_index
from im_core.io import atomic_output, open_store, write_array
from im_core.steps.visualize import IM_GREY, UNKNOWN_WHITE, colorize, plot_generations, plot_paths, preview_montage

PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]]


def test_palette_colours_map_back_to_their_classes():
    labels = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    rgb = colorize(labels, PALETTE)
    assert (nearest_palette_index(rgb, PALETTE) == labels).all()


def test_im_is_grey_and_unannotated_is_white():
    labels = np.array([[1, 255, 255, 4]], np.uint8)
    im = np.array([[False, True, False, False]])
    rgb = colorize(labels, PALETTE, ignore_index=255, im=im, im_class_index=4)
    assert tuple(rgb[0, 0]) == tuple(PALETTE[1])
    assert tuple(rgb[0, 1]) == IM_GREY      # inside the IM
    assert tuple(rgb[0, 2]) == UNKNOWN_WHITE  # ignored, not IM
    assert tuple(rgb[0, 3]) == IM_GREY      # the extra IM class


def test_multilabel_overlaps_show_every_label_as_stripes():
    labels = np.zeros((2, 8, 8), np.uint8)
    labels[0, :, :4] = 1          # label 0 on the left half
    labels[1, :, 2:] = 1          # label 1 from column 2: columns 2-3 hold both
    rgb = colorize(labels, [[200, 0, 0], [0, 0, 200]])
    assert {tuple(c) for c in rgb[:, :2].reshape(-1, 3)} == {(200, 0, 0)}
    assert {tuple(c) for c in rgb[:, 4:].reshape(-1, 3)} == {(0, 0, 200)}
    assert {tuple(c) for c in rgb[:, 2:4].reshape(-1, 3)} == {(200, 0, 0), (0, 0, 200)}  # both, striped
    assert tuple(colorize(np.zeros((2, 1, 1), np.uint8), [[200, 0, 0], [0, 0, 200]])[0, 0]) == (0, 0, 0)


@pytest.fixture()
def stores(tmp_path):
    cfg = resolve_dataset("t", {"source": "demo", "n_images": 20, "size": [16, 16], "seed": 0, "ignore_index": 255,
                                "labeled_fraction": 0.2, "val_fraction": 0.2, "test_fraction": 0.2})
    prepare(cfg, tmp_path / "data.zarr")
    data = open_store(tmp_path / "data.zarr")
    idx = np.flatnonzero(data["split"][:] == 1)
    labels = data["masks"].get_orthogonal_selection((idx,))
    im = np.zeros_like(labels, bool)
    im[:, :4] = True
    with atomic_output(tmp_path / "pseudo.zarr") as tmp:
        g = open_store(tmp, mode="w")
        write_array(g, "images", data["images"].get_orthogonal_selection((idx,)), ("image", "y", "x", "channel"))
        write_array(g, "labels", np.where(im, 255, labels).astype(np.uint8), ("image", "y", "x"))
        write_array(g, "im", im, ("image", "y", "x"))
        write_array(g, "index", idx, ("image",))
        g.attrs.update({"kind": "im_core.pseudo_labels", "palette": data.attrs["palette"], "ignore_index": 255,
                        "class_names": data.attrs["class_names"], "im_class_index": None})
    return tmp_path


def test_preview_montage_size_and_content(stores):
    rgb = preview_montage(stores / "pseudo.zarr", stores / "data.zarr", count=3, min_side=32)
    # 4 columns of 32 px plus 3 gaps of 4 px; 3 rows of 32 px, each followed by a 4 px spacer, plus header and legend
    assert rgb.shape[1] == 4 * 32 + 3 * 4
    assert rgb.shape[0] > 18 + 3 * 36
    first_row = rgb[18:18 + 32]
    label_tile = first_row[:, 2 * 36:2 * 36 + 32]
    assert (label_tile[:8] == IM_GREY).all()  # the top 4 pixel rows are IM, upscaled x2


def test_render_cli_writes_png_of_store_and_of_one_index(stores, tmp_path):
    assert cli(["render", str(stores / "data.zarr"), "--out", str(tmp_path / "all.png"), "--count", "3"]) == 0
    assert Image.open(tmp_path / "all.png").size == (32, 48)  # image | mask side by side, 3 rows
    assert cli(["render", str(stores / "pseudo.zarr"), "--index", "1", "--out", str(tmp_path / "one.png")]) == 0
    assert Image.open(tmp_path / "one.png").size == (128, 64)  # upscaled x4 to at least 64 px
    assert cli(["render", str(stores / "data.zarr"), "--index", "99", "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()


def test_plot_generations_shows_the_best_on_val_the_mean_and_the_pseudo_label_statistics(tmp_path):
    import pandas as pd
    files = []
    for g in range(3):  # the best on val (rank 1) is listed second: the plot must take it by rank
        t = pd.DataFrame({"generation": [g, g], "model_id": ["b", "a"], "rank": [2, 1], "test_miou": [0.3, 0.4 + g / 10],
                          "im_fraction": [0.2 - g / 20] * 2, "pseudo_accuracy": [0.9] * 2, "pseudo_coverage": [0.8] * 2})
        files.append(str(tmp_path / f"gen{g}.csv"))
        t.to_csv(files[-1], index=False)
    plotted = plot_generations({"x": files}, tmp_path / "plot.png")["x"]
    assert plotted["generation"] == [0, 1, 2] and plotted["best"] == pytest.approx([0.4, 0.5, 0.6])
    assert plotted["mean"] == pytest.approx([0.35, 0.4, 0.45]) and plotted["std"] == pytest.approx([0.05, 0.1, 0.15])
    assert plotted["later"] == [1, 2] and plotted["im_fraction"] == pytest.approx([0.15, 0.1])  # gen0 has none
    assert plotted["pseudo_accuracy"] == [0.9, 0.9] and plotted["pseudo_coverage"] == [0.8, 0.8]
    png = Image.open(tmp_path / "plot.png")
    assert png.size == (1300, 380) and len(np.unique(np.asarray(png.convert("RGB")).reshape(-1, 3), axis=0)) > 3


def test_plot_paths_stars_the_best_on_the_development_set_after_gen0(tmp_path):
    import pandas as pd
    gens = [  # gen0 as an older table: no dev_miou (val_miou stands in), no path; its best is not a candidate
        {"model_id": ["gen0_m0", "gen0_m1"], "parent": ["", ""], "val_miou": [0.9, 0.4], "test_miou": [0.5, 0.4]},
        {"model_id": ["gen1_m0", "gen1_m1"], "parent": ["gen0_m0", "gen0_m0"], "path": ["L", "P"],
         "dev_miou": [0.55, 0.6], "val_miou": [0.5, 0.6], "test_miou": [0.52, 0.58]},
        {"model_id": [f"gen2_m{i}" for i in range(4)], "parent": ["gen1_m0", "gen1_m0", "gen1_m1", "gen1_m1"],
         "path": ["LL", "LP", "PL", "PM"], "dev_miou": [0.5, 0.58, 0.7, 0.65], "val_miou": [0.5, 0.6, 0.6, 0.6],
         "test_miou": [0.5, 0.55, 0.62, 0.66]},
    ]
    files = []
    for g, columns in enumerate(gens):
        t = pd.DataFrame({"generation": g, **columns})
        t["rank"] = t["dev_miou" if "dev_miou" in t else "val_miou"].rank(ascending=False).astype(int)
        files.append(str(tmp_path / f"gen{g}.csv"))
        t.to_csv(files[-1], index=False)
    summary = plot_paths(files, tmp_path / "paths.png", title="x")
    assert summary == {"chosen": "gen2_m2", "generation": 2, "path": "PL", "dev_miou": 0.7, "test_miou": 0.62}
    assert (tmp_path / "paths.png").stat().st_size > 0
    with Image.open(tmp_path / "paths.png") as png:
        assert png.size == (1100, 400)
    assert cli(["plot-paths", "--tables", *files, "--out", str(tmp_path / "cli.png"), "--title", "x"]) == 0
    assert (tmp_path / "cli.png").stat().st_size > 0
