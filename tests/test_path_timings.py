"""The numerical path measured on this machine: the timing job, the choice a training job makes
from its file, and the cases where it keeps the rule's path."""
import json
import logging

import pytest
import torch
from conftest import TRAIN_SETTINGS

from im_core.errors import InputError
from im_core.io import write_json
from im_core.runtime import path_timings
from im_core.runtime.numeric_path import MEASURED_MARGIN, NumericPath, choose_path, faster_measured
from im_core.settings import NumericRequest
from im_core.steps import time_paths, train

AUTO = NumericRequest()

RULE = NumericPath("cpu", "fp32", False)


def test_a_measured_path_replaces_the_rule_only_beyond_the_margin():
    near_tie = {("fp32", False): 100.0, ("fp32", True): 100.0 * MEASURED_MARGIN - 1}
    assert faster_measured(RULE, AUTO, near_tie) == RULE
    faster = {("fp32", False): 100.0, ("fp32", True): 100.0 * MEASURED_MARGIN}
    assert faster_measured(RULE, AUTO, faster) == NumericPath("cpu", "fp32", True)
    # a slower alternative, or a rule's path that was not timed, keeps the rule
    assert faster_measured(RULE, AUTO, {("fp32", False): 100.0, ("fp32", True): 50.0}) == RULE
    assert faster_measured(RULE, AUTO, {("fp32", True): 500.0}) == RULE


def test_explicit_settings_limit_the_measured_choice():
    rates = {("fp32", False): 100.0, ("fp32", True): 150.0, ("bf16", False): 120.0, ("bf16", True): 400.0}
    assert faster_measured(RULE, AUTO, rates) == NumericPath("cpu", "bf16", True)
    assert faster_measured(RULE, NumericRequest(precision="fp32"), rates) == NumericPath("cpu", "fp32", True)
    assert faster_measured(RULE, NumericRequest(channels_last=False), rates) == NumericPath("cpu", "bf16", False)
    assert faster_measured(RULE, NumericRequest(precision="fp32", channels_last=False), rates) == RULE
    # choose_path applies it on CPUs only, to what the rule settled
    cpu = choose_path(NumericRequest(precision="fp32", channels_last=False), (32, 32), torch.device("cpu"),
                      measured=rates)
    assert cpu == RULE


def test_timings_of_another_machine_or_torch_are_not_followed(tmp_path, caplog):
    record = {"machine": dict(path_timings.machine(), torch="0.0.1"),
              "rates": [{"precision": "fp32", "channels_last": True, "median": 900.0}]}
    write_json(tmp_path / "t.json", record)
    with caplog.at_level(logging.WARNING):
        assert path_timings.load_rates(str(tmp_path / "t.json")) is None
    assert "taking the rule's path" in caplog.text
    write_json(tmp_path / "t.json", dict(record, machine=path_timings.machine()))
    assert path_timings.load_rates(str(tmp_path / "t.json")) == {("fp32", True): 900.0}


def test_a_file_that_is_not_timings_is_named(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"rates": []}))
    with pytest.raises(InputError, match="t.json: not a file of numerical-path timings"):
        path_timings.load_rates(str(tmp_path / "t.json"))


def test_candidates_leave_out_emulated_bf16():
    assert {(p.precision, p.channels_last) for p in path_timings.candidate_paths(False)} == {
        ("fp32", False), ("fp32", True)}
    assert len(path_timings.candidate_paths(True)) == 4


def test_the_timing_job_times_each_candidate_and_training_follows_its_file(store, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU paths (a GPU job times nothing)
    monkeypatch.setattr(time_paths, "ROUNDS", 2)
    monkeypatch.setattr(time_paths, "SECONDS_PER_ROUND", 0.01)
    result = time_paths.run(str(store), str(tmp_path / "timings.json"), alpha=0.25, batch_size=4)
    record = json.loads((tmp_path / "timings.json").read_text())
    assert record["machine"] == path_timings.machine() and record["image_size"] == [16, 16]
    assert len(record["rates"]) == len(result["rates"]) >= 2
    assert all(len(row["images_per_second"]) == 2 and row["median"] > 0 for row in record["rates"])

    # a file in which fp32, contiguous trains 3x faster than any other path: every machine's rule gives way to it
    rates = [{"precision": p, "channels_last": cl, "median": 300.0 if (p, cl) == ("fp32", False) else 100.0}
             for p in ("fp32", "bf16") for cl in (False, True)]
    write_json(tmp_path / "fast_fp32.json", dict(record, rates=rates))
    summary = train.run(str(store), str(tmp_path / "model.pt"), TRAIN_SETTINGS, progress=False,
                        path_timings=str(tmp_path / "fast_fp32.json"))
    ckpt = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=False)
    assert (ckpt["numeric_path"]["precision"], ckpt["numeric_path"]["channels_last"]) == ("fp32", False)
    assert ckpt["path_rates"]["fp32"] == 300.0 and summary
