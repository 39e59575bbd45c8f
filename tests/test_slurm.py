"""The shipped SLURM profile against a real SLURM: a single-node cluster on localhost
(tests/slurm/cluster.sh: munged, slurmctld and slurmd), a tiny experiment to gen 1 through
the profile, and SLURM's own record that the jobs ran as SLURM jobs."""
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from test_workflow import REPO, TINY

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"


def _why_not():
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol") if not shutil.which(b)]
    if missing:
        return f"SLURM is not installed here (missing {', '.join(missing)}); apt-get install slurm-wlm munge (.ci/run does)"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURM_CONF=str(base / "slurm.conf"))
    start = subprocess.run(["bash", str(CLUSTER), "start", str(base)], capture_output=True, text=True, env=env, timeout=120)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield base, env
    finally:
        stop = subprocess.run(["bash", str(CLUSTER), "stop", str(base)], capture_output=True, text=True, env=env, timeout=120)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        left = subprocess.run(["pgrep", "-af", str(base)], capture_output=True, text=True).stdout
        assert not re.search(r"slurmctld|slurmd|munged", left), f"daemons left running: {left}"


def test_tiny_experiment_runs_as_slurm_jobs_through_the_profile(cluster, tmp_path, capsys):
    base, env = cluster
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(TINY))
    # The shipped profile, with only the keys a user edits set for this cluster.
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    profile["slurm-no-account"] = True
    profile["slurm-status-command"] = "squeue"  # no accounting database on the test cluster
    profile["default-resources"]["slurm_partition"] = "debug"
    for rule in ("train_model", "predict"):  # the test node has no GPU, few cores
        profile["set-resources"][rule].update({"gpu": 0, "cpus_per_task": 1, "mem_mb": 2000})
    profile["latency-wait"] = 5
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))

    started = time.time()
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
         "--configfile", str(work / "config.yaml"), "--profile", str(tmp_path / "profile"),
         "--slurm-init-seconds-before-status-checks", "2", "results/tiny/gen1/metrics.csv"],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    wall = time.time() - started
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert (work / "results" / "tiny" / "gen1" / "metrics.csv").exists()

    job_ids = sorted(set(re.findall(r"SLURM jobid (\d+)", out)), key=int)
    # prepare_data, 2 x (train, predict, score) per generation, build_pseudo_labels; the rest is local
    assert len(job_ids) >= 1 + 2 * 3 * 2 + 1, out[-3000:]
    states = {}
    for job_id in job_ids:
        show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, env=env)
        name = re.search(r"Comment=(\S+)", show.stdout) or re.search(r"JobName=(\S+)", show.stdout)
        state = re.search(r"JobState=(\w+)", show.stdout)
        states[job_id] = (name.group(1) if name else "?", state.group(1) if state else show.stderr.strip())
    with capsys.disabled():  # shown in CI's output, which is where it is read
        print(f"\nSLURM jobs of the run ({wall:.0f} s), as scontrol reports them:")
        for job_id, (name, state) in states.items():
            print(f"  {job_id:>4}  {state:<10} {name}")
    assert all(state == "COMPLETED" for _, state in states.values()), states
    completions = (base / "jobcomp.txt").read_text()
    for job_id in job_ids:
        assert re.search(rf"JobId={job_id} .*JobState=COMPLETED", completions), job_id
    # the jobs' own logs are where SLURM wrote them, one per job
    slurm_logs = list((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert len(slurm_logs) >= len(job_ids)
    train_logs = [p for p in slurm_logs if "train_model" in str(p)]
    assert train_logs and any(p.stem in job_ids for p in train_logs)
