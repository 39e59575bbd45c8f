"""Training and prediction throughput of the project's step against a plain eager fp32 loop.

    python bench/throughput.py [--sizes 32 128 256] [--alphas 0.5 1] [--batch 16] [--seconds 4] [--as-avx2]
    python bench/throughput.py --model unet --encoder resnet18 [--sizes 64] [--gradient-checkpointing]
    python bench/throughput.py --models        # the model table: docs/results/models_throughput.md

For every size x width, two processes, one after the other, each alternating its loops round
by round (so they are timed side by side on the same machine state). The first, with glibc's
default allocator, measures:
- the project's training step: batches drawn from the uint8 training set in memory, flips and
  scale-crops on the batch, loss and AdamW step on the numerical path a training job takes
  (precision and memory format auto: the rule of runtime/path_rule.py; every candidate path is
  timed beside it, as `im-core time-paths` times them), i.e. what `im-core train` runs per step;
- the same step forced to fp32 and contiguous memory (the rule's path on a CPU without native
  bf16 or AVX-512 at 32 px), which separates the data pipeline's gain from the numerical path's;
- a plain reference loop: the same model and batch size in fp32, contiguous, eager, on float
  tensors prepared once (no data pipeline, no augmentation);
- prediction images/s of each (the project's `predict_labels` on its path vs a plain fp32
  no-grad forward);
- GFLOP/s from the counted FLOPs of one forward + backward, against a matmul peak measured in
  the same process (fp32, and bf16 where the CPU computes it natively);
- the process's peak resident memory.
The second keeps freed memory in the heap, as every job of the project does
(`runtime.start_job`), and measures the project's step and prediction and the plain loop again;
on a CPU it also profiles five project steps for the time inside the convolution and batch-norm
kernels, printed beside the time a step may take for 3x the plain loop: where the kernels alone
exceed it, no arrangement of the same eager kernels reaches 3x.
The headline ratio is the project's step as a job runs it against the plain loop with the
default allocator; the other columns split the gain. The heap-kept process runs first, times the paths and
chooses; the other runs its choice. The median round counts. Threads: one at
32 px (one job per core, as a local run schedules the demo), all cores above. Prints a Markdown table and
writes it to docs/results/throughput.md (and .csv). An absolute figure holds only for the CPU
named in the header; the ratio is what compares.

On a GPU every loop runs there: the plain loop in fp32 with cuDNN as it comes (no autotuning),
the project's step on the GPU path (autocast, channels-last, cuDNN autotuning, CUDA graphs) and,
in a column of its own, on that path without CUDA graphs; the matmul peaks are the GPU's and
the memory column adds the peak of allocated GPU memory. Nothing is timed per path there (a
training job on a GPU takes the rule's path).

`--as-avx2` runs every configuration with the instruction sets capped at AVX2
(ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS), so a CPU with AVX-512 or
AMX runs the kernels an AVX2-only CPU runs, and `auto` chooses as it would there; it writes
docs/results/throughput_avx2.md. Caches, clocks and core count stay this machine's.

`--model NAME --encoder ENC` measures an architecture of the model zoo (models/registry.py; the
encoder with `weights: none`, random: nothing is downloaded) with the same machinery and prints
a model table: architecture, encoder, parameters (`count_parameters`), image size, train and
predict images/s of the project's step and prediction, and their ratio to the plain eager fp32
loop of the same model. It is the short form: the project's step on the rule's path (nothing
timed per path), no fp32-contiguous step, no kernel profile, no matmul peaks; two processes as
above (the project's figures with the heap kept, the plain loop's with the default allocator).
`--gradient-checkpointing` adds the project's step with `model.gradient_checkpointing` on (not
for unet1x1; `--models` does). `--models` runs the preset table (MODEL_PRESET: the 1x1 U-Net at alpha 0.5, U-Net
and FPN on ResNet-18, DeepLabV3+ on ResNet-50 at 64 px, DPT on DINOv2 ViT-S/14 at 112 px), about
6 minutes on 2 cores, and writes docs/results/models_throughput.md (and .csv); `--model` writes
docs/results/models_throughput_<name>_<encoder>.md.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

from report import publish, usable_flags  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's, as it
    survives exec)."""
    for line in open("/proc/self/status", encoding="utf-8"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def matmul_peak(dtype, threads: int, device="cpu", n: int = 2048, seconds: float = 1.5) -> float:
    """GFLOP/s of an n x n matrix product (on a GPU: n = 8192, and fp32 without TF32, torch's
    default for matrix products; cuDNN's convolutions take TF32 by default)."""
    import torch
    from im_core.runtime.path_timings import images_per_second
    torch.set_num_threads(threads)
    n = 8192 if torch.device(device).type == "cuda" else n
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b
    # on a GPU each product waits for the last: a queue of a thousand 20-ms products would take
    # 20 s to drain after the clock stops
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    return 2 * n**3 * images_per_second(lambda: (a @ b, sync()), 1, seconds) / 1e9


KERNELS = {"convolution": ("aten::mkldnn_convolution", "aten::convolution_backward"),
           "batch norm": ("aten::native_batch_norm", "aten::native_batch_norm_backward",
                          "aten::_native_batch_norm_legit", "aten::_native_batch_norm_legit_no_training")}


def kernel_ms_per_step(step, steps: int = 5) -> dict:
    """Milliseconds per step spent inside the convolution and batch-norm kernels: the profiler's
    self time of those operators (oneDNN's and ATen's computation, no dispatch). What the rest of
    a step costs is what a better arrangement of the same eager kernels could save."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    return {name: sum(self_us.get(op, 0) for op in ops) / steps / 1000 for name, ops in KERNELS.items()}


# the model table of `--models`: (architecture, encoder, alpha, image size)
MODEL_PRESET = [("unet1x1", None, 0.5, 64), ("unet", "resnet18", None, 64), ("deeplabv3plus", "resnet50", None, 64),
                ("fpn", "resnet18", None, 64), ("dpt", "tu-vit_small_patch14_dinov2", None, 112)]


def model_spec(name: str, encoder: str | None, alpha: float | None) -> dict:
    """build_model's arguments for an architecture (the encoder's weights: none)."""
    return {"alpha": alpha if alpha is not None else 1.0} if name == "unet1x1" else {"name": name, "encoder": encoder}


def measure(size: int, alpha: float, batch: int, threads: int, seconds: float, rounds: int,
            heap_kept: bool = False, path_settings: dict | None = None, spec: dict | None = None,
            short: bool = False, checkpointing: bool = False) -> dict:
    """One configuration, in this process: with glibc's default allocator, or (`heap_kept`) with
    freed memory kept in the heap as a job of the project runs (`runtime.keep_freed_memory`,
    which cannot be undone within a process). The project's step runs on `path_settings`, or
    where None on the path a training job takes (the rule, runtime/path_rule.py), beside the step
    timed on each candidate path as `im-core time-paths` times it. `spec`: build_model's
    arguments (default: the 1x1 U-Net of width `alpha`); `short`: the model table's form (the
    rule's path untimed, no fp32-contiguous step, kernel profile or matmul peaks);
    `checkpointing`: also the project's step with gradient checkpointing on."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from im_core.data.augment import NO_AUGMENT
    from im_core.data.batches import Batches, TrainingTensors
    from im_core.models import build_model, count_parameters
    from im_core.models.inference import predict_labels
    from im_core.models.losses import segmentation_loss
    from im_core.runtime.cpu import cpu_has_native_bf16
    from im_core.runtime.cuda_graphs import training_forward
    from im_core.runtime.devices import pick_device
    from im_core.runtime.numeric_path import choose_path
    from im_core.runtime.path_rule import path_label
    from im_core.runtime.path_timings import ROUNDS, SECONDS_PER_ROUND, candidate_paths, images_per_second, time_paths
    from im_core.runtime.process import keep_freed_memory
    from im_core.settings import NumericRequest
    from im_core.trainers.optim import make_optimizer
    from im_core.trainers.step import Objective, training_step

    torch.set_num_threads(threads)
    device = pick_device()
    cuda = device.type == "cuda"
    if heap_kept and not keep_freed_memory():
        raise SystemExit("this C library does not take glibc's mallopt settings")
    classes, n_images = 6, 4 * batch
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, (n_images, size, size), dtype=np.uint8)
    augment = dataclasses.replace(NO_AUGMENT, hflip=True, scale=(0.5, 1.0))
    spec = spec or {"alpha": alpha}

    # the project's step, on the path chosen for this machine and on plain fp32 (what a CPU
    # without native bf16 and AVX-512 runs at 32 px): the latter isolates the data pipeline's share
    def project(settings: dict, gradient_checkpointing: bool = False):
        path = choose_path(NumericRequest(**settings), (size, size), graph_eligible=not gradient_checkpointing)
        torch.manual_seed(0)
        model = path.model(build_model(3, classes, **spec))
        if gradient_checkpointing:  # as the training set-up applies model.gradient_checkpointing
            model.set_gradient_checkpointing(True)
        opt, scaler = make_optimizer(model, "adamw", lr=1e-3, weight_decay=1e-4), path.grad_scaler()
        stream = iter(Batches(TrainingTensors.from_arrays(images, labels, device=path.device), batch, augment,
                              torch.Generator(device=path.device).manual_seed(0)))
        forward = training_forward(model, path)
        objective = Objective("multiclass", 255)
        step = lambda: training_step(forward, opt, scaler, path, *next(stream), objective)  # noqa: E731
        predict = lambda: predict_labels(model, images, "multiclass", classes, n_images, path)  # noqa: E731
        return path, step, predict

    rule = choose_path(NumericRequest(), (size, size), graph_eligible=True)
    path_rates = None
    if path_settings is None and (cuda or short):  # a training job on a GPU takes the rule's path
        path_settings = {"precision": rule.precision, "channels_last": rule.channels_last} if short else {}
    if path_settings is None:
        timed = time_paths(lambda p: project({"precision": p.precision, "channels_last": p.channels_last})[1],
                           candidate_paths(cpu_has_native_bf16()), batch, ROUNDS, SECONDS_PER_ROUND)
        path_rates = {(p.precision, p.channels_last): statistics.median(v) for p, v in timed.items()}
        path_settings = {"precision": rule.precision, "channels_last": rule.channels_last}
    path, project_step, project_predict = project(path_settings)
    fp32_step = (None if heap_kept or short
                 else project({"precision": "fp32", "channels_last": False, "cuda_graphs": False})[1])
    # the project's step with gradient checkpointing (the rule's path; no CUDA graphs with it)
    checkpointed_step = (project({**path_settings, "cuda_graphs": False}, gradient_checkpointing=True)[1]
                         if checkpointing else None)
    # on a GPU, the same path without CUDA graphs: what the graphs add
    eager_step = project({**path_settings, "cuda_graphs": False})[1] if path.cuda_graph else None

    # the plain eager fp32 loop on tensors
    torch.manual_seed(0)
    plain = build_model(3, classes, **spec).to(device)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-3, weight_decay=1e-4)
    x = torch.from_numpy(images[:batch]).permute(0, 3, 1, 2).float().contiguous().to(device)
    y = torch.from_numpy(labels[:batch]).long().to(device)
    all_x = torch.from_numpy(images).permute(0, 3, 1, 2).float().contiguous().to(device)
    # cuDNN as a plain loop finds it: no autotuning (the project's path turns it on)
    plain_cudnn = (lambda: torch.backends.cudnn.flags(enabled=True, benchmark=False)) if cuda else contextlib.nullcontext

    def plain_step():
        with plain_cudnn():
            loss = torch.nn.functional.cross_entropy(plain(x), y)
            plain_opt.zero_grad(set_to_none=True)
            loss.backward()
            plain_opt.step()

    @torch.no_grad()
    def plain_predict():
        plain.eval()
        with plain_cudnn():
            plain(all_x).argmax(1).cpu()
        plain.train()

    flops = FlopCounterMode(display=False)
    with flops, plain_cudnn():
        segmentation_loss(plain(x), y, "multiclass").backward()
    plain_opt.zero_grad(set_to_none=True)
    train_flops_per_image = flops.get_total_flops() / batch

    def rate(fn, images_per_call: int) -> float:
        fn()  # warm-up (first-call allocations, oneDNN primitive creation)
        return images_per_second(fn, images_per_call, seconds / rounds)

    loops = {"train_plain": (plain_step, batch), "train_project": (project_step, batch),
             "train_project_fp32": (fp32_step, batch), "train_project_eager": (eager_step, batch),
             "train_project_checkpointing": (checkpointed_step, batch),
             "predict_plain": (plain_predict, n_images),
             "predict_project": (project_predict, n_images)}
    loops = {name: loop for name, loop in loops.items() if loop[0] is not None}
    rates = {k: [] for k in loops}
    for _ in range(rounds):
        for name, (fn, images_per_call) in loops.items():
            rates[name].append(rate(fn, images_per_call))
    out = {k: statistics.median(v) for k, v in rates.items()}
    if heap_kept and not cuda and not short:   # CPU self time is the kernels' time; on a GPU it is their launch
        out["kernel_ms"] = kernel_ms_per_step(project_step)
    out.update(size=size, alpha=alpha, batch=batch, threads=threads, path=path.as_dict(), rule_path=rule.as_dict(),
               spec=spec, parameters=count_parameters(plain),
               path_rates={path_label(key): rate for key, rate in (path_rates or {}).items()},
               gflop_per_image=train_flops_per_image / 1e9,
               peak_fp32=None if short else matmul_peak(torch.float32, threads, device),
               peak_bf16=(matmul_peak(torch.bfloat16, threads, device) if not short and (cuda or cpu_has_native_bf16())
                          else None),
               peak_rss_mb=peak_rss_mb(),
               peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None)
    return out


