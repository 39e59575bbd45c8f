"""Does the numerical path a CPU job takes stay the same from one run to the next? The training
step timed on every candidate path (`im-core time-paths`) several times on a quiet machine and
several times beside a busy CPU, each timing fed to the chooser (im_core/runtime/path_rule.py:
the rule's path unless another beats it by the veto margin in every round), and the timings of
the issue that asked for it (an AMD EPYC, Zen 4) fed to it too.

    python bench/numeric_paths.py                 # 6 quiet + 6 busy timings of the demo store
    python bench/numeric_paths.py --runs 3

Each timing is a process of its own, kept in results/bench/numeric_paths/ (a rerun skips those it
has). Prints the table and writes docs/results/numeric_paths.md. About 3 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from im_core.config import validate_config  # noqa: E402
from im_core.runtime.cpu import cpu_flags, cpu_name  # noqa: E402
from im_core.runtime.path_rule import VETO_MARGIN, path_label, plan_cpu_path, recommend  # noqa: E402

WORK = REPO / "results" / "bench" / "numeric_paths"
# the issue's three back-to-back timings (images/s, one median each) on a 2-core AMD EPYC (Zen 4),
# 32 px, alpha 0.25, batch 8, with precision fp32 asked for
ISSUE_RUNS = [{("fp32", False): [434.0], ("fp32", True): [346.0], ("bf16", False): [423.0]},
              {("fp32", True): [441.0], ("fp32", False): [354.0]},
              {("fp32", False): [895.0], ("fp32", True): [845.0]}]
ZEN4_FLAGS = frozenset({"avx2", "avx512f", "avx512_bf16"})
BUSY = "import torch\ntorch.set_num_threads(2)\na = torch.randn(600, 600)\nwhile True:\n    a @ a"


def demo_store() -> Path:
    """The demo data set's store (built here once, as the workflow's prepare job builds it)."""
    store = WORK / "demo.zarr"
    if not store.exists():
        from im_core.data.store import prepare
        config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
        prepare(config["datasets"]["demo"], store)
    return store


def timing(store: Path, out: Path, alpha: float, batch: int, threads: int, rounds: int, busy: bool) -> dict:
    if not out.exists():
        load = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
        try:
            time.sleep(1.0 if busy else 0)
            subprocess.run([sys.executable, "-m", "im_core.cli", "time-paths", "--data", str(store), "--alpha", str(alpha),
                            "--batch-size", str(batch), "--threads", str(threads), "--rounds", str(rounds),
                            "--out", str(out)], check=True, cwd=REPO, capture_output=True)
        finally:
            if load:
                load.kill()
                load.wait()
    return json.loads(out.read_text())


def row_of(name: str, record: dict) -> dict:
    rounds = {(r["precision"], r["channels_last"]): r["images_per_second"] for r in record["rates"]}
    ranking = sorted(rounds, key=lambda k: -sorted(rounds[k])[len(rounds[k]) // 2])
    return {"timing": name, **{path_label(k): f"{sorted(v)[len(v) // 2]:.0f} ({min(v):.0f}-{max(v):.0f})"
                               for k, v in rounds.items()},
            "fastest (median)": path_label(ranking[0]), "rule": record["rule"], "chosen": record["recommended"]}


def markdown(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "–")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=6, help="timings on a quiet machine, and as many beside a busy CPU")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "numeric_paths.md"))
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    store = demo_store()
    rows = []
    for busy in (False, True):
        for i in range(args.runs):
            name = f"{'busy' if busy else 'quiet'}{i}"
            record = timing(store, WORK / f"{name}_a{args.alpha}_b{args.batch_size}_t{args.threads}.json", args.alpha,
                            args.batch_size, args.threads, args.rounds, busy)
            rows.append(row_of(name + (" (beside 2 busy threads)" if busy else ""), record))
    chosen = {r["chosen"] for r in rows}
    fastest = {r["fastest (median)"] for r in rows}
    issue_rule = plan_cpu_path("fp32", "auto", ZEN4_FLAGS, (32, 32))
    issue_rows = [{"timing": f"issue run {i + 1} (AMD EPYC Zen 4, fp32 asked)",
                   **{path_label(k): f"{v[0]:.0f}" for k, v in run.items()},
                   "fastest (median)": path_label(max(run, key=lambda k: run[k][0])), "rule": path_label(issue_rule),
                   "chosen": path_label(recommend(issue_rule, run))} for i, run in enumerate(ISSUE_RUNS)]
    text = "\n".join([
        "# Numerical path: one choice per machine",
        "",
        f"Written by `python bench/numeric_paths.py --runs {args.runs}` on {time.strftime('%Y-%m-%d')}: "
        f"{cpu_name()} (flags relevant here: "
        f"{', '.join(sorted(f for f in cpu_flags() if f.startswith(('avx512f', 'avx512_bf16', 'amx_bf16', 'avx2'))))}), "
        f"torch threads {args.threads}, the demo store (32 px), alpha {args.alpha}, batch {args.batch_size}, "
        f"{args.rounds} rounds per timing. Images/s: median (slowest–fastest round). `chosen`: what "
        f"`path_rule.recommend` makes of the timing (the rule's path unless another beats it by "
        f"{VETO_MARGIN}x in every round).",
        "",
        markdown(rows),
        "",
        f"Fastest path by median across these timings: {', '.join(sorted(fastest))}; chosen: {', '.join(sorted(chosen))}.",
        "",
        "The timings of the issue (one median per path; the choice the old timing-following code made "
        "changed with them):",
        "",
        markdown(issue_rows),
        "",
    ])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0 if len(chosen) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
