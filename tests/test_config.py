import copy
from pathlib import Path

import pytest
import yaml

from im_core.config import generation_settings, load_config_file, pseudo_settings, selection_settings, train_settings, validate_config
from im_core.errors import InputError

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"datasets": {"d": {"source": "demo"}}, "experiments": {"e": {"dataset": "d"}}}


def test_shipped_config_is_valid():
    cfg = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert {"demo", "suim"} <= set(cfg["experiments"])
    assert cfg["datasets"]["suim"]["class_names"][0] == "background"


def test_defaults_are_filled():
    cfg = validate_config(MINIMAL)
    exp = cfg["experiments"]["e"]
    assert exp["train"]["lr"] == 0.003 and exp["train"]["augment"]["hflip"] is True
    assert exp["pseudo_labels"]["label_mode"] == "ignore" and exp["stage0"]["models"] == 5
    assert cfg["datasets"]["d"]["labeled_fraction"] == 0.1 and len(cfg["datasets"]["d"]["class_names"]) >= 5


def test_unknown_key_is_named_with_its_path():
    bad = copy.deepcopy(MINIMAL)
    bad["experiments"]["e"]["genrations"] = 3
    with pytest.raises(InputError, match=r"experiments\.e: unknown key\(s\) \['genrations'\]"):
        validate_config(bad)


def test_wrong_type_is_named_with_its_path():
    bad = copy.deepcopy(MINIMAL)
    bad["experiments"]["e"]["train"] = {"lr": "fast"}
    with pytest.raises(InputError, match=r"experiments\.e\.train\.lr: 'fast' is not of type 'number'"):
        validate_config(bad)


def test_folder_source_requires_path_and_class_names():
    with pytest.raises(InputError, match=r"datasets\.x: 'path' is a required property"):
        validate_config({"datasets": {"x": {"source": "folder"}}, "experiments": {}})


def test_unknown_dataset_and_inconsistent_counts():
    bad = copy.deepcopy(MINIMAL)
    bad["experiments"]["e"]["dataset"] = "nope"
    with pytest.raises(InputError, match=r"experiments\.e\.dataset: 'nope' is not a data set"):
        validate_config(bad)
    bad = copy.deepcopy(MINIMAL)
    bad["experiments"]["e"]["pseudo_labels"] = {"teachers": 4}
    bad["experiments"]["e"]["selection"] = {"top_k": 3}
    with pytest.raises(InputError, match=r"pseudo_labels\.teachers: 4 teachers but selection\.top_k keeps only 3"):
        validate_config(bad)


def test_bad_key_inside_override_is_reported():
    bad = copy.deepcopy(MINIMAL)
    bad["experiments"]["e"]["overrides"] = [{"from_generation": 2, "train": {"learning_rate": 1}}]
    with pytest.raises(InputError, match=r"generation 2 after overrides.*train: unknown key\(s\) \['learning_rate'\]"):
        validate_config(bad)


def test_overrides_apply_from_their_generation_on():
    cfg = copy.deepcopy(MINIMAL)
    cfg["experiments"]["e"]["overrides"] = [{"from_generation": 2, "pseudo_labels": {"erode": 3}, "train": {"lr": 0.01}}]
    exp = validate_config(cfg)["experiments"]["e"]
    assert [pseudo_settings(exp, g).erode for g in (1, 2, 3)] == [0, 3, 3]
    assert [train_settings(exp, g, 0).lr for g in (0, 1, 2)] == [0.003, 0.003, 0.01]
    assert generation_settings(exp, 1)["pseudo_labels"]["erode"] == 0
    assert selection_settings(exp, 1).to_params() == selection_settings(exp, 2).to_params() == {
        "metric": "miou", "top_k": 4, "dev_images": None}


def test_job_settings_do_not_depend_on_later_generations():
    base = validate_config(MINIMAL)["experiments"]["e"]
    changed = copy.deepcopy(MINIMAL)
    changed["experiments"]["e"]["overrides"] = [{"from_generation": 2, "train": {"lr": 0.01}}]
    exp = validate_config(changed)["experiments"]["e"]
    for g in (0, 1):
        assert train_settings(exp, g, 1) == train_settings(base, g, 1)
        assert pseudo_settings(exp, g) == pseudo_settings(base, g)
        assert selection_settings(exp, g) == selection_settings(base, g)
    assert train_settings(exp, 0, 1).seed != train_settings(exp, 0, 2).seed


