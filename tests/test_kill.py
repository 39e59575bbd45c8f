"""A short kill test (bench/kill_test.py runs the long one): a training job killed after a
validation, Snakemake stopped during prediction and a pseudo-label job interrupted; plain
reruns end with the uninterrupted run's tables, the training job resumed, nothing partial left."""
import random
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from kill_test import Kill, kill_test  # noqa: E402


@pytest.mark.slow
def test_killed_jobs_recover_with_a_plain_rerun_to_identical_results(tmp_path):
    kills = [Kill("train", "job", signal.SIGKILL), Kill("predict", "snakemake", signal.SIGTERM),
             Kill("pseudo", "job", signal.SIGINT)]
    [chain] = kill_test([kills], tmp_path, random.Random(0))
    assert [k.done for k in kills] == [True] * 3, [k.note for k in kills]
    assert all(k.plain_rerun for k in kills), [k.note for k in kills]
    assert chain.final_rc == 0 and chain.identical
    assert chain.leftovers == []
    assert chain.resumed_jobs >= 1
