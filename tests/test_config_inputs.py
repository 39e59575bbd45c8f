"""Config inputs that used to pass silently or fail late with a traceback, refused up front with a
message that names the file or key: duplicate YAML keys (im-core check-config and Snakemake runs),
integers given as floats, seeds out of range, class names given twice, names that are not safe
path segments; and split lists with a byte order mark or CRLF line ends, which are read."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from im_core import cli
from im_core.config import (DuplicateKeyError, load_config_file, load_yaml_file, model_seed, train_settings,
                            validate_config)
from im_core.data.items import Item
from im_core.data.split_lists import fixed_splits
from im_core.errors import InputError

REPO = Path(__file__).resolve().parents[1]
NAME_RULE = ("names become folders under results/: start with a letter or digit, then only letters, digits, "
             "'_', '.' and '-', without '..'")


def minimal(**experiment) -> dict:
    return {"datasets": {"d": {"source": "demo"}}, "experiments": {"e": dict({"dataset": "d"}, **experiment)}}


def refused(config: dict, message: str) -> None:
    """validate_config refuses `config` with exactly this line among its messages."""
    with pytest.raises(InputError) as info:
        validate_config(config)
    assert f"\n  {message}" in str(info.value), str(info.value)


# ---------------------------------------------------------------- duplicate YAML keys

DUPLICATE = """\
datasets:
  d: {source: demo}
experiments:
  e:
    dataset: d
    train:
      batch_size: 8
      steps: 12
      batch_size: 4
"""


def test_duplicate_key_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(DUPLICATE)
    with pytest.raises(DuplicateKeyError, match=re.escape(f"{path}:9: key 'batch_size' given twice (first at line 7)")):
        load_config_file(path)
    path.write_text("datasets: {d: {source: demo}}\nexperiments: {e: {dataset: d}}\ndatasets: {}\n")
    with pytest.raises(InputError, match=re.escape(f"{path}:3: key 'datasets' given twice (first at line 1)")):
        load_config_file(path)
    path.write_text("datasets: {d: {source: demo, seed: 1, seed: 2}}\nexperiments: {}\n")  # flow style
    with pytest.raises(InputError, match=re.escape(f"{path}:1: key 'seed' given twice (first at line 1)")):
        load_config_file(path)


def test_check_config_command_names_the_duplicate_key(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(DUPLICATE)
    assert cli.main(["check-config", str(path)]) == 2
    assert f"{path}:9: key 'batch_size' given twice (first at line 7)" in capsys.readouterr().err


ANCHORS = """\
datasets:
  d: {source: demo}
experiments:
  e: &base
    dataset: d
    generations: 1
    train: &train {batch_size: 8, steps: 12}
  f:
    <<: *base
    seed: 1
    train:
      <<: *train
      batch_size: 4
