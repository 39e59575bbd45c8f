"""Kill test: interrupt a small experiment at random points, rerun it plainly, compare results.

    python bench/kill_test.py                      # 24 kills in 4 chains (about 10 min on 2 cores)
    python bench/kill_test.py --kills 6 --chains 1

An uninterrupted run of a small two-generation experiment gives the reference tables. Each
chain then starts the same experiment in a fresh folder and, kill after kill, waits until a
job of the chosen step runs (data preparation, training, prediction, pseudo-labels, scoring;
kills at random places of the run's order of steps), waits a random moment and sends SIGKILL, SIGINT or SIGTERM to that job or to Snakemake; the
next plain `snakemake` call is the rerun (and may be killed in turn), the last one runs to the
end. Counted: kills, kills after which the plain rerun went on without help (a SIGKILL to
Snakemake itself leaves Snakemake's lock: the test then runs `snakemake --unlock`, as the
README tells a user, and does not count that recovery as plain), training jobs that resumed
from a saved step, and whether every generation's metrics.csv is byte-identical to the
reference with nothing partial left in results/. Writes docs/results/kill_test.md.
"""
from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from report import markdown_table, publish  # noqa: E402

EXPERIMENT = "kt"
CONFIG = {
    "default_experiments": [EXPERIMENT],
    "datasets": {"kt": {"source": "demo", "n_images": 200, "size": [32, 32], "seed": 1, "labeled_fraction": 0.2,
                        "val_fraction": 0.15, "test_fraction": 0.15}},
    "experiments": {EXPERIMENT: {
        "dataset": "kt", "generations": 2, "seed": 0, "model": {"alpha": 0.25},
        "train": {"batch_size": 8, "steps": 300, "eval_every": 30, "predict_batch_size": 32,
                  "precision": "fp32", "channels_last": False},
        "stage0": {"models": 2}, "students": {"models": 2},
        "pseudo_labels": {"teachers": 2}, "selection": {"top_k": 2},
    }},
}
TARGET = f"results/{EXPERIMENT}/gen2/metrics.csv"
# the steps of the experiment in the order its run reaches them (gen0; then gen1 and gen2)
SLOTS = ("prepare", "train", "predict", "score") + 2 * ("pseudo", "train", "predict", "score")
BENCHMARKS = {"prepare": "prepare_data", "train": "train_m", "predict": "predict_m", "score": "score_m",
              "pseudo": "build_pseudo_labels"}  # the steps' benchmark files (results/benchmarks/)
TRIES = 3
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)
VICTIMS = ("job", "snakemake")


@dataclass
class Kill:
    step: str
    victim: str
    signal: int
    done: bool = False          # the step was reached and the signal sent
    plain_rerun: bool = True    # the next snakemake call went on without --unlock or an error
    note: str = ""


@dataclass
class Chain:
    kills: list[Kill] = field(default_factory=list)
    identical: bool = False
    leftovers: list[str] = field(default_factory=list)
    resumed_jobs: int = 0
    final_rc: int | None = None


