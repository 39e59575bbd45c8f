"""Same config, same machine, same numbers: the numerical path is planned by a rule of the CPU,
is part of every training job's params, and a run beside a busy CPU writes the same tables."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflow import snakemake

from im_core.runtime.cpu import cpu_flags
from im_core.runtime.path_rule import plan_cpu_path

TINY = {
    "datasets": {"tiny": {"source": "demo", "n_images": 60, "size": [32, 32], "seed": 1,
                          "labeled_fraction": 0.2, "val_fraction": 0.15, "test_fraction": 0.15}},
    "experiments": {"tiny": {
        "dataset": "tiny", "generations": 1, "seed": 0, "model": {"alpha": 0.25},
        "train": {"batch_size": 8, "steps": 12, "eval_every": 6, "predict_batch_size": 32},
        "stage0": {"models": 2}, "students": {"models": 2},
        "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2},
    }},
}
TARGET = "results/tiny/gen1/metrics.csv"


def workdir_with(tmp_path: Path, name: str, config: dict) -> Path:
    work = tmp_path / name
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def planned_train_commands(work: Path) -> list[str]:
    dry = snakemake(work, "-n", "-p", "--forceall", TARGET)
    assert dry.returncode == 0, dry.stderr[-3000:]
    return [line for line in dry.stdout.splitlines() if "im_core.cli train" in line]


def test_training_jobs_carry_the_rules_path_or_the_pin(tmp_path):
    precision, channels_last = plan_cpu_path("auto", "auto", cpu_flags(), (32, 32))
    commands = planned_train_commands(workdir_with(tmp_path, "auto", TINY))
    assert len(commands) == 4
    for command in commands:
        assert f'"precision": "{precision}"' in command and f'"channels_last": {str(channels_last).lower()}' in command
        assert "--threads 1" in command
    pinned = dict(TINY, compute={"numeric_path": {"precision": "fp32", "channels_last": False}, "train_threads": 3})
    for command in planned_train_commands(workdir_with(tmp_path, "pinned", pinned)):
        assert '"precision": "fp32"' in command and '"channels_last": false' in command
        # a job runs the configured threads whatever --cores grants (the threads change the sums)
        assert "--threads 3" in command


def busy_cpu() -> subprocess.Popen:
    """Two threads of matrix products, for as long as the test wants."""
    code = "import torch\ntorch.set_num_threads(2)\na = torch.randn(600, 600)\nwhile True:\n    a @ a"
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.mark.slow
def test_two_runs_from_scratch_one_beside_a_busy_cpu_write_the_same_tables(tmp_path):
    quiet = workdir_with(tmp_path, "quiet", TINY)
    busy_work = workdir_with(tmp_path, "busy", TINY)
    run = snakemake(quiet, TARGET)
    assert run.returncode == 0, run.stderr[-3000:]
    load = busy_cpu()
    try:
        run = snakemake(busy_work, TARGET)
    finally:
        load.kill()
        load.wait()
    assert run.returncode == 0, run.stderr[-3000:]
    for g in (0, 1):
        table = f"results/tiny/gen{g}/metrics.csv"
        assert (quiet / table).read_bytes() == (busy_work / table).read_bytes(), table

    # another path is another result, and Snakemake sees it: the training jobs rerun, for their params
    config = dict(TINY, compute={"numeric_path": {"precision": "fp32", "channels_last": False}})
    precision, channels_last = plan_cpu_path("auto", "auto", cpu_flags(), (32, 32))
    (quiet / "config.yaml").write_text(yaml.safe_dump(config))
    dry = snakemake(quiet, "-n", TARGET)
    if (precision, channels_last) == ("fp32", False):
        assert "Nothing to be done" in dry.stdout + dry.stderr
    else:
        assert "train_model" in dry.stdout and "Params have changed" in dry.stdout, dry.stdout[-3000:]
