"""The `zoo` command: a thin dispatcher. Each verb imports what it needs, so `zoo --help` is instant."""

from __future__ import annotations

import difflib
import errno
import os
import sys
import warnings
from pathlib import Path

from zoo.console import console, error
from zoo.errors import VerbParser, ZooError, check_output, positive_int
from zoo.recipes import recipe_files

VERBS = {
    "fit": "train a model (LightningCLI: --config, --model.*, --data.*, --trainer.*)",
    "validate": "evaluate a checkpoint on the validation split (--ckpt_path)",
    "test": "evaluate a checkpoint on the test split (--ckpt_path)",
    "lr-find": "run the learning-rate range test and print the suggested lr",
    "batch-size-find": "find the largest batch size that fits in memory (Lightning's finder) and print it",
    "tune": "search hyper-parameters with Optuna (random or TPE, Hyperband pruning, resumable); writes best.yaml",
    "evaluate": "per-class metrics, confusion matrix, calibration and top losses of a checkpoint, and report.html",
    "calibrate": "fit temperature scaling on the validation split; saves a calibrated copy of the checkpoint",
    "predict": "top-k predictions for image files/folders as JSON lines (--checkpoint, .ckpt or .onnx)",
    "export": "write a checkpoint as ONNX, TorchScript or safetensors, with its class names and preprocessing",
    "app": "launch the Gradio app: predictions and a Grad-CAM view (--checkpoint, repeatable)",
    "models": "list the model families and timm backbones, marking those with pretrained weights here",
    "doctor": "check an image folder: broken files, duplicates, leakage, imbalance, label errors (--checkpoint)",
}


# Lightning's finders are written for one process: a sweep under DDP would run in every process and each would
# find its own answer. They run on one device whatever the config says; the fit then uses the result anywhere.
ONE_PROCESS = ["--trainer.devices", "1", "--trainer.num_nodes", "1", "--trainer.strategy", "auto"]


def lr_find_main(args: list[str]) -> None:
    """`zoo lr-find`: the same config parsing as `zoo fit`, then the range test alone."""
    from zoo.lightning_cli import ZooCLI
    from zoo.lr_find import find_lr

    cli = ZooCLI(args=[*args, *ONE_PROCESS], run=False, wandb=False)
    suggestion = find_lr(cli.trainer, cli.model, cli.datamodule, cli.run_dir)
    if suggestion is None:
        raise ZooError(
            "the LR finder stopped before it could suggest a learning rate; try more data or --data.batch_size smaller"
        )
    print(f"{suggestion:.6g}")


def batch_size_main(args: list[str]) -> None:
    """`zoo batch-size-find`: the same config parsing as `zoo fit`, then Lightning's batch-size finder."""
    from zoo.batch_size import find_batch_size
    from zoo.lightning_cli import ZooCLI

    # A finder option, not a fit option: taken out before the config parsing.
    p = VerbParser(prog="zoo batch-size-find", add_help=False)
    p.add_argument("--max_batch_size", type=positive_int, default=4096)
    finder, args = p.parse_known_args(args)
    cap = finder.max_batch_size
    cli = ZooCLI(args=[*args, *ONE_PROCESS], run=False, wandb=False)
    cli.datamodule.setup("fit")  # the training set's size caps the search
    print(find_batch_size(cli.trainer, cli.model, cli.datamodule, cli.run_dir, cap))


