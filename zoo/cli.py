"""The `zoo` command: fit/validate/test through LightningCLI, plus verbs that reuse its parsing."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger
from rich.console import Console

from datamodules import ImageClassificationDataModule
from zoo.classifier import ImageClassifier
from zoo.errors import ZooError
from zoo.lr_find import find_lr
from zoo.registry import FAMILIES
from zoo.runs import (
    default_loggers,
    default_precision,
    latest_checkpoint,
    new_run_dir,
    offline_wandb_dirs,
    remove_empty_run_dirs,
    wandb_offline,
)
from zoo.weights import check_weights_path

VERBS = {
    "fit": "train a model (LightningCLI: --config, --model.*, --data.*, --trainer.*)",
    "validate": "evaluate a checkpoint on the validation split (--ckpt_path)",
    "test": "evaluate a checkpoint on the test split (--ckpt_path)",
    "lr-find": "run the learning-rate range test and print the suggested lr",
    "predict": "top-k predictions for image files/folders as JSON lines (--checkpoint, .ckpt or .onnx)",
    "export": "write a checkpoint as ONNX, TorchScript or safetensors, with its class names and preprocessing",
    "app": "launch the Gradio app: predictions and a Grad-CAM view (--checkpoint, repeatable)",
    "models": "list the model families and timm backbones, marking those with pretrained weights here",
}
LINKED = ("class_names", "image_size", "channels", "mean", "std", "interpolation")
RUN_DIR = "<run_dir>"  # stands for the run folder in a logger's save_dir
console = Console(stderr=True, soft_wrap=True)


class ZooCLI(LightningCLI):
    """LightningCLI with zoo's run folders, default loggers/callbacks and the LR finder."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        self.run_dir: Path | None = None
        super().__init__(
            model_class=ImageClassifier,
            subclass_mode_model=True,
            datamodule_class=ImageClassificationDataModule,
            subclass_mode_data=True,
            trainer_defaults={"precision": default_precision(), "max_epochs": 10, "log_every_n_steps": 10},
            seed_everything_default=42,
            save_config_kwargs={"overwrite": True},  # the run folder is new, nothing to overwrite
            # zoo's optimiser/schedule are plain model arguments (lr, optimizer, scheduler) so that the
            # fine-tuning param groups and the LR finder keep working; Lightning's --optimizer would bypass them.
            auto_configure_optimizers=False,
            parser_kwargs={"description": "zoo: train and fine-tune image classifiers."},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--experiment",
            type=str | None,
            default=None,
            help="runs/<experiment>/...; default: the model family",
        )
        parser.add_argument("--runs_dir", type=str, default="runs", help="root folder of all runs")
        parser.add_argument(
            "--lr_find", type=bool, default=False, help="run the LR finder first and use its lr"
        )
        for key in LINKED:
            parser.link_arguments(
                "data", f"model.init_args.{key}", compute_fn=_data_config_getter(key), apply_on="instantiate"
            )
        parser.set_defaults(
            {
                "model": {"class_path": "zoo.classifier.CNNClassifier"},
                "data": {
                    "class_path": "datamodules.ImageFolderDataModule",
                    "init_args": {"image_size": 28, "channels": 1},
                },
            }
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # `--ckpt_path last` means this experiment's latest run, resolved before Lightning reads the checkpoint's
        # hyperparameters. (Lightning's own "last" looks in the new, empty run folder and trains from scratch.)
        cfg = self.config[self.config.subcommand] if self.config.get("subcommand") else self.config
        if cfg.get("ckpt_path") == "last":
            experiment = cfg.experiment or _family_of(cfg.model.class_path)
            cfg.ckpt_path = str(latest_checkpoint(cfg.runs_dir, experiment))
            console.print(f"[bold]resuming[/] {cfg.ckpt_path}", highlight=False)

    def _cfg(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        cfg = self._cfg()
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path and ckpt_path not in ("best", "hpc") and not Path(ckpt_path).is_file():
            raise ZooError(
                f"--ckpt_path {ckpt_path} not found; pass a .ckpt from runs/<experiment>/<version>/checkpoints/"
            )
        _fill_data_defaults(cfg)
        weights = (cfg.model.get("init_args") or {}).get("weights")
        if weights and not ckpt_path and self.subcommand in (None, "fit", "lr-find"):
            check_weights_path(weights)  # read when fitting starts; a typo should fail now, not minutes later
        experiment = cfg.experiment or _family_of(cfg.model.class_path)
        self.run_dir = new_run_dir(cfg.runs_dir, experiment)
        self.experiment = experiment
        cfg.trainer.default_root_dir = str(self.run_dir)
        for logger in _as_list(cfg.trainer.logger):
            args = getattr(logger, "init_args", None)
            if args is not None and args.get("save_dir") == RUN_DIR:
                args.save_dir = str(self.run_dir)
                for key in ("name", "version"):  # log straight into the run folder, no nesting
                    if key in args:
                        args[key] = ""

    def instantiate_trainer(self, **kwargs: Any):
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        callbacks = _as_list(trainer_cfg.get("callbacks"))
        loggers = self._loggers(trainer_cfg.get("logger"))
        kwargs["logger"] = loggers or False
        if self.subcommand in (None, "fit"):
            checkpoints = self.run_dir / "checkpoints"
            best = ModelCheckpoint(
                checkpoints, "best", monitor="val/acc", mode="max", auto_insert_metric_name=False
            )
            # Not `save_last=True`: Lightning 2.6 rewrites last.ckpt only in epochs that improve val/acc, so
            # a resume would silently repeat every epoch since the best one. An unmonitored callback saves
            # every epoch.
            last = ModelCheckpoint(
                checkpoints, "last", monitor=None, save_top_k=1, enable_version_counter=False
            )
            callbacks += [best, last]  # best first: it is trainer.checkpoint_callback
            if loggers:
                callbacks.append(LearningRateMonitor(logging_interval="step"))
        if trainer_cfg.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in callbacks
        ):
            callbacks.append(RichProgressBar())
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)

    def _loggers(self, configured: Any) -> list[Logger]:
        if configured is False:
            return []
        if configured is None or configured is True:
            return default_loggers(self.run_dir, self.experiment, with_wandb=self.subcommand in (None, "fit"))
        loggers = _as_list(configured)
        if not any(isinstance(lg, CSVLogger) for lg in loggers):
            loggers.append(CSVLogger(save_dir=str(self.run_dir), name="", version=""))
        return loggers

    # --- subcommand hooks --------------------------------------------------------------------
    def before_fit(self) -> None:
        console.print(f"[bold]run folder[/] {self.run_dir}")
        if self._cfg().get("ckpt_path"):
            if self._cfg().lr_find or self.model.lr == "auto":
                console.print("LR finder skipped: a resumed run continues the schedule it was saved with")
            if self.model.lr == "auto":
                self.model.lr = 1e-3  # overwritten by the restored optimizer and schedule
        elif self._cfg().lr_find or self.model.lr == "auto":
            find_lr(self.trainer, self.model, self.datamodule, self.run_dir)

    def after_fit(self) -> None:
        ckpt = self.trainer.checkpoint_callback
        if ckpt is not None and ckpt.best_model_path:
            score = ckpt.best_model_score
            console.print(
                f"[bold green]best checkpoint[/] {ckpt.best_model_path}  val/acc={float(score):.4f}"
                if score is not None
                else f"[bold green]best checkpoint[/] {ckpt.best_model_path}"
            )
        for run in offline_wandb_dirs(self.run_dir):
            console.print(f"[bold]W&B[/] offline run saved in {run}; upload it with: wandb sync {run}")


