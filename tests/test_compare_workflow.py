"""End to end: a tiny comparison of every method through Snakemake, and a two-seed one."""
import json

import pandas as pd
import pytest
import yaml
import zarr

from im_core.config import load_schema
from test_workflow import snakemake

TINY_DATA = {"source": "demo", "n_images": 50, "size": [32, 32], "seed": 1,
             "labeled_fraction": 0.2, "val_fraction": 0.15, "test_fraction": 0.15}
CONFIG = {
    "datasets": {"tiny": TINY_DATA, "tiny2": dict(TINY_DATA, seed=2)},
    "experiments": {name: {
        "dataset": name, "generations": 1, "seed": 0, "model": {"alpha": 0.25},
        "train": {"batch_size": 8, "steps": 6, "eval_every": 3, "predict_batch_size": 32},
        "stage0": {"models": 2}, "students": {"models": 2},
        "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2},
    } for name in ("tiny", "tiny2")},
    "comparisons": {
        "tiny": {"base": "tiny", "generations": 1, "seeds": [0]},
        "tiny2": {"base": "tiny2", "generations": 1, "seeds": [0, 1], "methods": ["ldt", "im"],
                  "settings": {"train": {"steps": 4}}, "experiments": ["tiny2_dilated"],
                  # ranked by another metric, the variant selects its teachers among the shared gen0 models itself
                  "variants": {"im_class": {"method": "im", "settings": {"pseudo_labels": {"label_mode": "im_class"},
                                                                         "selection": {"metric": "miou_per_image"}}}}},
    },
}
# an IM variant of the user's own, starting from the comparison's LDT models, as an extra row
CONFIG["experiments"]["tiny2_dilated"] = dict(
    CONFIG["experiments"]["tiny2"], train=dict(CONFIG["experiments"]["tiny2"]["train"], steps=4),
    start_from="tiny2/compare/ldt/seed0", pseudo_labels={"teachers": 2, "dilate": 3})


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("compare")
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    run = snakemake(workdir, "results/tiny/compare.csv", "results/tiny2/compare.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return workdir


@pytest.mark.slow
def test_every_method_is_a_row_and_self_training_starts_from_its_baseline(compared):
    res = compared / "results" / "tiny"
    table = pd.read_csv(res / "compare.csv")
    rows = list(zip(table["method"], table["generation"]))
    baselines = [(m, 0) for m in ("fdt", "ldt", "ldt_plateau", "aldt")]
    assert rows[:4] == baselines
    default_methods = load_schema()["$defs"]["comparison"]["properties"]["methods"]["default"]  # the IM paper's
    for method in set(default_methods) - {"fdt", "ldt", "ldt_plateau", "aldt"}:
        assert (method, 0) in rows and (method, 1) in rows, method
    for col in ("val_miou", "val_miou_per_image", "test_miou", "test_miou_per_image", "test_miou_std", "im_fraction"):
        assert col in table.columns
    assert table["test_miou"].between(0, 1).all() and table["seeds"].eq(1).all()
    by = table.set_index(["method", "generation"])
    assert by.loc[("im", 0), "test_miou"] == by.loc[("ldt", 0), "test_miou"]  # the same gen0 models
    assert by.loc[("aim_plus", 0), "test_miou"] == by.loc[("aldt", 0), "test_miou"]
    assert 0 < by.loc[("im", 1), "im_fraction"] < 1 and pd.isna(by.loc[("model_ensemble", 1), "im_fraction"])
    assert (res / "compare.png").read_bytes()[:4] == b"\x89PNG"
    compare_dir = res / "compare"
    assert not (compare_dir / "im" / "seed0" / "gen0").exists()  # gen0 is trained once, under ldt
    for method, builder in (("model_ensemble", "model_ensemble"), ("input_ensemble", "input_ensemble"),
                            ("noisy_student", "best_teacher"), ("im_plus", "im"), ("aim_plus", "im")):
        store = zarr.open_group(str(compare_dir / method / "seed0" / "gen1" / "pseudo.zarr"), mode="r")
        assert store.attrs["builder"] == builder, method
    assert not (compare_dir / "consistency" / "seed0" / "gen1" / "pseudo.zarr").exists()
    settings = json.loads((compare_dir / "consistency" / "seed0" / "gen1" / "settings.json").read_text())
    assert settings["students"]["trainer"] == "consistency" and settings["experiment"] == "tiny/compare/consistency/seed0"
    log = (compared / "results" / "logs" / "tiny" / "compare" / "consistency" / "seed0" / "gen1" / "train_m0.log").read_text()
    assert "fine-tuning results/tiny/compare/ldt/seed0/gen0/models/" in log
    ldt0 = pd.read_csv(compare_dir / "ldt" / "seed0" / "gen0" / "metrics.csv")
    # LDT to its plateau: early stopping (patience 8 validations) within ten times gen0's 6 steps
    plateau = pd.read_csv(compare_dir / "ldt_plateau" / "seed0" / "gen0" / "metrics.csv")
    assert plateau["steps"].between(6, 60).all() and by.loc[("ldt_plateau", 0), "image_steps"] == 8 * plateau["steps"].sum()
    # the continued-training control continues each LDT model on the labeled images
    continued = pd.read_csv(compare_dir / "ldt_continued" / "seed0" / "gen1" / "metrics.csv")
    assert set(continued["init"]) == {"parent"} and set(continued["label_source"]) == {"L"}
    assert sorted(continued["parent"]) == sorted(ldt0["model_id"])
    consistency1 = pd.read_csv(compare_dir / "consistency" / "seed0" / "gen1" / "metrics.csv")
    assert set(consistency1["init"]) == {"parent"} and set(consistency1["label_source"]) == {"L"}
    assert set(consistency1["parent"]) == {ldt0.sort_values("rank")["model_id"].iloc[0]}  # gen0's best
    fdt0 = pd.read_csv(compare_dir / "fdt" / "seed0" / "gen0" / "metrics.csv")
    assert set(fdt0["label_source"]) == {"L (all)"}
    aldt_log = (compared / "results" / "logs" / "tiny" / "compare" / "aldt" / "seed0" / "gen0" / "train_m0.log").read_text()
    fdt_log = (compared / "results" / "logs" / "tiny" / "compare" / "fdt" / "seed0" / "gen0" / "train_m0.log").read_text()
    ldt_log = (compared / "results" / "logs" / "tiny" / "compare" / "ldt" / "seed0" / "gen0" / "train_m0.log").read_text()
    n_labeled = int(ldt_log.split(" training images (")[1].split(" labeled")[0])
    assert f"{10 * n_labeled} training images ({n_labeled} labeled)" in aldt_log
    assert f"training images ({n_labeled} labeled)" not in fdt_log


@pytest.mark.slow
def test_several_seeds_give_mean_and_std(compared):
    table = pd.read_csv(compared / "results" / "tiny2" / "compare.csv")
    rows = list(zip(table["method"], table["generation"]))
    assert rows == [("ldt", 0), ("im", 0), ("im", 1), ("im_class", 0), ("im_class", 1),
                    ("tiny2_dilated", 0), ("tiny2_dilated", 1)]
    for seed in (0, 1):  # a variant runs for every seed, from the same gen0 models, with its own settings
        store = zarr.open_group(str(compared / "results" / "tiny2" / "compare" / "im_class" / f"seed{seed}" / "gen1"
                                    / "pseudo.zarr"), mode="r")
        assert store.attrs["label_mode"] == "im_class" and store.attrs["im_class_index"] == 6
        own = json.loads((compared / "results" / "tiny2" / "compare" / "im_class" / f"seed{seed}" / "gen0"
                          / "selection.json").read_text())
        assert own["metric"] == "val_miou_per_image" and store.attrs["teachers"] == own["ranking"][:2]
        assert not (compared / "results" / "tiny2" / "compare" / "im" / f"seed{seed}" / "gen0").exists()
    several = table[table["method"] != "tiny2_dilated"]
    assert several["seeds"].eq(2).all() and several["test_miou_std"].notna().all()
    dilated = table[table["method"] == "tiny2_dilated"].set_index("generation")
    assert dilated.loc[0, "seeds"] == 1 and dilated.loc[0, "test_miou"] == pytest.approx(
        pd.read_csv(compared / "results" / "tiny2" / "compare" / "ldt" / "seed0" / "gen0" / "metrics.csv")
        .sort_values("rank")["test_miou"].iloc[0], abs=1e-4)
    assert (compared / "results" / "tiny2" / "compare" / "ldt" / "seed1" / "gen0" / "metrics.csv").exists()


@pytest.mark.slow
def test_comparison_rerun_does_nothing_and_unknown_comparison_is_named(compared):
    again = snakemake(compared, "-n", "results/tiny/compare.csv", "results/tiny2/compare.csv")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    cfg = yaml.safe_load((compared / "config.yaml").read_text())
    del cfg["comparisons"]["tiny2"]
    del cfg["experiments"]["tiny2_dilated"]  # it starts from the comparison's LDT models
    (compared / "config.yaml").write_text(yaml.safe_dump(cfg))
    try:
        out = snakemake(compared, "-n", "results/tiny2/compare.csv")
    finally:
        (compared / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    assert out.returncode != 0 and "config has no comparisons.tiny2" in out.stdout + out.stderr