def tune_main(args: list[str]) -> int:
    """`zoo tune`: its own options (below); every other argument is a `zoo fit` option for each trial."""
    from zoo.tune import PRUNERS, SAMPLERS, TuneOptions

    p = VerbParser(
        prog="zoo tune",
        description=VERBS["tune"],
        epilog="Any other argument is a `zoo fit` option every trial gets, e.g. --config configs/cnn.yaml.",
    )
    p.add_argument(
        "--search",
        required=True,
        type=Path,
        help="YAML: option -> range, e.g. model.lr: {low: 1e-4, high: 0.1, log: true}",
    )
    p.add_argument(
        "--trials", required=True, type=positive_int, help="complete or pruned trials the study should hold"
    )
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="tpe (Bayesian, default) or random")
    p.add_argument(
        "--pruner", choices=PRUNERS, default="hyperband", help="stops unpromising trials after an epoch"
    )
    p.add_argument("--storage", help="Optuna database URL (default sqlite:///RUNS_DIR/STUDY/study.db); share it to "
                   "search from several machines")  # fmt: skip
    p.add_argument(
        "--study", default="tune", help="the study's name: runs/STUDY/ holds its trials and results"
    )
    p.add_argument(
        "--metric",
        default="val/acc",
        help="what to optimise (a metric each validation logs; *loss* is minimised)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="the sampler's seed (each trial's own is --seed_everything)"
    )
    p.add_argument(
        "--runs_dir", default="runs", help="root folder of all runs (the same option as zoo fit's)"
    )
    a, fit_args = p.parse_known_args(args)
    from zoo.tune import tune

    options = TuneOptions(
        a.search, a.trials, a.sampler, a.pruner, a.storage, a.study, a.metric, a.seed, a.runs_dir
    )
    s = tune(fit_args, options)
    console.print(
        f"[bold]study {s['study']}[/]: {s['n_complete']} complete, {s['n_pruned']} pruned, {s['n_failed']} failed; "
        f"results in {Path(a.runs_dir) / s['study']}/trials.csv"
    )
    if s["best_value"] is None:
        raise ZooError("no trial completed; see the lines above for why")
    params = "  ".join(f"--{k} {v}" for k, v in s["best_params"].items())
    console.print(
        f"[bold green]best[/] trial {s['best_trial']}: {s['metric']} {s['best_value']:.4f}  {params}"
    )
    if s["best_config"]:
        console.print(f"[bold]train it[/]: zoo fit --config {s['best_config']}")
    return 0


def predict_main(args: list[str]) -> int:
    """`zoo predict`: exit 0 when every file was predicted, 1 when some could not be read.

    An existing --output is resumed: the files it already predicted are skipped, the rest appended.
    """
    from apps.inference import Predictor, expand_paths, read_predictions, write_predictions

    p = VerbParser(prog="zoo predict", description=VERBS["predict"])
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument(
        "--checkpoint", required=True, help="a zoo .ckpt, or a .onnx/.safetensors from `zoo export`"
    )
    p.add_argument("--top-k", type=positive_int, default=5, help="how many classes to list per image")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument(
        "--output",
        type=Path,
        help="write a .jsonl or .csv file instead of printing JSON lines; an existing one is resumed",
    )
    p.add_argument("--overwrite", action="store_true", help="start --output over instead of resuming it")
    p.add_argument("--tta", action="store_true", help="average each image's scores with its mirror image's")
    a = p.parse_args(args)
    earlier = None
    if a.output:
        if a.output.suffix not in (".jsonl", ".csv"):
            raise ZooError(f"--output {a.output}: use a .jsonl or .csv file name")
        a.output = check_output(a.output, overwrite=True)  # only a folder or an unwritable place is refused
        if a.output.is_file() and not a.overwrite:
            earlier = read_predictions(a.output)
    paths = expand_paths(a.paths)
    if not paths:
        raise ZooError(f"no images found in {' '.join(a.paths)}")
    predictor = Predictor(a.checkpoint, tta=a.tta)
    if earlier:
        earlier.check_model(predictor.class_names, a.top_k)
        todo = [path for path in paths if not earlier.is_done(path)]
        # Rows carry no checkpoint: name the one used, so a mix-up is visible.
        console.print(
            f"resuming {a.output}: {len(paths) - len(todo)} already predicted, {len(todo)} to go"
            + (f" ({earlier.retried} earlier error(s) retried)" if earlier.retried else "")
            + (" (a half-written last line dropped)" if earlier.partial else "")
            + f"; predicting with {a.checkpoint} (--overwrite starts over)"
        )
        paths = todo
    try:
        rows = predictor.predict_files(paths, a.top_k, a.batch_size)
        done, failed = write_predictions(rows, a.output, earlier=earlier)
    except OSError as err:  # --output in a folder zoo may not write, or a full disk
        if err.filename is None or a.output is None or Path(err.filename) != a.output:
            raise
        raise ZooError(f"cannot write --output {a.output}: {err.strerror}") from err
    if a.output or failed:
        console.print(
            f"predicted {done} image(s){f', {failed} failed' if failed else ''}"
            + (f" -> {a.output}" if a.output else "")
            + (
                " (their error rows are retried when the same command runs again)"
                if a.output and failed
                else ""
            )
        )
    return 1 if failed else 0