def snakemake_cmd(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--cores", "2", *extra]


def start(workdir: Path) -> subprocess.Popen:
    log = open(workdir / "snakemake-calls.log", "a")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen(snakemake_cmd(workdir, TARGET), stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def jobs_of(workdir: Path, step: str | None = None) -> list[int]:
    """Pids of im_core jobs running in `workdir` (of one step, or all)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "im_core.cli" in args and Path(cwd) == workdir:
            if step is None or args[args.index("im_core.cli") + 1] == step:
                found.append(int(entry.name))
    return found


def wait_for_job(proc: subprocess.Popen, workdir: Path, step: str, skip: set[int], timeout: float = 600) -> int | None:
    """The pid of a running job of `step` not in `skip`; None once Snakemake has ended."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        pids = [pid for pid in jobs_of(workdir, step) if pid not in skip]
        if pids:
            return pids[0]
        time.sleep(0.02)
    return None


def wait_for_validation(pid: int, timeout: float = 120) -> None:
    """Until the training job's log shows a validation (or the job ended)."""
    try:
        args = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")
        log = Path(os.readlink(f"/proc/{pid}/cwd")) / args[args.index("--log") + 1]
    except (OSError, ValueError, IndexError):
        return
    deadline = time.time() + timeout
    while time.time() < deadline and Path(f"/proc/{pid}").exists():
        if log.exists() and " val mIoU " in log.read_text(errors="replace"):
            return
        time.sleep(0.02)


def log_since(workdir: Path, offset: int) -> str:
    with open(workdir / "snakemake-calls.log", "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def rerun(workdir: Path, previous: Kill | None) -> subprocess.Popen:
    """A plain snakemake call; after a kill, checked for getting going on its own. Where it stops
    at once (Snakemake's lock after a SIGKILL to Snakemake, or an error), the kill is marked as
    not recovered plainly, `--unlock` is run where the lock was the cause, and it is called again."""
    log_file = workdir / "snakemake-calls.log"
    offset = log_file.stat().st_size if log_file.exists() else 0
    proc = start(workdir)
    if previous is None or not previous.done:
        return proc
    deadline = time.time() + 120
    while proc.poll() is None and "Job stats" not in log_since(workdir, offset) and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() in (None, 0):
        return proc
    text = log_since(workdir, offset)
    previous.plain_rerun = False
    if "cannot be locked" in text:
        previous.note = "Snakemake's lock: snakemake --unlock, then a plain rerun"
        subprocess.run(snakemake_cmd(workdir, "--unlock"), capture_output=True)
    else:
        previous.note = "rerun failed: " + " / ".join(text.strip().splitlines()[-3:])
    return start(workdir)


def shortest_jobs(reference: Path) -> dict[str, float]:
    """The shortest wall time of each step's jobs in the reference run (Snakemake's benchmark
    files), so that a signal lands at a random moment of a job's life."""
    out = {}
    for step, prefix in BENCHMARKS.items():
        times = [float(f.read_text().splitlines()[1].split("\t")[0])
                 for f in (reference / "results" / "benchmarks").rglob(f"{prefix}*.tsv")]
        out[step] = min(times) if times else 1.0
    return out


def run_chain(workdir: Path, kills: list[Kill], rng: random.Random, durations: dict[str, float]) -> Chain:
    """Kill after kill in one folder; after each kill the next plain snakemake call is the rerun."""
    chain, previous, seen = Chain(kills=kills), None, set()
    proc = rerun(workdir, None)
    for kill in kills:
        missed = 0
        for _ in range(TRIES):  # where a job ends before the signal, the next job of the step
            pid = wait_for_job(proc, workdir, kill.step, seen)
            if pid is None:
                break
            seen.add(pid)
            if kill.step == "train":  # after a validation, so that there is a state to resume from
                wait_for_validation(pid)
                time.sleep(rng.uniform(0, 0.5 * durations["train"]))
            else:
                time.sleep(rng.uniform(0, 0.8 * durations[kill.step]))
            try:
                os.kill(pid if kill.victim == "job" else proc.pid, kill.signal)
                kill.done = True
                break
            except ProcessLookupError:
                missed += 1
        if not kill.done:
            kill.note = (f"no job of this step left to hit ({missed} ended before the signal; snakemake "
                         f"{'running' if proc.poll() is None else f'exited {proc.returncode}'})")
            if proc.poll() not in (None, 0) and previous is not None:  # the rerun failed on its own
                previous.plain_rerun, previous.note = False, f"rerun failed (exit {proc.returncode})"
                proc = start(workdir)
            continue
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        previous = kill
        proc = rerun(workdir, previous)
    chain.final_rc = proc.wait(timeout=1800)
    if chain.final_rc != 0 and previous is not None:
        previous.plain_rerun, previous.note = False, f"rerun failed (exit {chain.final_rc})"
    while jobs_of(workdir):  # orphaned jobs of a SIGKILLed Snakemake finish or give up
        time.sleep(0.5)
    return chain


def tables(workdir: Path) -> dict[str, bytes]:
    out = {}
    for g in range(CONFIG["experiments"][EXPERIMENT]["generations"] + 1):
        path = workdir / f"results/{EXPERIMENT}/gen{g}/metrics.csv"
        out[f"gen{g}"] = path.read_bytes() if path.exists() else b""
    return out


def leftovers(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob(".*")
                  if any(tag in p.name for tag in (".partial-", ".resume", ".claim", ".tmp-")))


def resumed_jobs(workdir: Path) -> int:
    """Training jobs whose final model continued from a saved step, or was restored finished
    (after Snakemake, interrupted, had removed it)."""
    models = list((workdir / "results" / EXPERIMENT).glob("gen*/models/m*/model.pt"))
    resumed = sum(bool(torch.load(p, map_location="cpu", weights_only=True).get("resumed_at")) for p in models)
    logs = (workdir / "results" / "logs" / EXPERIMENT).glob("gen*/train_m*.log")
    return resumed + sum("restored the model this job had finished" in log.read_text() for log in logs)


def plan(n_kills: int, n_chains: int, rng: random.Random) -> list[list[Kill]]:
    """Kills per chain at random places of the workflow's order of steps (SLOTS), each chain's in
    that order (data preparation in every other chain); victims and signals cycle through all
    six combinations."""
    combos = list(itertools.product(VICTIMS, SIGNALS))
    rng.shuffle(combos)
    targets = itertools.cycle(combos)
    chains = []
    for i in range(n_chains):
        k = n_kills // n_chains + (i < n_kills % n_chains)
        if k <= len(SLOTS):  # every other chain is also killed while it prepares the data (it does so once)
            rest = rng.sample(range(1, len(SLOTS)), k - (i % 2 == 0))
            slots = sorted(rest + [0] * (i % 2 == 0))
        else:
            slots = sorted(rng.choices(range(len(SLOTS)), k=k))
        chains.append([Kill(SLOTS[s], *next(targets)) for s in slots])
    return chains


def new_workdir(root: Path, name: str) -> Path:
    workdir = root / name
    workdir.mkdir(parents=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return workdir


def kill_test(chains_of_kills: list[list[Kill]], root: Path, rng: random.Random) -> list[Chain]:
    """The reference run, then each chain in a fresh folder under `root`, checked against it."""
    reference = new_workdir(root, "reference")
    ref = subprocess.run(snakemake_cmd(reference, TARGET), capture_output=True, text=True)
    if ref.returncode != 0:
        raise RuntimeError(f"reference run failed:\n{ref.stderr[-3000:]}")
    expected, durations = tables(reference), shortest_jobs(reference)
    chains = []
    for i, kills in enumerate(chains_of_kills):
        workdir = new_workdir(root, f"chain{i}")
        chain = run_chain(workdir, kills, rng, durations)
        chain.identical = chain.final_rc == 0 and tables(workdir) == expected
        chain.leftovers = leftovers(workdir)
        chain.resumed_jobs = resumed_jobs(workdir) if chain.final_rc == 0 else 0
        chains.append(chain)
        print(f"chain {i}: {sum(k.done for k in chain.kills)} kills, final rc {chain.final_rc}, identical "
              f"{chain.identical}, resumed training jobs {chain.resumed_jobs}, leftovers {chain.leftovers}",
              flush=True)
    return chains


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=24)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the work folders")
    p.add_argument("--out", default=str(REPO / "docs" / "results" / "kill_test.md"))
    a = p.parse_args()
    rng = random.Random(a.seed)
    root = Path(tempfile.mkdtemp(prefix="kill_test_"))
    started = time.time()
    chains = kill_test(plan(a.kills, a.chains, rng), root, rng)
    rows = []
    for i, chain in enumerate(chains):
        for kill in chain.kills:
            rows.append([i, kill.step, kill.victim, signal.Signals(kill.signal).name,
                         "yes" if kill.done else "no", "yes" if kill.plain_rerun else "no", kill.note])
    done = [k for c in chains for k in c.kills if k.done]
    summary = {
        "kills sent": len(done),
        "of them during training": sum(k.step == "train" for k in done),
        "kills planned but not sent (no job of the step left)": sum(not k.done for c in chains for k in c.kills),
        "plain reruns recovered": sum(k.plain_rerun for k in done),
        "recovered after snakemake --unlock": sum(not k.plain_rerun for k in done),
        "chains with every metrics.csv identical to the uninterrupted run": f"{sum(c.identical for c in chains)} of {len(chains)}",
        "training jobs that resumed from a saved step or restored their finished model": sum(c.resumed_jobs for c in chains),
        "partial, claim or resume files left in results/": sum(len(c.leftovers) for c in chains),
        "wall time (s)": round(time.time() - started),
    }
    text = ("Kill test (`python bench/kill_test.py --kills %d --chains %d --seed %d`)\n\n" % (a.kills, a.chains, a.seed)
            + markdown_table(["", "count"], [[k, v] for k, v in summary.items()]) + "\n\n"
            + markdown_table(["chain", "step", "signal to", "signal", "sent", "plain rerun", "note"], rows) + "\n")
    publish(text, a.out)
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"work folders kept in {root}")
    if not all(c.identical for c in chains) or any(c.leftovers for c in chains):
        sys.exit(1)


if __name__ == "__main__":
    main()
