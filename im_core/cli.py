"""`im-core <step>`: one command-line entry point per workflow step, explicit inputs and outputs.

Each step writes its log to --log (the Snakemake rule's log file) and shows progress on the
console. Settings arrive as one JSON object (--settings), the same object Snakemake records
as the job's params, so a changed setting reruns exactly the jobs it reaches.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time

from .errors import InputError, OutputConflict
from .io import claim_outputs, release_claims


def _setup_logging(log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    handlers[0].setLevel(logging.WARNING)
    if log_file:
        fh = logging.FileHandler(log_file, mode="w", encoding="utf-8")
        fh.setLevel(logging.INFO)
        handlers.append(fh)
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _settings(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"--settings: not valid JSON ({e})") from e


def cmd_prepare(a):
    from .steps import prepare
    return prepare.run(_settings(a.settings), a.out, threads=a.threads)


def cmd_train(a):
    from .settings import TrainSettings
    from .steps import train
    return train.run(a.data, a.out, TrainSettings.from_params(_settings(a.settings)), pseudo=a.pseudo, threads=a.threads,
                     model_id=a.model_id, generation=a.generation, progress=not a.no_progress,
                     init_selection=a.init_selection, init_checkpoints=a.init_checkpoints)


def cmd_time_paths(a):
    from .steps import time_paths
    return time_paths.run(a.data, a.out, a.alpha, a.batch_size, a.threads, a.rounds, a.precision, a.channels_last,
                          a.model, a.encoder)


def cmd_predict(a):
    from .steps import predict
    return predict.run(a.checkpoint, a.data, a.out, a.splits, a.batch_size, a.threads)


def cmd_score(a):
    from .steps import evaluate
    return evaluate.score_model(a.predictions, a.data, a.out, dev_images=a.dev_images, dev_seed=a.dev_seed)


def cmd_select(a):
    from .settings import SelectionSettings
    from .steps import select
    return select.run(a.scores, a.out, SelectionSettings.from_params(_settings(a.settings)), a.generation,
                      previous=a.previous)


def cmd_pseudo(a):
    from .settings import PseudoSettings
    from .steps import pseudo
    return pseudo.run(a.data, a.selection, a.predictions, a.out, PseudoSettings.from_params(_settings(a.settings)),
                      a.generation,
                      checkpoints=a.checkpoints, parent=a.parent, earlier_selections=a.earlier_selections)


def _count_or_per_class(text: str) -> int | str:
    return text if text == "per_class" else int(text)


def _pseudo_by_model(entries: list[str] | None) -> dict[str, str]:
    """'MODEL_ID=STORE' entries -> {model id: store}."""
    out = {}
    for entry in entries or []:
        model_id, sep, store = entry.partition("=")
        if not sep or not model_id or not store:
            raise InputError(f"--pseudo {entry!r}: expected MODEL_ID=PSEUDO_STORE")
        out[model_id] = store
    return out


def _teacher_predictions(stores: list[str]) -> dict[str, str]:
    """Prediction stores -> {model id: store} (their recorded model ids)."""
    from .io import open_store
    return {open_store(path).attrs["model_id"]: path for path in stores}


def cmd_metrics(a):
    from .steps import evaluate
    table = evaluate.write_generation_metrics(a.scores, a.selection, a.generation, _pseudo_by_model(a.pseudo),
                                              a.data, a.out, a.checkpoints, _teacher_predictions(a.teacher_predictions),
                                              a.predictions, a.confusions_out)
    return {"models": len(table), "best_val_miou": float(table["val_miou"].max()),
            "test_miou_of_best": float(table.iloc[0]["test_miou"])}


def cmd_preview(a):
    from .steps import visualize
    return visualize.write_preview(a.pseudo, a.data, a.out, a.count)


def cmd_plot(a):
    from .steps import visualize
    tables = {}
    for item in a.tables:
        name, _, files = item.partition("=")
        tables[name] = [f for f in files.split(",") if f]
    for name, files in tables.items():
        if not files:
            raise InputError(f"--tables {name}=: no metrics tables given")
    visualize.plot_generations(tables, a.out)
    return {"experiments": list(tables)}


def cmd_plot_paths(a):
    from .steps import visualize
    return visualize.plot_paths(a.tables, a.out, a.title)


def cmd_compare(a):
    from .steps import compare
    runs = [compare.parse_run(item) for item in a.runs]
    table = compare.write_comparison(runs, a.out, a.plot, title=a.title, reference=a.reference)
    return {"rows": len(table), "methods": sorted(set(table["method"]))}


def cmd_render(a):
    from .steps import visualize
    return visualize.render(a.store, a.out, a.index, a.split, a.count)


def cmd_segment(a):
    from .steps import segment
    forms = {"--checkpoint": a.checkpoint, "--experiment/--generation": a.experiment or a.generation is not None,
             "--selection/--checkpoints": a.selection or a.checkpoints}
    given = [form for form, value in forms.items() if value]
    if len(given) != 1:
        raise InputError("choose the model one way: --checkpoint PATH, or --experiment NAME --generation G"
                         + (f" (got {' and '.join(given)})" if given else ""))
    if a.checkpoint:
        checkpoint = a.checkpoint
    elif a.selection and a.checkpoints:
        checkpoint = segment.choose_checkpoint(a.selection, a.checkpoints, a.rank)
    elif a.experiment and a.generation is not None:
        checkpoint = segment.checkpoint_for(a.results, a.experiment, a.generation, a.rank)
    else:
        raise InputError(f"{given[0].replace('/', ' and ')}: pass both")
    return segment.run(a.images, a.out, str(checkpoint), a.batch_size, a.threads, a.data, a.intensity_range,
                       a.max_image_pixels)


def cmd_record_settings(a):
    from .io import write_json
    settings = _settings(a.settings)
    write_json(a.out, settings)
    return {"keys": sorted(settings)}


def cmd_code_versions(a):
    from . import code_versions
    if a.graph:
        from . import import_graph
        graph = import_graph.import_graph(packages=a.graph == "packages")
        for module, targets in sorted(graph.items()):
            print(f"{module} -> {', '.join(sorted(targets)) or '(nothing)'}")
        found = import_graph.cycles(graph)
        print(f"{len(graph)} {'packages' if a.graph == 'packages' else 'modules'}, "
              f"{sum(map(len, graph.values()))} import arrows, {len(found)} cycles")
        for cycle in found:
            print("cycle: " + " -> ".join(cycle))
        return {"cycles": len(found)}
    if a.same_results and not a.update:
        raise InputError("--same-results goes with --update")
    if a.update:
        code_versions.update(a.same_results or [])
    status = code_versions.status()
    for step, s in status.items():
        print(f"{step:<11} version {s['version']}  {'recorded' if s['current'] else 'changed since recorded: reruns'}")
    return {"stale": [step for step, s in status.items() if not s["current"]]}


def cmd_config_reference(a):
    from .config.reference import reference_markdown
    text = reference_markdown()
    if a.out:
        from pathlib import Path
        Path(a.out).write_text(text, encoding="utf-8")
    else:
        print(text)
    return {"lines": text.count("\n")}


def cmd_check_config(a):
    from .config import load_config_file, validate_config
    validate_config(load_config_file(a.config), where=a.config)
    return {"config": a.config, "valid": True}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="im-core", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_text):
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("--log", help="log file of this job")
        sp.set_defaults(func=func)
        return sp

    sp = add("prepare", cmd_prepare, "build a data set's zarr store from its source")
    sp.add_argument("--settings", required=True, help="the data set's config entry as JSON")
    sp.add_argument("--out", required=True)
    sp.add_argument("--threads", type=int, default=1, help="threads decoding images")

    sp = add("train", cmd_train, "train one model (labeled split, optionally plus pseudo-labels)")
    sp.add_argument("--data", required=True)
    sp.add_argument("--pseudo", help="pseudo-label store to train on as well")
    sp.add_argument("--settings", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--model-id", default="m0")
    sp.add_argument("--generation", type=int, default=0)
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--no-progress", action="store_true")
    sp.add_argument("--init-selection", help="trainer consistency: selection file naming the model to fine-tune")
    sp.add_argument("--init-checkpoints", nargs="+", help="trainer consistency: the checkpoints it ranks")

    sp = add("time-paths", cmd_time_paths, "time the training step on each numerical path this machine offers "
             "and say whether one is worth pinning (compute.numeric_path); it changes no job's path")
    sp.add_argument("--data", required=True, help="a data store (results/<data set>/data.zarr)")
    sp.add_argument("--alpha", type=float, default=0.5, help="the 1x1 U-Net's width multiplier")
    sp.add_argument("--model", default="unet1x1", help="model.name: the 1x1 U-Net or an architecture of the model zoo")
    sp.add_argument("--encoder", help="model.encoder of a zoo architecture (random weights)")
    sp.add_argument("--batch-size", type=int, required=True)
    sp.add_argument("--threads", type=int, default=1, help="torch threads, as compute.train_threads")
    sp.add_argument("--rounds", type=int, default=5, help="timed rounds per path (the paths alternate)")
    sp.add_argument("--precision", default="auto", help="what the experiment's settings ask (the rule's path is "
                    "the one to beat)")
    sp.add_argument("--channels-last", default="auto")
    sp.add_argument("--out", help="write the timings and the recommendation as JSON here")

    sp = add("predict", cmd_predict, "predict splits of a data store with one model")
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--data", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--splits", nargs="+", default=["val", "test", "unlabeled"])
    sp.add_argument("--batch-size", type=int, default=64)
    sp.add_argument("--threads", type=int, default=1)

    sp = add("score", cmd_score, "score a predictions store on val and test (and the development set)")
    sp.add_argument("--predictions", required=True)
    sp.add_argument("--data", required=True)
    sp.add_argument("--dev-images", type=_count_or_per_class,
                    help="the development set: this many val images, or per_class (default: all)")
    sp.add_argument("--dev-seed", type=int, default=0, help="the seed that draws them")
    sp.add_argument("--out", required=True)

    sp = add("select", cmd_select, "rank a generation's models and choose the next teachers")
    sp.add_argument("--scores", nargs="+", required=True)
    sp.add_argument("--settings", required=True)
    sp.add_argument("--generation", type=int, required=True)
    sp.add_argument("--previous", help="the previous generation's selection (its best model so far carries over)")
    sp.add_argument("--out", required=True)

    sp = add("pseudo", cmd_pseudo, "build pseudo-labels (IM or a baseline builder) from the selected teachers")
    sp.add_argument("--data", required=True)
    sp.add_argument("--selection", required=True)
    sp.add_argument("--predictions", nargs="+", required=True)
    sp.add_argument("--checkpoints", nargs="+",
                    help="the teachers' checkpoints (model_ensemble, input_ensemble; Label Erase with a temperature)")
    sp.add_argument("--parent", help="builder parent: the student's parent, rank:<r> or index:<i> of the previous generation")
    sp.add_argument("--earlier-selections", nargs="+", default=[],
                    help="the selections of generations before the previous one, most recent first "
                         "(im with teacher_generations)")
    sp.add_argument("--settings", required=True)
    sp.add_argument("--generation", type=int, required=True)
    sp.add_argument("--out", required=True)

    sp = add("metrics", cmd_metrics, "write a generation's metrics table")
    sp.add_argument("--scores", nargs="+", required=True)
    sp.add_argument("--selection", required=True)
    sp.add_argument("--generation", type=int, required=True)
    sp.add_argument("--pseudo", nargs="*", help="MODEL_ID=STORE: the pseudo-label store each model trained on")
    sp.add_argument("--checkpoints", nargs="*", help="the generation's checkpoints (what training cost)")
    sp.add_argument("--teacher-predictions", nargs="*", default=[],
                    help="prediction stores of the earlier generations' models (the IM's error recall)")
    sp.add_argument("--predictions", nargs="*", default=[], help="the generation's prediction stores")
    sp.add_argument("--confusions-out", help="store of each model's per-image confusions on the test split (bootstrap)")
    sp.add_argument("--data", required=True)
    sp.add_argument("--out", required=True)

    sp = add("preview", cmd_preview, "montage of a generation's pseudo-labels (input, masked, label, truth)")
    sp.add_argument("--pseudo", required=True)
    sp.add_argument("--data", required=True)
    sp.add_argument("--count", type=int, default=6)
    sp.add_argument("--out", required=True)

    sp = add("plot", cmd_plot, "plot metrics tables by generation")
    sp.add_argument("--tables", nargs="+", required=True, help="NAME=gen0.csv,gen1.csv,... per experiment")
    sp.add_argument("--out", required=True)

    sp = add("plot-paths", cmd_plot_paths, "one experiment's models by stage, each joined to its parent; the chosen path")
    sp.add_argument("--tables", nargs="+", required=True, help="every generation's metrics table, gen0 first")
    sp.add_argument("--out", required=True)
    sp.add_argument("--title", default="")

    sp = add("compare", cmd_compare, "one table (and plot) of methods x generations over seeds")
    sp.add_argument("--runs", nargs="+", required=True,
                    help="METHOD:SEED=gen0.csv,gen1.csv,... (each generation's metrics table of one run)")
    sp.add_argument("--out", required=True, help="CSV table")
    sp.add_argument("--plot", help="PNG: test mIoU and IM fraction by generation")
    sp.add_argument("--title", default="")
    sp.add_argument("--reference", help="a row (method or variant) every row's paired difference is also taken to")

    sp = add("render", cmd_render, "render a data, predictions or pseudo-label store (or one image) to PNG")
    sp.add_argument("store")
    sp.add_argument("--out", required=True)
    sp.add_argument("--index", type=int, help="one image of the store (default: the first --count)")
    sp.add_argument("--split", help="predictions stores: which split (default: the first)")
    sp.add_argument("--count", type=int, default=16)

    sp = add("segment", cmd_segment, "segment a folder of new images with a trained model (masks and previews)")
    sp.add_argument("--images", required=True, help="folder of images (subfolders too); it is only read")
    sp.add_argument("--out", required=True, help="output folder: masks/, previews/, summary.json")
    sp.add_argument("--checkpoint", help="a model.pt")
    sp.add_argument("--experiment", help="with --generation: that generation's best model on the development set")
    sp.add_argument("--generation", type=int)
    sp.add_argument("--results", default="results", help="where the experiments' results are (default: results)")
    sp.add_argument("--rank", type=int, default=1, help="with --experiment or --selection: the model of this rank (1 = best)")
    sp.add_argument("--selection", help="workflow form: a selection.json, with --checkpoints the models it ranks")
    sp.add_argument("--checkpoints", nargs="+")
    sp.add_argument("--data", help="the data store the model trained on (older checkpoints lack size and palette)")
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--intensity-range", default="auto",
                    help="images of more than 8 bits: auto, dtype or LOW,HIGH scaled to 0..255, as the data set's "
                         "intensity_range (docs/data.md); give the one the model was trained with")
    sp.add_argument("--max-image-pixels", type=int,
                    help="refuse larger images (default: Pillow's limit, 89478485, against decompression bombs)")

    sp = add("record-settings", cmd_record_settings, "write the settings in force for a generation as JSON")
    sp.add_argument("--settings", required=True)
    sp.add_argument("--out", required=True)

    sp = add("code-versions", cmd_code_versions, "each step's code version (a change reruns that step's jobs)")
    sp.add_argument("--update", action="store_true", help="record the current code (im_core/code_versions.json)")
    sp.add_argument("--same-results", nargs="+", metavar="STEP",
                    help="with --update: these steps keep their version (their results were shown unchanged)")
    sp.add_argument("--graph", choices=["modules", "packages"],
                    help="print the package's import graph (every import, inside functions too) and its cycles")

    sp = add("config-reference", cmd_config_reference, "write the configuration reference (Markdown) from the schema")
    sp.add_argument("--out", help="file to write (default: print it)")

    sp = add("check-config", cmd_check_config, "validate a config file against the schema")
    sp.add_argument("config")
    return p


def _outputs(args: argparse.Namespace) -> list[str]:
    return [p for p in (getattr(args, "out", None), getattr(args, "plot", None)) if p]


def _arguments(args: argparse.Namespace) -> str:
    """The job's file arguments, for error messages."""
    keys = ("data", "pseudo", "checkpoint", "predictions", "scores", "selection", "store", "config", "out")
    found = {k: getattr(args, k) for k in keys if getattr(args, k, None)}
    return ", ".join(f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in found.items())