def evaluate_main(args: list[str]) -> int:
    """`zoo evaluate`: the evaluation report of a checkpoint on its run's validation (or test) split."""
    from zoo.evaluation import evaluate

    p = VerbParser(prog="zoo evaluate", description=VERBS["evaluate"])
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="a zoo .ckpt (its run's config.yaml gives the data)"
    )
    p.add_argument("--data.root", dest="root", help="evaluate on this folder instead (same class folders)")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--top-losses", type=positive_int, default=16, help="how many worst images to show")
    p.add_argument(
        "--output", type=Path, help="folder for evaluation.json and the PNGs (default RUN/evaluate/SPLIT)"
    )
    p.add_argument("--tta", action="store_true", help="average each image's scores with its mirror image's")
    a = p.parse_args(args)
    result, report = evaluate(a.checkpoint, a.root, a.split, a.top_losses, a.output, a.tta)
    top5 = f"  top-5 {result['top5_accuracy']:.4f}" if result["top5_accuracy"] is not None else ""
    console.print(
        f"{result['images']} {a.split} images: accuracy {result['accuracy']:.4f}{top5}  "
        f"macro F1 {result['macro_f1']:.4f}  ECE {result['calibration']['ece']:.4f}"
    )
    worst = sorted(result["per_class"], key=lambda r: r["f1"])[:3]
    console.print("weakest classes: " + ", ".join(f"{r['class']} (F1 {r['f1']:.2f})" for r in worst))
    console.print(f"[bold]report[/] {report}")
    return 0