def test_noisy_student_settings_of_a_generation_do_not_depend_on_generations():
    cfg = copy.deepcopy(MINIMAL)
    cfg["experiments"]["e"].update(noisy_student={"enabled": True}, model={"alpha": 0.5}, generations=3)
    three = validate_config(cfg)["experiments"]["e"]
    cfg["experiments"]["e"]["generations"] = 5
    five = validate_config(cfg)["experiments"]["e"]
    for g in (1, 2, 3):
        assert train_settings(three, g, 0) == train_settings(five, g, 0)
    # the ramp ends at ramp_generations (default 3) and stays there
    assert [train_settings(five, g, 0).model.alpha for g in range(6)] == [0.5, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [train_settings(five, g, 0).pseudo_augment.noise for g in (1, 2, 3, 5)] == [5.0, 15.0, 25.0, 25.0]
    cfg["experiments"]["e"]["noisy_student"]["ramp_generations"] = 5
    longer = validate_config(cfg)["experiments"]["e"]
    assert [train_settings(longer, g, 0).model.alpha for g in (1, 3, 5)] == [0.5, 0.75, 1.0]


def test_comparison_with_more_generations_keeps_the_finished_ones():
    cfg = copy.deepcopy(MINIMAL)
    cfg["experiments"]["e"].update(stage0={"models": 2}, students={"models": 2}, selection={"top_k": 2},
                                   pseudo_labels={"teachers": 2})
    cfg["comparisons"] = {"d": {"base": "e", "methods": ["im_plus", "noisy_student"], "generations": 3}}
    before = validate_config(cfg)["experiments"]
    cfg["comparisons"]["d"]["generations"] = 6
    after = validate_config(cfg)["experiments"]
    for method in ("im_plus", "noisy_student"):
        name = f"d/compare/{method}/seed0"
        for g in (1, 2, 3):
            assert train_settings(before[name], g, 1) == train_settings(after[name], g, 1)


def test_shipped_config_loads_through_the_file_loader():
    cfg = validate_config(load_config_file(REPO / "config.yaml"), where=str(REPO / "config.yaml"))
    assert cfg["experiments"]["suim"]["noisy_student"]["ramp_generations"] == 5  # its 5 generations, as before
    assert cfg["datasets"]["demo"]["crop_max_side"] == 512 and cfg["datasets"]["demo"]["binary_255"] is False


def test_labeled_share_reaches_the_students_and_decides_whether_they_read_pseudo_labels():
    from im_core.config import uses_pseudo_labels
    cfg = copy.deepcopy(MINIMAL)
    cfg["experiments"]["e"].update(generations=3, overrides=[
        {"from_generation": 2, "students": {"labeled_share": 1.0}},
        {"from_generation": 3, "students": {"labeled_share": 0.0}}])
    exp = validate_config(cfg)["experiments"]["e"]
    assert "labeled_share" not in train_settings(exp, 0, 0).to_params() and train_settings(exp, 1, 0).labeled_share is None
    assert train_settings(exp, 2, 0).labeled_share == 1.0 and train_settings(exp, 3, 0).labeled_share == 0.0
    assert [uses_pseudo_labels(exp, g) for g in range(4)] == [False, True, False, True]


def test_labeled_share_without_pseudo_labels_is_refused():
    for students, pseudo in (({"labeled_share": 0.5, "trainer": "consistency"}, {"builder": "none"}),
                             ({"labeled_share": 0.0}, {"builder": "none"})):
        cfg = copy.deepcopy(MINIMAL)
        cfg["experiments"]["e"].update(students=students, pseudo_labels=pseudo)
        with pytest.raises(InputError, match="students.labeled_share: .* asks for pseudo-labeled pairs"):
            validate_config(cfg)
    cfg = copy.deepcopy(MINIMAL)
    cfg["experiments"]["e"]["stage0"] = {"labeled_share": 0.5}
    with pytest.raises(InputError, match="stage0.labeled_share: gen0 has no pseudo-labels"):
        validate_config(cfg)


def test_students_continuing_from_a_parent():
    cfg = copy.deepcopy(MINIMAL)
    cfg["experiments"]["e"].update(generations=2, stage0={"models": 2}, selection={"top_k": 2},
                                   pseudo_labels={"teachers": 2},
                                   students={"models": 2, "init": "parent", "parent": "same_index"})
    exp = validate_config(cfg)["experiments"]["e"]
    assert train_settings(exp, 0, 0).init is None and "init" not in train_settings(exp, 0, 0).to_params()
    assert (train_settings(exp, 1, 1).init, train_settings(exp, 1, 1).parent) == ("parent", "index:1")
    for change, message in (({"stage0": {"init": "parent"}}, "stage0.init: gen0 has no parent generation"),
                            ({"noisy_student": {"enabled": True}}, "continuing from a parent .* keeps the parent's"),
                            ({"students": {"models": 3, "init": "parent", "parent": "same_index"}},
                             "students.parent: 'same_index' needs a parent per student")):
        bad = copy.deepcopy(cfg)
        bad["experiments"]["e"].update(change)
        with pytest.raises(InputError, match=message):
            validate_config(bad)


def test_the_configuration_reference_is_written_from_the_schema():
    from im_core.config.reference import reference_markdown
    text = reference_markdown()
    assert (REPO / "docs" / "configuration.md").read_text(encoding="utf-8") == text, (
        "docs/configuration.md is not current: run `im-core config-reference --out docs/configuration.md`")
    # every key the validator knows is documented, with its default, and the registries' names are in its enums
    assert "| `pseudo_labels` |" in text and "| `teachers` | integer | 3 |" in text
    assert '"im" or "model_ensemble"' in text and '"supervised" or "consistency" or "cct"' in text


def test_compute_numeric_path_pins_every_experiment_unless_it_names_its_own():
    cfg = copy.deepcopy(MINIMAL)
    cfg["experiments"]["f"] = {"dataset": "d", "train": {"precision": "bf16"}}
    cfg["compute"] = {"numeric_path": {"precision": "fp32", "channels_last": False}}
    out = validate_config(cfg)
    assert (out["experiments"]["e"]["train"]["precision"], out["experiments"]["e"]["train"]["channels_last"]) == ("fp32", False)
    assert (out["experiments"]["f"]["train"]["precision"], out["experiments"]["f"]["train"]["channels_last"]) == ("bf16", False)
    assert train_settings(out["experiments"]["e"], 0, 0).numeric.precision == "fp32"
    assert validate_config(MINIMAL)["compute"]["numeric_path"] == {"precision": "auto", "channels_last": "auto"}


def test_a_comparison_refuses_rows_on_different_numerical_paths():
    cfg = {"datasets": {"d": {"source": "demo"}},
           "experiments": {"d": {"dataset": "d", "generations": 1, "stage0": {"models": 2}, "students": {"models": 2},
                                 "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2}},
                           "d_fp32": {"dataset": "d", "train": {"precision": "fp32"}}},
           "comparisons": {"d": {"base": "d", "methods": ["ldt", "im"], "seeds": [0], "generations": 1}}}
    validate_config(cfg)
    mixed = copy.deepcopy(cfg)
    mixed["comparisons"]["d"]["experiments"] = ["d_fp32"]
    with pytest.raises(InputError, match=r"comparisons\.d: its rows ask for different numerical paths.*d_fp32 gen0"):
        validate_config(mixed)
    mixed["compute"] = {"numeric_path": {"precision": "fp32"}}   # one setting puts every row on one path
    validate_config(mixed)


def test_the_retired_timing_switch_is_accepted_with_a_warning(caplog):
    cfg = dict(copy.deepcopy(MINIMAL), compute={"time_numeric_paths": False})
    with caplog.at_level("WARNING"):
        validate_config(cfg)
    assert "compute.time_numeric_paths is no longer used" in caplog.text
