"""The numerical path of a CPU job is a rule of the CPU's flags and the image size, never a
clock; timings only advise a pin, and noise cannot change their advice."""
import json
import random

import pytest
import torch

from im_core.runtime import path_timings
from im_core.runtime.numeric_path import choose_path
from im_core.runtime.path_rule import (PATH_ORDER, VETO_MARGIN, describe, path_label, plan_cpu_path,
                                       recommend)
from im_core.settings import NumericRequest
from im_core.steps import time_paths

AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16"})
AVX512 = frozenset({"avx2", "avx512f"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.mark.parametrize("flags, size, expected", [
    (AMX, (32, 32), ("bf16", True)),
    (ZEN4, (32, 32), ("bf16", True)),
    (AVX512, (32, 32), ("fp32", True)),
    (AVX2, (32, 32), ("fp32", False)),
    (AVX2, (64, 96), ("fp32", True)),
    (AVX2, None, ("fp32", "auto")),       # the job settles it from its store, by the same rule
    (AMX, None, ("bf16", True)),
])
def test_the_rule_is_a_function_of_the_flags_and_the_size(flags, size, expected):
    assert plan_cpu_path("auto", "auto", flags, size) == expected


def test_what_the_settings_ask_is_kept():
    assert plan_cpu_path("fp32", "auto", AMX, (32, 32)) == ("fp32", True)
    assert plan_cpu_path("fp32", False, AMX, (32, 32)) == ("fp32", False)
    assert plan_cpu_path("auto", False, AVX2, (32, 32)) == ("fp32", False)


def test_choose_path_follows_the_rule_and_records_the_threads():
    torch.set_num_threads(1)
    path = choose_path(NumericRequest(), (32, 32), torch.device("cpu"), flags=AVX2)
    assert (path.precision, path.channels_last, path.threads) == ("fp32", False, 1)
    assert path.label == "fp32, 1 thread" == describe(path.as_dict())
    assert choose_path(NumericRequest(), (32, 32), torch.device("cpu"), flags=AMX).label == "bf16+cl, 1 thread"


def test_noisy_timings_around_a_near_tie_give_one_answer():
    """Every path within 5 % of the rule's, each round drawn with +-15 % noise: 2000 timings,
    one recommendation (the rule's path)."""
    rng = random.Random(0)
    true_rates = {("fp32", False): 430.0, ("fp32", True): 440.0, ("bf16", False): 420.0, ("bf16", True): 450.0}
    for rule in [("bf16", True), ("fp32", False)]:
        answers = set()
        for _ in range(2000):
            rounds = {key: [rate * rng.uniform(0.85, 1.15) for _ in range(5)] for key, rate in true_rates.items()}
            answers.add(recommend(rule, rounds))
        assert answers == {rule}


def test_the_issues_recorded_timings_give_one_answer():
    """Three back-to-back timings on one AMD EPYC (Zen 4) that ranked the fp32 paths three
    ways (images/s, fp32 asked for): the rule's path every time."""
    runs = [{("fp32", False): [434.0], ("fp32", True): [346.0], ("bf16", False): [423.0]},
            {("fp32", True): [441.0], ("fp32", False): [354.0]},
            {("fp32", False): [895.0], ("fp32", True): [845.0]}]
    rule = plan_cpu_path("fp32", "auto", ZEN4, (32, 32))
    assert {recommend(rule, run) for run in runs} == {rule} == {("fp32", True)}


def test_a_clearly_faster_path_is_recommended_and_ties_follow_the_fixed_order():
    rule = ("bf16", True)
    rounds = {rule: [100, 105, 98], ("fp32", False): [200, 210, 190], ("fp32", True): [100, 99, 101]}
    assert recommend(rule, rounds) == ("fp32", False)
    # faster in its median but not in every round: not enough
    assert recommend(rule, {rule: [100, 100, 140], ("fp32", False): [300, 300, 150]}) == rule
    # two clear winners within the margin of each other: the earlier in PATH_ORDER
    both = {rule: [100] * 3, ("fp32", False): [200] * 3, ("fp32", True): [260] * 3}
    assert recommend(rule, both) == ("fp32", False) and PATH_ORDER.index(("fp32", False)) == 0
    # a path untimed, or no timing of the rule's: the rule
    assert recommend(rule, {("fp32", False): [900.0]}) == rule
    assert VETO_MARGIN >= 1.5


def test_time_paths_reports_the_rule_and_its_advice(store, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # CPU paths (a GPU job times nothing)
    monkeypatch.setattr(time_paths, "SECONDS_PER_ROUND", 0.01)
    result = time_paths.run(str(store), str(tmp_path / "timings.json"), alpha=0.25, batch_size=4, rounds=2)
    record = json.loads((tmp_path / "timings.json").read_text())
    assert record["machine"] == path_timings.machine() and record["image_size"] == [16, 16]
    assert len(record["rates"]) == len(result["rates"]) >= 2
    assert all(len(row["images_per_second"]) == 2 and row["median"] > 0 for row in record["rates"])
    from im_core.runtime.cpu import cpu_flags
    assert record["rule"] == path_label(plan_cpu_path("auto", "auto", cpu_flags(), (16, 16))) == result["rule"]
    assert record["recommended"] in {row["path"] for row in record["rates"]}


def test_candidates_leave_out_emulated_bf16():
    assert {(p.precision, p.channels_last) for p in path_timings.candidate_paths(False)} == {
        ("fp32", False), ("fp32", True)}
    assert len(path_timings.candidate_paths(True)) == 4


def test_time_paths_times_a_model_of_the_zoo(tmp_path, monkeypatch):
    from im_core.config import resolve_dataset
    from im_core.data.store import prepare
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(time_paths, "SECONDS_PER_ROUND", 0.01)
    store = tmp_path / "d.zarr"
    prepare(resolve_dataset("t", {"source": "demo", "n_images": 20, "size": [32, 32], "seed": 0, "ignore_index": 255,
                                  "labeled_fraction": 0.3, "val_fraction": 0.2, "test_fraction": 0.2}), store)
    result = time_paths.run(str(store), str(tmp_path / "t.json"), alpha=0.5, batch_size=2, rounds=1,
                            model="unet", encoder="resnet18")
    record = json.loads((tmp_path / "t.json").read_text())
    assert record["model"] == {"name": "unet", "encoder": "resnet18"} and len(result["rates"]) >= 2
