"""End to end: a tiny experiment through Snakemake (as a subprocess) to gen 2, then a no-op
rerun and a partial rerun after a setting that only affects gen 2 onward changes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
import zarr
from PIL import Image

from im_core.runtime.cpu import cpu_flags
from im_core.runtime.path_rule import describe, plan_cpu_path

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "default_experiments": ["tiny"],
    "datasets": {"tiny": {"source": "demo", "n_images": 60, "size": [32, 32], "seed": 1,
                          "labeled_fraction": 0.2, "val_fraction": 0.15, "test_fraction": 0.15}},
    "experiments": {"tiny": {
        "dataset": "tiny", "generations": 2, "seed": 0,
        "model": {"alpha": 0.25},
        "train": {"batch_size": 8, "steps": 12, "eval_every": 6, "predict_batch_size": 32},
        "stage0": {"models": 2}, "students": {"models": 2},
        "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2},
    }},
}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))
    run = snakemake(workdir, "results/tiny/gen2/metrics.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return workdir


@pytest.mark.slow
def test_outputs_of_every_generation(tiny_run):
    res = tiny_run / "results" / "tiny"
    data = zarr.open_group(str(res / "data.zarr"), mode="r")
    assert data["images"].shape[1:] == (32, 32, 3) and data.attrs["task"] == "multiclass"
    for g in range(3):
        table = pd.read_csv(res / f"gen{g}" / "metrics.csv")
        assert len(table) == 2 and set(table["generation"]) == {g}
        for col in ("model_id", "rank", "selected", "val_miou", "val_miou_per_image", "val_pixel_accuracy",
                    "test_miou", "test_miou_per_image", "test_pixel_accuracy", "test_iou_background",
                    "im_fraction", "pseudo_accuracy", "pseudo_coverage"):
            assert col in table.columns, col
        assert table["test_miou"].between(0, 1).all()
        assert set(table["selected"]) <= {"yes", "no"}
        assert set(table["init"]) == {"scratch"} and table["parent"].isna().all()
        assert set(table["label_source"]) == {"L" if g == 0 else "L+P"}
        sel = json.loads((res / f"gen{g}" / "selection.json").read_text())
        recorded = json.loads((res / f"gen{g}" / "settings.json").read_text())
        assert recorded["generation"] == g and recorded["pseudo_labels"]["teachers"] == 2
        assert len(sel["selected"]) == 2
        if g == 0:
            assert table["im_fraction"].isna().all()
        else:
            pseudo = zarr.open_group(str(res / f"gen{g}" / "pseudo.zarr"), mode="r")
            n = pseudo["images"].shape[0]
            assert pseudo["labels"].shape == (n, 32, 32) and pseudo["im"].shape == (n, 32, 32)
            previous = json.loads((res / f"gen{g - 1}" / "selection.json").read_text())
            assert pseudo.attrs["teachers"] == previous["selected"][:2]
            assert pseudo.attrs["label_mode"] == "ignore" and pseudo.attrs["generation"] == g
            im = pseudo["im"][:]
            assert (pseudo["labels"][:][im] == 255).all() and (pseudo["images"][:][im] == 0).all()
            assert table["im_fraction"].iloc[0] == pytest.approx(float(im.mean()), abs=1e-4)
            assert table["pseudo_coverage"].between(0, 1).all() and table["pseudo_accuracy"].between(0, 1).all()
    assert (tiny_run / "results" / "logs" / "tiny" / "gen1" / "train_m0.log").read_text().count("val mIoU") >= 2
    # the training jobs take the rule's path for this CPU, settled when the jobs were planned,
    # with the configured threads; the checkpoints and the tables say which
    ckpt = torch.load(res / "gen1" / "models" / "m0" / "model.pt", map_location="cpu", weights_only=True)
    planned = plan_cpu_path("auto", "auto", cpu_flags(), (32, 32))
    assert (ckpt["settings"]["precision"], ckpt["settings"]["channels_last"]) == planned
    assert ckpt["numeric_path"]["device"] == "cpu" and ckpt["numeric_path"]["threads"] == 1
    assert (ckpt["numeric_path"]["precision"], ckpt["numeric_path"]["channels_last"]) == planned
    assert set(pd.read_csv(res / "gen1" / "metrics.csv")["numeric_path"]) == {describe(ckpt["numeric_path"])}
    assert not (res / "path_timings").exists()
    assert not list(res.rglob(".*partial*"))  # no leftovers of atomic writes


@pytest.mark.slow
def test_second_run_does_nothing(tiny_run):
    again = snakemake(tiny_run, "-n", "results/tiny/gen2/metrics.csv")
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_change_from_gen2_reruns_gen2_only(tiny_run):
    res = tiny_run / "results" / "tiny"
    before = {p: p.stat().st_mtime_ns for p in res.rglob("*") if p.is_file() and "gen2" not in p.parts}
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    cfg["experiments"]["tiny"]["overrides"] = [{"from_generation": 2, "pseudo_labels": {"dilate": 3}}]
    (tiny_run / "config.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(tiny_run, "-n", "results/tiny/gen2/metrics.csv")
    plan = dry.stdout
    assert "build_pseudo_labels" in plan and "prepare_data" not in plan
    for line in plan.splitlines():
        if line.strip().startswith("output:"):
            assert "/gen2/" in line, line
    run = snakemake(tiny_run, "results/tiny/gen2/metrics.csv")
    assert run.returncode == 0, run.stderr[-3000:]
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # data, gen0 and gen1 untouched
    pseudo = zarr.open_group(str(res / "gen2" / "pseudo.zarr"), mode="r")
    assert pseudo.attrs["settings"]["dilate"] == 3
    assert json.loads((res / "gen2" / "settings.json").read_text())["pseudo_labels"]["dilate"] == 3
    assert snakemake(tiny_run, "-n", "results/tiny/gen2/metrics.csv").stdout.count("Nothing to be done") == 1


@pytest.mark.slow
def test_requesting_a_generation_beyond_the_config_is_a_clear_error(tiny_run):
    out = snakemake(tiny_run, "-n", "results/tiny/gen5/metrics.csv")
    assert out.returncode != 0
    assert "experiments.tiny.generations is 2, but gen5 was requested" in out.stdout + out.stderr


@pytest.mark.slow
def test_the_default_profile_is_in_force(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY))
    run = snakemake(tmp_path, "-n", "results/tiny/gen0/metrics.csv")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Using workflow specific profile profiles/default" in run.stdout + run.stderr


def test_students_on_ground_truth_only_do_not_read_pseudo_labels(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["experiments"]["tiny"]["overrides"] = [{"from_generation": 2, "students": {"labeled_share": 1.0}}]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    commands = {}
    for g in (1, 2):
        run = snakemake(tmp_path, "-n", "-p", "--forceall", f"results/tiny/gen{g}/models/m0/model.pt")
        assert run.returncode == 0, run.stderr[-3000:]
        commands[g] = [line for line in run.stdout.splitlines() if "im_core.cli train" in line and f"gen{g}_m0" in line]
    assert "--pseudo results/tiny/gen1/pseudo.zarr" in commands[1][0]
    assert "--pseudo" not in commands[2][0] and '"labeled_share": 1.0' in commands[2][0]
    assert "--init-selection" not in commands[1][0]


def test_students_that_continue_from_a_parent_get_its_checkpoints(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["experiments"]["tiny"]["students"] = {"models": 2, "init": "parent", "parent": "same_index"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "-n", "-p", "--forceall", "results/tiny/gen2/models/m1/model.pt")
    assert run.returncode == 0, run.stderr[-3000:]
    [command] = [line for line in run.stdout.splitlines() if "im_core.cli train" in line and "gen2_m1" in line]
    assert ("--init-selection results/tiny/gen1/selection.json --init-checkpoints "
            "results/tiny/gen1/models/m0/model.pt results/tiny/gen1/models/m1/model.pt") in command


def test_bad_config_stops_before_any_job(tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["experiments"]["tiny"]["train"]["stepz"] = 3
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "-n", "results/tiny/gen0/metrics.csv")
    assert out.returncode != 0
    assert "experiments.tiny.train: unknown key(s) ['stepz']" in out.stdout + out.stderr


@pytest.mark.slow
def test_default_target_builds_previews_and_plots_and_the_report_builds(tiny_run):
    run = snakemake(tiny_run)  # rule all: tables, plots and previews of the default experiments
    assert run.returncode == 0, run.stderr[-3000:]
    res = tiny_run / "results"
    for g in (1, 2):
        preview = Image.open(res / "tiny" / f"gen{g}" / "preview.png")
        assert preview.size[0] == 4 * 96 + 3 * 4 and preview.size[1] > 6 * 96  # 6 rows of 4 tiles upscaled to 96
    assert Image.open(res / "tiny" / "generations.png").size == (1300, 380)
    assert (res / "experiments.png").exists()
    report = snakemake(tiny_run, "--report", str(tiny_run / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tiny_run / "report.html").read_text(errors="ignore")
    assert len(html) > 100_000
    for name in ("preview.png", "generations.png", "experiments.png", "metrics.csv", "Pseudo-labels"):
        assert name in html, name