"""


def test_anchors_and_merge_keys_are_not_duplicates(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(ANCHORS)
    config = load_config_file(path)
    assert config == yaml.safe_load(ANCHORS)
    assert config["experiments"]["f"]["train"] == {"batch_size": 4, "steps": 12} and config["experiments"]["f"]["seed"] == 1
    validate_config(config)
    # a mapping with a merge key still may not give its own key twice
    path.write_text(ANCHORS + "      steps: 1\n      steps: 2\n")
    with pytest.raises(InputError, match=re.escape(f"{path}:15: key 'steps' given twice (first at line 14)")):
        load_config_file(path)


@pytest.mark.parametrize("name", ["config.yaml", "config/examples/cityscapes.yaml", "config/examples/voc2012.yaml",
                                  "config/examples/isic2018.yaml", "bench/demo_longer_students.yaml",
                                  "bench/dsb2018_scaled_blur.yaml", "bench/im_levers.yaml", "bench/continuous.yaml",
                                  "bench/models_compare.yaml",
                                  "im_core/config/config.schema.yaml"])
def test_shipped_yaml_files_load_strictly(name):
    """The shipped config (anchors &im_variants / *im_variants), examples, bench overlays and the
    schema have no duplicate key, read as PyYAML reads them, and the configs still validate."""
    strict = load_yaml_file(REPO / name)
    assert strict == yaml.safe_load((REPO / name).read_text())
    if name.startswith("bench/"):  # overlays on config.yaml, merged as Snakemake merges --configfile files
        from snakemake.utils import update_config
        base = load_config_file(REPO / "config.yaml")
        update_config(base, strict)
        validate_config(base)
    elif name.startswith("config"):
        validate_config(strict)


def snakemake_dry_run(workdir: Path, *configfiles: Path, target: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", *map(str, configfiles), "--cores", "1", "-n", target]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"),
                          timeout=300)


@pytest.mark.parametrize("where", ["config.yaml", "overlay.yaml"])
def test_snakemake_refuses_duplicate_key_before_any_job(tmp_path, where):
    """Snakemake reads --configfile files with PyYAML (the last duplicate wins): the workflow reads
    each again strictly and stops before planning a job, naming file:line."""
    (tmp_path / "config.yaml").write_text(DUPLICATE if where == "config.yaml" else ANCHORS)
    files = [tmp_path / "config.yaml"]
    if where == "overlay.yaml":
        files.append(tmp_path / "overlay.yaml")
        files[-1].write_text("experiments:\n  e:\n    seed: 1\n    generations: 1\n    seed: 2\n")
    run = snakemake_dry_run(tmp_path, *files, target="results/e/gen0/metrics.csv")
    out = run.stdout + run.stderr
    line, first = (9, 7) if where == "config.yaml" else (5, 3)
    key = "batch_size" if where == "config.yaml" else "seed"
    assert run.returncode != 0
    assert f"{files[-1]}:{line}: key '{key}' given twice (first at line {first})" in out, out[-3000:]
    assert "Building DAG" not in out and "rule prepare_data" not in out and "Job stats" not in out, out[-3000:]


def test_snakemake_accepts_anchors_and_merge_keys(tmp_path):
    (tmp_path / "config.yaml").write_text(ANCHORS)
    run = snakemake_dry_run(tmp_path, tmp_path / "config.yaml", target="results/f/gen0/metrics.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "rule prepare_data" in run.stdout + run.stderr


# ---------------------------------------------------------------- integers given as floats

@pytest.mark.parametrize("config, message", [
    (minimal(stage0={"models": 2.0}), "config: experiments.e.stage0.models: 2.0 is not of type 'integer'"),
    (minimal(train={"batch_size": 4.0}), "config: experiments.e.train.batch_size: 4.0 is not of type 'integer'"),
    (minimal(train={"steps": 10.0}), "config: experiments.e.train.steps: 10.0 is not of type 'integer', 'null'"),
    (minimal(generations=2.0), "config: experiments.e.generations: 2.0 is not of type 'integer'"),
    ({"datasets": {"d": {"source": "demo", "n_images": 60.0}}, "experiments": {}},
     "config: datasets.d.n_images: 60.0 is not of type 'integer'"),
    (minimal(overrides=[{"from_generation": 1, "train": {"batch_size": 4.0}}]),
     "config: experiments.e.(generation 1 after overrides).train.batch_size: 4.0 is not of type 'integer'"),
])
def test_integer_given_as_float_is_refused(config, message):
    refused(config, message)


def test_integers_still_pass_where_numbers_are_asked_for():
    exp = validate_config(minimal(train={"lr": 1, "batch_size": 4}, model={"alpha": 1}))["experiments"]["e"]
    assert exp["train"]["lr"] == 1 and exp["train"]["batch_size"] == 4
    refused(minimal(train={"batch_size": True}), "config: experiments.e.train.batch_size: True is not of type 'integer'")


# ---------------------------------------------------------------- seeds

@pytest.mark.parametrize("config, message", [
    ({"datasets": {"d": {"source": "demo", "seed": -1}}, "experiments": {}},
     "config: datasets.d.seed: -1 is less than the minimum of 0"),
    (minimal(seed=-1), "config: experiments.e.seed: -1 is less than the minimum of 0"),
    (minimal(seed=2**32), "config: experiments.e.seed: 4294967296 is greater than the maximum of 4294967295"),
    (dict(minimal(), comparisons={"d": {"base": "e", "seeds": [0, -3]}}),
     "config: comparisons.d.seeds[1]: -3 is less than the minimum of 0"),
])
def test_seed_out_of_range_is_refused(config, message):
    refused(config, message)


def test_largest_seed_reaches_every_generator():
    """2**32 - 1, the largest seed allowed, works where seeds go: the model seed derived from it
    (torch.manual_seed, numpy's legacy seed modulo 2**32), numpy's default_rng (data sets)."""
    config = dict(minimal(seed=2**32 - 1, generations=1),
                  comparisons={"d": {"base": "e", "seeds": [2**32 - 1], "methods": ["im"], "generations": 1}})
    config["datasets"]["d"]["seed"] = 2**32 - 1
    cfg = validate_config(config)
    assert "d/compare/im/seed4294967295" in cfg["experiments"]
    seed = train_settings(cfg["experiments"]["e"], 1, 2).seed
    assert seed == model_seed(2**32 - 1, 1, 2) < 2**63
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    np.random.default_rng(cfg["datasets"]["d"]["seed"] + 1)


# ---------------------------------------------------------------- class names given twice

@pytest.mark.parametrize("task, class_names, message", [
    ("multiclass", ["bg", "cell", "bg"],
     "config: datasets.d.class_names: 'bg' given more than once; give each class a name of its own (the metrics "
     "have a column per class)"),
    ("multilabel", ["alive", "dead", "dead", "alive"],
     "config: datasets.d.class_names: 'alive', 'dead' given more than once; give each label a name of its own (the "
     "metrics have a column per label)"),
])
def test_class_name_given_twice_is_refused(task, class_names, message):
    refused({"datasets": {"d": {"source": "folder", "path": "nowhere", "task": task, "class_names": class_names}},
             "experiments": {}}, message)


# ---------------------------------------------------------------- names that become paths

@pytest.mark.parametrize("name", ["../up", "a/b", ".hidden", "..", "x..y", "two words", "tab\t", "_x", "-x", "",
                                  "ü"])
@pytest.mark.parametrize("section", ["datasets", "experiments", "segment", "comparisons"])
def test_unsafe_name_is_refused(section, name):
    config = {"datasets": {"d": {"source": "demo"}}, "experiments": {"e": {"dataset": "d", "generations": 1}}}
    entry = {"datasets": {"source": "demo"}, "experiments": {"dataset": "d"}, "comparisons": {"base": "e"},
             "segment": {"experiment": "e", "generation": 1, "images": "x"}}[section]
    config.setdefault(section, {})[name] = entry
    refused(config, f"config: {section}: name {name!r} is not allowed; {NAME_RULE}")


def test_user_experiment_may_not_take_a_comparison_name():
    config = dict(minimal(), comparisons={"d": {"base": "e", "methods": ["ldt"]}})
    config["experiments"]["d/compare/ldt/seed0"] = {"dataset": "d"}
    refused(config, f"config: experiments: name 'd/compare/ldt/seed0' is not allowed; {NAME_RULE}")


def test_name_that_is_not_text_is_refused():
    config = minimal()
    config["experiments"][1] = {"dataset": "d"}
    with pytest.raises(InputError, match=re.escape("config: experiments: name 1 is not text (YAML read a int); "
                                                   "put it in quotes ('1')")):
        validate_config(config)


def test_safe_names_pass():
    names = ["d", "D-1.v2", "0_a", "tiny2_dilated"]
    config = {"datasets": {n: {"source": "demo"} for n in names},
              "experiments": {n: {"dataset": n, "generations": 1} for n in names},
              "segment": {n: {"experiment": n, "generation": 1, "images": "x"} for n in names}}
    assert set(validate_config(config)["experiments"]) == set(names)


# ---------------------------------------------------------------- split lists: BOM, CRLF

def items(names: list[str]) -> list[Item]:
    return [Item(name=n, height=16, width=16, grayscale=False, read_image=lambda c: None,
                 read_mask=(lambda: None)) for n in names]


@pytest.mark.parametrize("encode", [
    lambda text: text.replace("\n", "\r\n").encode("utf-8-sig"),  # Windows Notepad: BOM and CRLF
    lambda text: text.replace("\n", "\r").encode("utf-8"),        # old Mac line ends
    lambda text: text.encode("utf-8-sig"),                       # BOM alone
], ids=["bom-crlf", "cr", "bom"])
def test_split_list_with_bom_and_crlf_is_read(tmp_path, encode):
    lists = {"labeled": "img0.png\nimg1\n", "val": "img2.png\n", "test": "img3.png\n\n"}
    for split, text in lists.items():
        (tmp_path / f"{split}.txt").write_bytes(encode(text))
    found = items([f"img{i}.png" for i in range(5)])
    fixed_splits({"name": "mine", "path": str(tmp_path), "split_lists": {s: f"{s}.txt" for s in lists}}, found)
    assert [it.split for it in found] == ["labeled", "labeled", "val", "test", "unused"]


def test_bad_entry_in_a_bom_crlf_list_is_named_with_file_and_line(tmp_path):
    path = tmp_path / "labeled.txt"
    path.write_bytes("img0.png\r\nnope.png\r\n".encode("utf-8-sig"))
    cfg = {"name": "mine", "path": str(tmp_path), "split_lists": {"labeled": "labeled.txt"}}
    with pytest.raises(InputError, match=re.escape(f"{path}:2: 'nope.png' is not an image of {tmp_path}")):
        fixed_splits(cfg, items(["img0.png"]))
    path.write_bytes(b"img0.png\r\nimg\xe91.png\r\n")  # Latin-1, not UTF-8
    with pytest.raises(InputError, match=re.escape(f"{path}:2: split list is not UTF-8 text (invalid continuation "
                                                   "byte at byte 13); save it as UTF-8, one image name per line")):
        fixed_splits(cfg, items(["img0.png"]))


@pytest.mark.parametrize("section", ["datasets", "experiments"])
def test_a_name_of_the_workflows_own_folders_is_refused(section):
    cfg = {"datasets": {"d": {"source": "demo"}}, "experiments": {"e": {"dataset": "d"}}}
    if section == "datasets":
        cfg = {"datasets": {"logs": {"source": "demo"}}, "experiments": {"e": {"dataset": "logs"}}}
    else:
        cfg["experiments"] = {"segment": {"dataset": "d"}}
    with pytest.raises(InputError, match=r"is the workflow's own folder results/(logs|segment)/"):
        validate_config(cfg)