def _fill_data_defaults(cfg: Any) -> None:
    """Preprocessing the user left unset (null) comes from the model: a pretrained backbone's own statistics.

    Filled into the config itself, so the run's config.yaml says what was used.
    """
    data = cfg.data.get("init_args")
    if data is None:
        return
    args = cfg.model.get("init_args")
    model_args = args.as_dict() if hasattr(args, "as_dict") else dict(args or {})
    module, _, name = cfg.model.class_path.rpartition(".")
    defaults = getattr(importlib.import_module(module), name).data_defaults(model_args)
    channels = data.get("channels", 3)
    for key, value in defaults.items():
        if key in data and data[key] is None:
            if key in ("mean", "std") and channels != len(value):  # grey input to an RGB net: one average
                value = [round(sum(value) / len(value), 4)] * channels
            data[key] = value


def _data_config_getter(key: str):
    def get(data: ImageClassificationDataModule) -> Any:
        return data.data_config[key]

    return get


def _family_of(class_path: str) -> str:
    name = class_path.rsplit(".", 1)[-1]
    for family, cls in FAMILIES.items():
        if cls.__name__ == name:
            return family
    return name.lower()


def _as_list(value: Any) -> list:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def lr_find_main(args: list[str]) -> None:
    """`zoo lr-find`: the same config parsing as `zoo fit`, then the range test alone."""
    cli = ZooCLI(args=args, run=False)
    suggestion = find_lr(cli.trainer, cli.model, cli.datamodule, cli.run_dir)
    if suggestion is None:
        raise ZooError(
            "the LR finder stopped before it could suggest a learning rate; try more data or --data.batch_size smaller"
        )
    print(f"{suggestion:.6g}")