def machine_header(batch: int) -> str:
    """The CPU, the flags the kernels may use (after any instruction-set cap) and torch's build."""
    import torch
    from im_core.runtime.cpu import cpu_name
    usable = usable_flags()
    caps = [f"{k}={os.environ[k]}" for k in AVX2_CAPS if os.environ.get(k)]
    return (f"CPU: {cpu_name()}, {os.cpu_count()} cores; flags used: {', '.join(usable) or 'none of avx2/avx512/bf16'}"
            f"{'; capped: ' + ', '.join(caps) if caps else ''}; torch {torch.__version__} "
            f"({torch.backends.cpu.get_cpu_capability()}); "
            f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}; batch {batch}")


def table(rows: list[dict]) -> str:
    """One line per configuration: the project's step as a job runs it (heap kept) against the
    plain loop with the default allocator, and the figures that split the gain."""
    head = ("| size | α | threads | project path | train img/s plain | train img/s project | ratio | "
            "project, default allocator | project on fp32, contiguous, default allocator | project without CUDA graphs | "
            "plain, heap kept | "
            "predict img/s plain | predict img/s project | ratio | GFLOP/s plain → project | "
            "ms a step: conv + batch-norm kernels of the whole (3× budget) | "
            "matmul peak fp32 / bf16 | peak RSS MB |")  # GPU: the peak of allocated GPU memory too
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        h, p, rule = r["heap"], r["path"], r["rule_path"]
        plain = r["train_plain"]
        path = f"{p['precision']}{', channels-last' if p['channels_last'] else ''}{', CUDA graphs' if p.get('cuda_graph') else ''}"
        eager = f"{r['train_project_eager'] / plain:.2f}×" if r.get("train_project_eager") else "–"
        if (p["precision"], p["channels_last"]) != (rule["precision"], rule["channels_last"]):
            path += f" (timed; rule: {rule['precision']}{', channels-last' if rule['channels_last'] else ''})"
        peak = f"{r['peak_fp32']:.0f} / {r['peak_bf16']:.0f}" if r["peak_bf16"] else f"{r['peak_fp32']:.0f} / –"
        kernels = h.get("kernel_ms")
        step_ms, budget_ms = 1000 * r["batch"] / h["train_project"], 1000 * r["batch"] / (3 * plain)
        floor = (f"{kernels['convolution']:.1f} + {kernels['batch norm']:.1f} of {step_ms:.1f} ({budget_ms:.1f})"
                 if kernels else "–")
        memory = f"{h['peak_rss_mb']:.0f}" + (f" (GPU {h['peak_gpu_mb']:.0f})" if h.get("peak_gpu_mb") else "")
        lines.append(
            f"| {r['size']}² | {r['alpha']} | {r['threads']} | {path} | {plain:.1f} | {h['train_project']:.1f} | "
            f"**{h['train_project'] / plain:.2f}×** | {r['train_project'] / plain:.2f}× | "
            f"{r['train_project_fp32'] / plain:.2f}× | {eager} | {h['train_plain'] / plain:.2f}× | {r['predict_plain']:.1f} | "
            f"{h['predict_project']:.1f} | {h['predict_project'] / r['predict_plain']:.2f}× | "
            f"{r['gflop_per_image'] * plain:.1f} → {r['gflop_per_image'] * h['train_project']:.1f} | "
            f"{floor} | {peak} | {memory} |")
    return "\n".join(lines)


