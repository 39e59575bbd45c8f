"""Kill test: interrupt a small experiment at random points, rerun it plainly, compare results.

    python bench/kill_test.py                      # 24 kills in 4 chains (about 10 min on 2 cores)
    python bench/kill_test.py --kills 6 --chains 1

An uninterrupted run of a small two-generation experiment gives the reference tables. Each
chain then starts the same experiment in a fresh folder and, kill after kill, waits until a
job of the chosen step runs (data preparation, training, prediction, pseudo-labels, scoring),
waits a random moment and sends SIGKILL, SIGINT or SIGTERM to that job or to Snakemake; the
next plain `snakemake` call is the rerun (and may be killed in turn), the last one runs to the
end. Counted: kills, kills after which the plain rerun went on without help (a SIGKILL to
Snakemake itself leaves Snakemake's lock: the test then runs `snakemake --unlock`, as the
README tells a user, and does not count that recovery as plain), training jobs that resumed
from a saved step, and whether every generation's metrics.csv is byte-identical to the
reference with nothing partial left in results/. Writes bench/results/kill_test.md.
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
STEPS = ("prepare", "train", "predict", "pseudo", "score")
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


def wait_for_job(proc: subprocess.Popen, workdir: Path, step: str, timeout: float = 300) -> int | None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        pids = jobs_of(workdir, step)
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


def run_chain(workdir: Path, kills: list[Kill], rng: random.Random) -> Chain:
    chain, previous = Chain(kills=kills), None
    for kill in kills:
        proc = rerun(workdir, previous)
        pid = wait_for_job(proc, workdir, kill.step)
        if pid is None:
            kill.note = "step not reached (already done)"
            proc.wait()
            continue
        if kill.step == "train":  # after a validation, so that there is a state to resume from
            wait_for_validation(pid)
        time.sleep(rng.uniform(0, {"train": 1.0, "prepare": 0.5}.get(kill.step, 1.0)))
        try:
            os.kill(pid if kill.victim == "job" else proc.pid, kill.signal)
            kill.done = True
        except ProcessLookupError:
            kill.note = "the job ended before the signal"
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        previous = kill if kill.done else previous
    proc = rerun(workdir, previous)
    chain.final_rc = proc.wait(timeout=1800)
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
    models = (workdir / "results" / EXPERIMENT).glob("gen*/models/m*/model.pt")
    return sum(bool(torch.load(p, map_location="cpu", weights_only=False).get("resumed_at")) for p in models)


def plan(n_kills: int, rng: random.Random) -> list[Kill]:
    """Every step, victim and signal in turn (shuffled), so that 24 kills cover all 30
    combinations' steps and signals evenly."""
    combos = list(itertools.product(STEPS, VICTIMS, SIGNALS))
    rng.shuffle(combos)
    return [Kill(*c) for c in itertools.islice(itertools.cycle(combos), n_kills)]


def chain_order(kills: list[Kill]) -> list[Kill]:
    """Within a chain, steps in the order the workflow reaches them first (a finished data
    preparation cannot be killed again)."""
    return sorted(kills, key=lambda k: k.step != "prepare")


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
    expected = tables(reference)
    chains = []
    for i, kills in enumerate(chains_of_kills):
        workdir = new_workdir(root, f"chain{i}")
        chain = run_chain(workdir, kills, rng)
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
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "kill_test.md"))
    a = p.parse_args()
    rng = random.Random(a.seed)
    root = Path(tempfile.mkdtemp(prefix="kill_test_"))
    started = time.time()
    kills = plan(a.kills, rng)
    chains = kill_test([chain_order(kills[i::a.chains]) for i in range(a.chains)], root, rng)
    rows = []
    for i, chain in enumerate(chains):
        for kill in chain.kills:
            rows.append([i, kill.step, kill.victim, signal.Signals(kill.signal).name,
                         "yes" if kill.done else "no", "yes" if kill.plain_rerun else "no", kill.note])
    done = [k for c in chains for k in c.kills if k.done]
    summary = {
        "kills sent": len(done),
        "of them to training jobs or during training": sum(k.step == "train" for k in done),
        "plain reruns recovered": sum(k.plain_rerun for k in done),
        "recovered after snakemake --unlock": sum(not k.plain_rerun for k in done),
        "chains with every metrics.csv identical to the uninterrupted run": f"{sum(c.identical for c in chains)} of {len(chains)}",
        "training jobs that resumed from a saved step": sum(c.resumed_jobs for c in chains),
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