def doctor_main(args: list[str]) -> int:
    """`zoo doctor`: exit 0, or with --strict 1 when problems were found."""
    import json

    from zoo.doctor import run_doctor

    p = VerbParser(prog="zoo doctor", description=VERBS["doctor"])
    p.add_argument(
        "path", type=Path, help="the image folder: PATH/<class>/* or PATH/{train,val[,test]}/<class>/*"
    )
    p.add_argument(
        "--checkpoint", type=Path, help="a zoo .ckpt: also look for likely label errors with its features"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when a problem is found (for CI)")
    p.add_argument("--output", type=Path, help="folder for doctor.json and the pictures (default ./doctor)")
    p.add_argument("--json", action="store_true", help="also print the report as JSON on stdout")
    a = p.parse_args(args)
    report = run_doctor(a.path, a.checkpoint, a.output)
    if a.json:
        print(json.dumps(report, indent=1))
    return 1 if a.strict and report["problems"] else 0


def calibrate_main(args: list[str]) -> int:
    """`zoo calibrate`: temperature scaling, with ECE before and after."""
    from zoo.calibration import calibrate

    p = VerbParser(prog="zoo calibrate", description=VERBS["calibrate"])
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="a zoo .ckpt (its run's config.yaml gives the data)"
    )
    p.add_argument(
        "--data.root", dest="root", help="fit on this folder's val split instead (same class folders)"
    )
    p.add_argument(
        "--output", type=Path, help="the calibrated checkpoint (default: CKPT-calibrated.ckpt beside it)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    a = p.parse_args(args)
    s = calibrate(a.checkpoint, a.root, a.output, a.overwrite)
    test = (
        f"; test ECE {s['test_ece_before']:.4f} -> {s['test_ece_after']:.4f}" if "test_ece_after" in s else ""
    )
    console.print(
        f"temperature {s['temperature']:.3f} fitted on {s['val_images']} val images: val ECE "
        f"{s['val_ece_before']:.4f} -> {s['val_ece_after']:.4f} (fitted there; {s['val_ece_after_cross_fitted']:.4f} "
        f"when fitted on one half and measured on the other){test}"
    )
    console.print(
        f"[bold]calibrated checkpoint[/] {s['output']} (zoo predict, export and app use its temperature)"
    )
    return 0


def export_main(args: list[str]) -> int:
    from zoo.checkpoint import load_checkpoint
    from zoo.export import FORMATS, export

    p = VerbParser(prog="zoo export", description=VERBS["export"])
    p.add_argument("--checkpoint", required=True, type=Path, help="a zoo .ckpt")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--output", type=Path, help="default: the checkpoint's path with the format's suffix")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    a = p.parse_args(args)
    output = check_output(a.output or a.checkpoint.with_suffix(FORMATS[a.format]), a.overwrite)
    model = load_checkpoint(a.checkpoint)
    try:
        card = export(model, a.format, output)
    except OSError as err:  # the disk filled up or the folder went away mid-write
        raise ZooError(f"cannot write {output}: {err.strerror or err}") from err
    check = (
        f"; onnxruntime vs PyTorch max |diff| = {card['max_abs_diff']:.1e}" if "max_abs_diff" in card else ""
    )
    console.print(f"[bold green]exported[/] {output} (metadata also in {output}.json){check}")
    return 0


def models_main(args: list[str]) -> int:
    """`zoo models`: families, then backbones, each with where its pretrained weights are on this machine."""
    import fnmatch

    import timm

    from zoo.pretrained import PACKAGED, has_hub_weights, weights_here
    from zoo.registry import families

    p = VerbParser(prog="zoo models", description=VERBS["models"])
    p.add_argument("pattern", nargs="?", help="timm backbones matching this wildcard, e.g. 'efficientnet*'")
    p.add_argument("--available", action="store_true", help="only backbones with pretrained weights here")
    a = p.parse_args(args)
    print("families (--model NAME, or --model.class_path as shown):")
    for family, cls in families().items():
        path = f"{cls.__module__}.{cls.__name__}"
        print(f"  {family:<6} {path:<28} {(cls.__doc__ or '').strip().splitlines()[0]}")
    names = fnmatch.filter(timm.list_models(), a.pattern) if a.pattern else sorted({*PACKAGED, "resnet18"})
    rows = [(name, weights_here(name), has_hub_weights(name)) for name in names]
    if a.available:
        rows = [row for row in rows if row[1]]
    print(
        f"\ntimm backbones (--model.backbone NAME){'' if a.pattern else '; `zoo models PATTERN` searches all'}:"
    )
    for name, here, hub in rows:
        where = (
            f"pretrained weights here: {here}"
            if here
            else ("on the hub (needs network)" if hub else "no pretrained weights")
        )
        print(f"  {name:<34} {where}")
    if not rows:
        print(
            "  none"
            + (" with pretrained weights on this machine" if a.available else f" match {a.pattern!r}")
        )
    return 0


def app_main(args: list[str]) -> int:
    from apps.serving import check_port_free, parser

    a = parser().parse_args(args)
    check_port_free(a.host, a.port)  # before gradio and the models load: a busy port fails at once

    from apps.gradio_app import launch

    launch(a.checkpoint, a.host, a.port, a.share, a.top_k)
    return 0


COMMON_OPTIONS = {
    "fit": [
        ("--config FILE", "a recipe (below) or a run's config.yaml; repeat to layer several, later wins"),
        (
            "--data.root PATH",
            "your images: PATH/<class>/* or PATH/{train,val}/<class>/* (default: the sample)",
        ),
        ("--data.image_size N", "side in px the model sees (recipes: null = from the images, at most 128)"),
        ("--data.channels 1|3", "grayscale or RGB (recipes: null = 1 when every image is grayscale)"),
        ("--data.batch_size N", "images per step"),
        (
            "--data.augment PRESET|FILE",
            "none | light (pad-crop) | standard (random resized crop + jitter) | an albumentations file",
        ),
        ("--data.sampler balanced", "draw each class equally often (imbalanced folders)"),
        ("--data.hflip true|false", "random mirror images in training"),
        ("--model NAME", "cnn | mlp | timm (`zoo models` lists the timm backbones)"),
        ("--model.backbone NAME", "the timm backbone of --model timm, e.g. tf_efficientnet_lite0"),
        ("--model.lr LR|auto", "peak learning rate; auto runs the LR finder first"),
        ("--trainer.max_epochs N", "passes over the training images"),
        (
            "--trainer.accelerator A",
            "cpu | gpu | auto;  --trainer.devices N;  --trainer.precision bf16-mixed",
        ),
        ("--ckpt_path PATH|last", "resume a run (last = this experiment's latest)"),
        ("--experiment NAME", "write to runs/NAME/version_N (default: the model family)"),
        ("--print_config", "print the complete config (every option and its value) and stop"),
    ],
    "validate": [
        ("--ckpt_path PATH", "the checkpoint to evaluate; its run's config.yaml gives the data and model"),
        ("--config FILE", "other settings instead of the run's config.yaml"),
        ("--data.root PATH", "evaluate on another folder with the same classes"),
    ],
}
COMMON_OPTIONS["test"] = COMMON_OPTIONS["validate"]
COMMON_OPTIONS["lr-find"] = COMMON_OPTIONS["fit"][:11]
COMMON_OPTIONS["batch-size-find"] = [
    *COMMON_OPTIONS["fit"][:9],
    ("--max_batch_size N", "stop doubling here (default 4096; also capped at the training set's size)"),
]


def print_short_help(verb: str) -> None:
    """`zoo fit --help`: the options most runs need and the recipes; --help-all gives jsonargparse's full list."""
    print(f"usage: zoo {verb} [--config FILE ...] [options]\n\n{VERBS[verb]}\n\ncommon options:")
    for option, text in [*COMMON_OPTIONS[verb], ("--debug", "show the full traceback of an error")]:
        print(f"  {option:<26} {text}")
    if verb in ("fit", "lr-find") and recipe_files():
        print("\nrecipes (--config configs/NAME):")
        for recipe in recipe_files():
            first = recipe.read_text().splitlines()[0].lstrip("# ").strip()
            print(f"  {recipe.name:<26} {first}")
    print(
        f"\nevery option with its default: zoo {verb} --help-all\n"
        f"one class's options: zoo {verb} --model.help TimmClassifier, --data.help ImageFolderDataModule"
    )


def print_help() -> None:
    print("usage: zoo <verb> [options]   (zoo <verb> --help for a verb's options)\n\nverbs:")
    for verb, text in VERBS.items():
        print(f"  {verb:<16} {text}")


COMMANDS = {
    "tune": tune_main,
    "evaluate": evaluate_main,
    "calibrate": calibrate_main,
    "predict": predict_main,
    "export": export_main,
    "app": app_main,
    "models": models_main,
    "doctor": doctor_main,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zoo` console script; returns the exit status.

    `--debug` anywhere (or ZOO_DEBUG=1) shows the full traceback of an error instead of its one line.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ZOO_DEBUG", "").lower() in ("1", "true", "yes", "on")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print_help()
        return 0
    if argv[0] == "--version":
        from zoo import __version__

        print(f"zoo {__version__}")
        return 0
    _quiet()
    verb, rest = argv[0], argv[1:]
    try:
        if verb in ("fit", "validate", "test", "lr-find", "batch-size-find"):
            if any(a in ("-h", "--help") for a in rest):
                print_short_help(verb)
                return 0
            from zoo.lightning_cli import ZooCLI, lightning_args

            rest = ["--help" if a == "--help-all" else a for a in rest]
            rest = lightning_args(rest, verb)
            if verb == "lr-find":
                lr_find_main(rest)
            elif verb == "batch-size-find":
                batch_size_main(rest)
            else:
                ZooCLI(args=[verb, *rest])
        elif verb in COMMANDS:
            return COMMANDS[verb](rest)
        else:
            close = difflib.get_close_matches(verb, list(VERBS), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            console.print(
                f"[bold red]zoo: error:[/] unknown verb {verb!r}; {hint}the verbs: {', '.join(VERBS)}"
            )
            return 2
    except BrokenPipeError:  # `zoo predict ... | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:
        if "zoo.runs" in sys.modules:
            sys.modules["zoo.runs"].discard_failed_runs()
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:  # a fit that failed after its W&B run began
            wandb.run.finish(exit_code=1)  # marked failed now, not left open for the next run in this process
        user_error = _find_user_error(err)
        if user_error is None or debug:
            if debug and getattr(user_error, "detail", None):
                console.print(user_error.detail)  # jsonargparse's own full message
            raise
        error(str(user_error))
        return 2
    except SystemExit as exit_:  # argparse/jsonargparse exit after --help; Lightning after Ctrl-C
        if (
            code := _interrupted()
        ):  # Ctrl-C or SIGTERM in a fit: zoo.progress saved last.ckpt, printed the resume
            return code
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except KeyboardInterrupt:
        console.print("\n[bold yellow]interrupted[/]")
        return 130
    finally:
        if "zoo.runs" in sys.modules:  # only loaded once a verb that makes run folders started
            sys.modules["zoo.runs"].remove_empty_run_dirs()
    return 0


def _interrupted() -> int:
    """130 after Ctrl-C, 143 after SIGTERM stopped a fit in this process; else 0."""
    progress = sys.modules.get("zoo.progress")
    return progress.INTERRUPTED[-1] if progress and progress.INTERRUPTED else 0


def _quiet() -> None:
    """Silence, at their source, the messages a zoo user cannot act on."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    # The CSV logger writes into the run folder, which zoo just created and filled with config.yaml:
    # nothing of the user's is there to be "deleted", so the warning would only alarm.
    warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
    # A resumed run writes into a new run folder, so its ModelCheckpoint starts a new "best" there.
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")
    # After Ctrl-C mid-epoch the resumed epoch draws a new shuffle; zoo says so when it saves (zoo.progress).
    warnings.filterwarnings(
        "ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*"
    )
    # validate/test rebuild the model from a checkpoint and need none of the callbacks that wrote it.
    warnings.filterwarnings(
        "ignore", message=".*callbacks used to create the checkpoint need to be provided.*"
    )
    # Frozen BatchNorm layers (freeze_epochs, freeze_bn_stats) are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
    # Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates: nothing a user can change.
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
    # zoo's data modules leave batch transfer to the model on purpose (uint8 -> float on device).
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")


def _find_user_error(err: BaseException | None) -> ZooError | None:
    """The ZooError behind `err`: jsonargparse wraps errors raised while it instantiates classes."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ZooError):
            return err
        if type(err).__name__ == "MisconfigurationException":  # Lightning's word for a bad trainer setting
            return ZooError(_misconfiguration(str(err)))
        if isinstance(err, ValueError) and (
            str(err).startswith("You selected an invalid") or "requires a GPU accelerator" in str(err)
        ):  # accelerator, strategy (FSDP and DeepSpeed need a GPU)
            return ZooError(f"{str(err).strip()} (a --trainer.* setting)")
        fault = _machine_fault(err)
        if fault is not None:
            return fault
        if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in str(err):
            first = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), "")
            return ZooError(
                f"the checkpoint does not fit the model in this config ({first[:160]}); "
                "use the config the checkpoint was trained with (config.yaml in its run folder)"
            )
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