def model_table(rows: list[dict]) -> str:
    """The model table: one line per architecture x encoder x size; the project's figures as a
    job runs them (heap kept) against the plain eager fp32 loop of the same model (default
    allocator), as the headline ratio of `table`."""
    checkpointing = any(r["heap"].get("train_project_checkpointing") for r in rows)
    head = ("| architecture | encoder | parameters | size | threads | project path | train img/s plain | "
            "train img/s project | ratio | predict img/s plain | predict img/s project | ratio | "
            + ("train img/s project, gradient checkpointing | " if checkpointing else "")
            + "GFLOP an image (train) | peak RSS MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        h, p, spec = r["heap"], r["path"], r["spec"]
        name = spec.get("name", "unet1x1")
        encoder = spec.get("encoder") or f"– (α {spec['alpha']})"
        path = f"{p['precision']}{', channels-last' if p['channels_last'] else ''}{', CUDA graphs' if p.get('cuda_graph') else ''}"
        plain, ckpt = r["train_plain"], h.get("train_project_checkpointing")
        ckpt_cell = (f"{ckpt:.1f} ({ckpt / h['train_project']:.2f}× of without) | " if ckpt else "– | ") if checkpointing else ""
        memory = f"{h['peak_rss_mb']:.0f}" + (f" (GPU {h['peak_gpu_mb']:.0f})" if h.get("peak_gpu_mb") else "")
        lines.append(
            f"| {name} | {encoder} | {r['parameters'] / 1e6:.2f} M | {r['size']}² | {r['threads']} | {path} | "
            f"{plain:.1f} | {h['train_project']:.1f} | **{h['train_project'] / plain:.2f}×** | "
            f"{r['predict_plain']:.1f} | {h['predict_project']:.1f} | {h['predict_project'] / r['predict_plain']:.2f}× | "
            f"{ckpt_cell}{r['gflop_per_image']:.2f} | {memory} |")
    return "\n".join(lines)


def run_models(models: list[tuple], a, env: dict, header: str, out: Path) -> None:
    """The model table over `models` (architecture, encoder, alpha, size): per row the heap-kept
    process (the project's figures as a job runs them) and the default-allocator one (the plain
    loop's), each alternating its loops round by round."""
    rows = []
    for name, encoder, alpha, size in models:
        spec = model_spec(name, encoder, alpha)
        threads = a.threads or (1 if size <= 32 else os.cpu_count())
        cmd = [sys.executable, __file__, "--one", json.dumps([size, spec.get("alpha", 1.0), threads]),
               "--spec", json.dumps(spec), "--short", "--batch", str(a.batch), "--seconds", str(a.seconds),
               "--rounds", str(a.rounds)]
        started = time.perf_counter()
        checkpointing = ["--gradient-checkpointing"] if (a.gradient_checkpointing or a.models) and name != "unet1x1" else []
        heap = one_process(cmd + ["--heap-kept"] + checkpointing, env)
        row = one_process(cmd, env)
        rows.append({**row, "heap": heap})
        print(f"  {name} {encoder or ''} {size}²: {row['parameters'] / 1e6:.2f} M parameters; train "
              f"{heap['train_project'] / row['train_plain']:.2f}× of the plain loop ({row['train_plain']:.1f} → "
              f"{heap['train_project']:.1f} img/s), predict {heap['predict_project'] / row['predict_plain']:.2f}× "
              f"({row['predict_plain']:.1f} → {heap['predict_project']:.1f}); {time.perf_counter() - started:.0f} s",
              flush=True)
    command = "python bench/throughput.py " + " ".join(sys.argv[1:])
    publish(f"{header}\n\n`{command}`, {time.strftime('%Y-%m-%d')}; encoders with random weights (`weights: none`); "
            f"{a.rounds} alternating rounds of {a.seconds / a.rounds:.1f} s a loop, the median round.\n\n"
            f"{model_table(rows)}\n", out.with_suffix(".md"))
    import pandas as pd
    pd.DataFrame([{"architecture": r["spec"].get("name", "unet1x1"), "encoder": r["spec"].get("encoder"),
                   "alpha": r["spec"].get("alpha"), "parameters": r["parameters"], "size": r["size"],
                   "threads": r["threads"], "batch": r["batch"], "path_precision": r["path"]["precision"],
                   "path_channels_last": r["path"]["channels_last"], "train_plain": r["train_plain"],
                   "train_project": r["heap"]["train_project"], "predict_plain": r["predict_plain"],
                   "predict_project": r["heap"]["predict_project"],
                   "train_project_checkpointing": r["heap"].get("train_project_checkpointing"),
                   "gflop_per_image": r["gflop_per_image"], "peak_rss_mb": r["heap"]["peak_rss_mb"]}
                  for r in rows]).to_csv(out.with_suffix(".csv"), index=False)
    print(f"written: {out.with_suffix('.csv')}")


def one_process(cmd: list[str], env: dict) -> dict:
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.strip()
                      .splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 256])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.5, 1.0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0, help="time per loop per configuration")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="default: 1 at 32 px, all cores above")
    ap.add_argument("--as-avx2", action="store_true", help="cap the instruction sets at AVX2 (see above)")
    ap.add_argument("--out", default=None, help="default: docs/results/throughput[_avx2], models_throughput[_<name>_<encoder>]")
    ap.add_argument("--model", help="an architecture of the model zoo (models/registry.py): its model table")
    ap.add_argument("--encoder", help="--model's encoder (weights: none)")
    ap.add_argument("--models", action="store_true",
                    help="the preset model table (MODEL_PRESET), small sizes, with --gradient-checkpointing")
    ap.add_argument("--gradient-checkpointing", action="store_true",
                    help="model table: also the project's step with model.gradient_checkpointing")
    ap.add_argument("--header", action="store_true", help=argparse.SUPPRESS)  # internal
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--heap-kept", action="store_true", help=argparse.SUPPRESS)  # internal: measure one configuration, print JSON
    ap.add_argument("--path", help=argparse.SUPPRESS)  # internal: the path the heap-kept process chose
    ap.add_argument("--spec", help=argparse.SUPPRESS)  # internal: build_model's arguments
    ap.add_argument("--short", action="store_true", help=argparse.SUPPRESS)  # internal: the model table's form
    a = ap.parse_args(argv)
    if a.header:
        print(json.dumps(machine_header(a.batch)))
        return
    if a.one:
        size, alpha, threads = json.loads(a.one)
        path_settings = json.loads(a.path) if a.path else None
        print(json.dumps(measure(size, alpha, a.batch, threads, a.seconds, a.rounds, a.heap_kept, path_settings,
                                 spec=json.loads(a.spec) if a.spec else None, short=a.short,
                                 checkpointing=a.gradient_checkpointing)))
        return

    env = {**os.environ, **AVX2_CAPS} if a.as_avx2 else dict(os.environ)
    header = json.loads(subprocess.run([sys.executable, __file__, "--header", "--batch", str(a.batch)], env=env, capture_output=True,
                                       text=True, check=True).stdout)
    print(header, flush=True)
    if a.models or a.model:
        if a.models:
            models = MODEL_PRESET
        else:
            from im_core.models.registry import ARCHITECTURES, model_problems
            model = {"name": a.model, "encoder": a.encoder, "weights": "none"}
            problems = model_problems(model, "--model") if a.model in ARCHITECTURES else [
                f"--model: {a.model!r} is not an architecture; one of {list(ARCHITECTURES)}"]
            if problems:
                raise SystemExit("; ".join(problems))
            models = [(a.model, a.encoder, alpha, size) for size in a.sizes
                      for alpha in (a.alphas if a.model == "unet1x1" else [None])]
        name = "models_throughput" + ("" if a.models else f"_{a.model}_{a.encoder or 'alpha'}")
        run_models(models, a, env, header, Path(a.out or ROOT / "docs" / "results" / name))
        return
    rows = []
    for size in a.sizes:
        for alpha in a.alphas:
            threads = a.threads or (1 if size <= 32 else os.cpu_count())
            cmd = [sys.executable, __file__, "--one", json.dumps([size, alpha, threads]), "--batch", str(a.batch),
                   "--seconds", str(a.seconds), "--rounds", str(a.rounds)]
            # the job's process (heap kept) times the paths and chooses; the other runs its choice
            started = time.perf_counter()
            heap = one_process(cmd + ["--heap-kept"], env)
            row = one_process(cmd + ["--path", json.dumps({k: heap["path"][k] for k in ("precision", "channels_last")})],
                              env)
            rows.append({**row, "heap": heap})
            eager = f", without CUDA graphs {row['train_project_eager']:.0f}" if row.get("train_project_eager") else ""
            print(f"  {size}² α={alpha}: train {heap['train_project'] / row['train_plain']:.2f}× of the plain loop "
                  f"({row['train_plain']:.0f} → {heap['train_project']:.0f} img/s{eager}, fp32 contiguous "
                  f"{row['train_project_fp32']:.0f}), predict {heap['predict_project'] / row['predict_plain']:.2f}× "
                  f"({row['predict_plain']:.0f} → {heap['predict_project']:.0f}); {time.perf_counter() - started:.0f} s",
                  flush=True)
    out = Path(a.out or ROOT / "docs" / "results" / ("throughput_avx2" if a.as_avx2 else "throughput"))
    publish(f"{header}\n\n{table(rows)}\n", out.with_suffix(".md"))
    import pandas as pd
    pd.DataFrame([{**{k: v for k, v in r.items() if k not in ("path", "heap", "rule_path", "path_rates")},
                   **{f"path_{k}": v for k, v in r["path"].items()},
                   **{f"rule_{k}": r["rule_path"][k] for k in ("precision", "channels_last")},
                   **{f"timed_{k}": v for k, v in r["heap"]["path_rates"].items()},
                   **{f"heap_kept_{k}": r["heap"][k] for k in ("train_plain", "train_project", "predict_plain",
                                                               "predict_project", "peak_rss_mb")},
                   **{f"kernel_ms_{k.replace(' ', '_')}": v for k, v in (r["heap"].get("kernel_ms") or {}).items()}}
                  for r in rows]).to_csv(out.with_suffix(".csv"), index=False)
    print(f"written: {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