def _stop_on_sigterm(signum, frame):
    # SIGTERM (scancel, a cluster's time limit, snakemake stopping its jobs) unwinds like Ctrl-C,
    # so partial outputs are removed on the way out
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log)
    log = logging.getLogger(f"im_core.{args.command}")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.time()
    try:
        removed = claim_outputs(_outputs(args))
        if removed:
            log.info("removed what an interrupted run left: %s", ", ".join(map(str, removed)))
        result = args.func(args)
    except InputError as e:
        log.error("%s", e)
        print(f"im-core {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OutputConflict as e:
        log.error("%s", e)
        print(f"im-core {args.command}: {e}", file=sys.stderr)
        return 3
    except (KeyboardInterrupt, SystemExit) as e:
        log.error("%s interrupted (%s) after %.1f s; partial outputs removed, a rerun continues",
                  args.command, type(e).__name__ if isinstance(e, KeyboardInterrupt) else f"exit {e.code}",
                  time.time() - started)
        raise
    except Exception as e:
        filename = getattr(e, "filename", None)
        log.exception("step %s failed: %s: %s%s (job: %s)", args.command, type(e).__name__, e,
                      f" [file {filename}]" if filename else "", _arguments(args))
        print(f"im-core {args.command}: unexpected {type(e).__name__}: {e}"
              f"{f' [file {filename}]' if filename else ''}; traceback in {args.log or 'the output above'}",
              file=sys.stderr)
        if not args.log:
            raise
        return 1
    finally:
        release_claims()
    log.info("done in %.1f s: %s", time.time() - started, json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