# import name -> pip name, where they differ
PIP_NAMES = {"PIL": "pillow", "yaml": "pyyaml", "skimage": "scikit-image", "cv2": "opencv-python-headless"}
OWN_PACKAGES = {"zoo", "apps", "datamodules", "tests"}


def _machine_fault(err: BaseException) -> ZooError | None:
    """One line for what the machine lacks (memory, disk, permission, a package), with what to do."""
    text = str(err)
    if isinstance(err, MemoryError) or (
        isinstance(err, RuntimeError)
        and (
            "out of memory" in text.lower()
            or "can't allocate memory" in text
            or "OutOfMemory" in type(err).__name__
        )
    ):
        first = text.strip().splitlines()[0][:160] if text.strip() else type(err).__name__
        return ZooError(
            f"out of memory ({first}); try a smaller --data.batch_size (with --trainer.accumulate_grad_batches "
            "to keep the effective batch), --trainer.precision bf16-mixed, or a smaller --data.image_size"
        )
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" writing {err.filename}" if err.filename else ""
        return ZooError(f"disk full{where}; free some space, or point --runs_dir / --output at a larger disk")
    if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and err.filename:
        return ZooError(
            f"{(err.strerror or 'permission denied').lower()}: {err.filename}; fix its permissions, or choose another "
            "--runs_dir / --output"
        )
    if isinstance(err, ModuleNotFoundError) and err.name and err.name.split(".")[0] not in OWN_PACKAGES:
        top = err.name.split(".")[0]
        pip = PIP_NAMES.get(top, top.replace("_", "-"))
        return ZooError(
            f"this needs the Python package {top!r}, which is not installed here: pip install {pip}"
        )
    return None


def _misconfiguration(message: str) -> str:
    if "gpu" in message.lower() or "cuda" in message.lower():
        return (
            f"--trainer.accelerator: this machine has no usable GPU ({message.rstrip('!.')}); "
            "use --trainer.accelerator cpu (or auto, which picks a GPU when there is one)"
        )
    return f"{message} (a --trainer.* setting)"


if __name__ == "__main__":
    sys.exit(main())