def _no_overwrite(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise ZooError(f"{path} already exists; choose another --output or pass --overwrite")


def predict_main(args: list[str]) -> int:
    """`zoo predict`: exit 0 when every file was predicted, 1 when some could not be read."""
    from apps.inference import Predictor, expand_paths, write_predictions

    p = argparse.ArgumentParser(prog="zoo predict", description=VERBS["predict"])
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument(
        "--checkpoint", required=True, help="a zoo .ckpt, or a .onnx/.safetensors from `zoo export`"
    )
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--output", type=Path, help="write a .jsonl or .csv file instead of printing JSON lines")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    a = p.parse_args(args)
    if a.output:
        if a.output.suffix not in (".jsonl", ".csv"):
            raise ZooError(f"--output {a.output}: use a .jsonl or .csv file name")
        _no_overwrite(a.output, a.overwrite)
    paths = expand_paths(a.paths)
    if not paths:
        raise ZooError(f"no images found in {' '.join(a.paths)}")
    predictor = Predictor(a.checkpoint)
    done, failed = write_predictions(predictor.predict_files(paths, a.top_k, a.batch_size), a.output)
    if a.output or failed:
        console.print(
            f"predicted {done} image(s){f', {failed} failed' if failed else ''}"
            + (f" -> {a.output}" if a.output else "")
        )
    return 1 if failed else 0


def export_main(args: list[str]) -> int:
    from zoo.checkpoint import load_checkpoint
    from zoo.export import FORMATS, export

    p = argparse.ArgumentParser(prog="zoo export", description=VERBS["export"])
    p.add_argument("--checkpoint", required=True, type=Path, help="a zoo .ckpt")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--output", type=Path, help="default: the checkpoint's path with the format's suffix")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    a = p.parse_args(args)
    output = a.output or a.checkpoint.with_suffix(FORMATS[a.format])
    _no_overwrite(output, a.overwrite)
    card = export(load_checkpoint(a.checkpoint), a.format, output)
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

    p = argparse.ArgumentParser(prog="zoo models", description=VERBS["models"])
    p.add_argument("pattern", nargs="?", help="timm backbones matching this wildcard, e.g. 'efficientnet*'")
    p.add_argument("--available", action="store_true", help="only backbones with pretrained weights here")
    a = p.parse_args(args)
    print("families (--model.class_path zoo.classifier.X):")
    for family, cls in FAMILIES.items():
        print(f"  {family:<6} {cls.__name__:<16} {(cls.__doc__ or '').strip().splitlines()[0]}")
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
    from apps.gradio_app import launch, parser

    a = parser().parse_args(args)
    launch(a.checkpoint, a.host, a.port, a.share, a.top_k)
    return 0


def print_help() -> None:
    print("usage: zoo <verb> [options]   (zoo <verb> --help for a verb's options)\n\nverbs:")
    for verb, text in VERBS.items():
        print(f"  {verb:<10} {text}")


COMMANDS = {"predict": predict_main, "export": export_main, "app": app_main, "models": models_main}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `zoo` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended.*")
    # The CSV logger writes into the run folder, which zoo just created and filled with config.yaml:
    # nothing of the user's is there to be "deleted", so the warning would only alarm.
    warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
    # Frozen BatchNorm layers (freeze_epochs, freeze_bn_stats) are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
    # zoo's data modules leave batch transfer to the model on purpose (uint8 -> float on device).
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    if wandb_offline():
        os.environ.setdefault("WANDB_SILENT", "true")  # zoo prints the one line that matters: how to sync
    if not argv or argv[0] in ("-h", "--help"):
        print_help()
        return 0
    verb, rest = argv[0], _default_logger_save_dir(argv[1:])
    try:
        if verb in ("fit", "validate", "test"):
            ZooCLI(args=[verb, *rest])
        elif verb == "lr-find":
            lr_find_main(rest)
        elif verb in COMMANDS:
            return COMMANDS[verb](rest)
        else:
            print_help()
            console.print(f"zoo: error: unknown verb {verb!r}; choose one of {', '.join(VERBS)}")
            return 2
    except BrokenPipeError:  # `zoo predict ... | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as err:
        user_error = _find_user_error(err)
        if user_error is None:
            raise
        console.print(f"[bold red]zoo: error:[/] {user_error}", highlight=False)
        return 2
    except SystemExit as exit_:  # jsonargparse exits after --help, --print_config and parse errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    except KeyboardInterrupt:
        return 130
    finally:
        remove_empty_run_dirs()
    return 0


def _default_logger_save_dir(args: list[str]) -> list[str]:
    """`--trainer.logger TensorBoardLogger` alone: jsonargparse requires a save_dir, zoo uses the run folder."""
    out = list(args)
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--trainer.logger=") else None
        if arg == "--trainer.logger" and i + 1 < len(args):
            value = args[i + 1]
        if (
            value
            and value.split(".")[-1].endswith("Logger")
            and not any(a.startswith("--trainer.logger.save_dir") for a in args)
        ):
            out += ["--trainer.logger.save_dir", RUN_DIR]
    return out


def _find_user_error(err: BaseException | None) -> ZooError | None:
    """The ZooError behind `err`: jsonargparse wraps errors raised while it instantiates classes."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ZooError):
            return err
        if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" in str(err):
            first = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), "")
            return ZooError(
                f"the checkpoint does not fit the model in this config ({first[:160]}); "
                "use the config the checkpoint was trained with (config.yaml in its run folder)"
            )
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
