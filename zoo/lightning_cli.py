"""ZooCLI: LightningCLI with zoo's run folders, default loggers and callbacks, and the LR finder."""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from jsonargparse.typing import register_type
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from datamodules import ImageClassificationDataModule
from zoo.callbacks import DEFAULT_CALLBACKS, RUN_DIR, switched_off, with_run_dir
from zoo.checkpoint_io import AtomicCheckpointIO
from zoo.classifier import ImageClassifier
from zoo.console import console, launched_rank
from zoo.errors import ZooError
from zoo.lr_find import find_lr
from zoo.parse_errors import ZooArgumentParser
from zoo.progress import RunReport
from zoo.registry import families
from zoo.runs import (
    default_loggers,
    default_precision,
    latest_checkpoint,
    new_run_dir,
    offline_wandb_dirs,
    run_config_of,
    run_dir_of,
    wandb_offline,
)
from zoo.weights import check_weights_path, load_tensors_only

LINKED = ("class_names", "image_size", "channels", "mean", "std", "interpolation")

# A callback whose default is a torch.device (StochasticWeightAveraging's device=cpu) would be written to
# config.yaml as "Unable to serialize instance cpu", and the run's config would not load again: "cpu" it is.
register_type(
    torch.device, serializer=str, deserializer=torch.device, deserializer_exceptions=(RuntimeError, TypeError)
)


class ZooCLI(LightningCLI):
    """LightningCLI with zoo's run folders, default loggers/callbacks and the LR finder."""

    def __init__(
        self,
        args: list[str] | None = None,
        run: bool = True,
        wandb: bool = True,
        extra_callbacks: list[Callback] | None = None,
        wandb_group: str | None = None,
    ) -> None:
        # Lightning's info lines ("Seed set to 42", "GPU available: False", tips to install other products,
        # "`Trainer.fit` stopped"): zoo's header and summary say what matters. Warnings still show. (Set
        # here, not before importing lightning: its import resets the level to INFO.)
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.run_dir: Path | None = None
        self._resume: dict[str, Any] | None = None
        self.wandb = wandb  # `zoo lr-find` logs nothing worth a W&B run
        self.extra_callbacks = extra_callbacks or []  # zoo tune's Optuna pruning callback: not configuration
        self.wandb_group = wandb_group  # zoo tune: the study's trials in one W&B group
        super().__init__(
            model_class=ImageClassifier,
            subclass_mode_model=True,
            datamodule_class=ImageClassificationDataModule,
            subclass_mode_data=True,
            trainer_defaults={
                "precision": default_precision(),
                "max_epochs": 10,
                "log_every_n_steps": None,  # None: ~10 points per epoch, >= 5 steps and ~1 s apart (RunReport)
                "enable_model_summary": False,  # the run header gives the size in one line
            },
            seed_everything_default=42,
            save_config_kwargs={"overwrite": True},  # the run folder is new, nothing to overwrite
            # zoo's optimiser/schedule are plain model arguments (lr, optimizer, scheduler) so that the
            # fine-tuning param groups and the LR finder keep working; Lightning's --optimizer would bypass them.
            auto_configure_optimizers=False,
            parser_class=ZooArgumentParser,  # parse errors become one line (zoo.parse_errors)
            # No prefix matching: `--lr 0.1` would silently mean `--lr_find 0.1`.
            parser_kwargs={
                "description": "zoo: train and fine-tune image classifiers.",
                "allow_abbrev": False,
                **{verb: {"allow_abbrev": False} for verb in ("fit", "validate", "test")},
            },
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
        parser.add_argument(
            "--doctor",
            type=bool,
            default=True,
            help="check an image folder before fitting (zoo doctor's quick pass)",
        )
        for key in LINKED:
            parser.link_arguments(
                "data", f"model.init_args.{key}", compute_fn=_data_config_getter(key), apply_on="instantiate"
            )
        parser.set_defaults(
            {
                "model": {"class_path": "zoo.scratch.CNNClassifier"},
                "data": {"class_path": "datamodules.ImageFolderDataModule"},
                "trainer.callbacks": DEFAULT_CALLBACKS,
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
            if self.config.get("subcommand") != "fit":  # a fit says where it resumes when it starts
                console.print(f"[bold]checkpoint[/] {cfg.ckpt_path}")
        if cfg.get("ckpt_path") and Path(cfg.ckpt_path).is_file():
            # Read before Lightning reads its hyperparameters: a file that is not a checkpoint, or whose pickle
            # would run code, is one line (and is refused without running it).
            self._resume = _read_checkpoint(Path(cfg.ckpt_path))
            if "zoo" not in self._resume:
                raise ZooError(
                    f"--ckpt_path {cfg.ckpt_path} is not a zoo checkpoint (no 'zoo' block); resume or evaluate a "
                    "checkpoint that `zoo fit` wrote, or start from its weights with --model.weights"
                )

    def _cfg(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        cfg = self._cfg()
        ckpt_path = cfg.get("ckpt_path")
        if self.subcommand in ("validate", "test") and not ckpt_path:
            raise ZooError(
                f"zoo {self.subcommand} evaluates a trained model: pass --ckpt_path "
                "runs/<experiment>/<version>/checkpoints/best.ckpt"
            )
        if ckpt_path and ckpt_path not in ("best", "hpc") and not Path(ckpt_path).is_file():
            raise ZooError(
                f"--ckpt_path {ckpt_path} not found; pass a .ckpt from runs/<experiment>/<version>/checkpoints/"
            )
        _fill_data_defaults(cfg)
        weights = (cfg.model.get("init_args") or {}).get("weights")
        if weights and not ckpt_path and self.subcommand in (None, "fit", "lr-find"):
            check_weights_path(weights)  # read when fitting starts; a typo should fail now, not minutes later
        experiment = cfg.experiment or _family_of(cfg.model.class_path)
        evaluated = run_dir_of(ckpt_path) if ckpt_path and self.subcommand in ("validate", "test") else None
        if launched_rank() > 0:
            # Another process of a multi-process run: rank 0 makes the run folder. Lightning's own launcher starts
            # this process with ZOO_RUN_DIR set; under torchrun or srun this placeholder (never created) is
            # replaced by rank 0's folder once the processes can talk (RunReport.setup, ModelCheckpoint.setup).
            placeholder = Path(evaluated or cfg.runs_dir) / experiment / f"rank_{launched_rank()}"
            self.run_dir = Path(os.environ.get("ZOO_RUN_DIR") or placeholder)
        elif evaluated is not None:
            # An evaluation is filed with the run it evaluates: RUN/test/version_N, not a new run.
            self.run_dir = new_run_dir(evaluated, self.subcommand)
        else:
            self.run_dir = new_run_dir(cfg.runs_dir, experiment)
        os.environ["ZOO_RUN_DIR"] = str(self.run_dir)  # for the processes Lightning's launcher starts
        self.experiment = experiment
        cfg.trainer.default_root_dir = str(self.run_dir)

    def instantiate_classes(self) -> None:
        # LightningCLI.instantiate_classes, on a copy with `<run_dir>` resolved (zoo.callbacks.with_run_dir):
        # self.config, which becomes config.yaml, keeps the placeholder.
        self.config_init = self.parser.instantiate(with_run_dir(self.config, str(self.run_dir)))
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model(self.subcommand)
        self.trainer = self.instantiate_trainer()
        # What the data module worked out from the images (size, channels, statistics) goes into the
        # config, so the run's config.yaml says what was used and reruns as it ran.
        data = self._cfg().data.get("init_args")
        if data is not None and self.datamodule is not None:
            for key in ("image_size", "channels", "mean", "std", "interpolation"):
                if key in data and data[key] is None:
                    data[key] = getattr(self.datamodule, key)

    def instantiate_trainer(self, **kwargs: Any):
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        loggers = self._loggers(trainer_cfg.get("logger"))
        kwargs["logger"] = loggers or False
        callbacks = switched_off(
            _as_list(trainer_cfg.get("callbacks")),
            checkpointing=trainer_cfg.get("enable_checkpointing", True) is not False,
            progress_bar=trainer_cfg.get("enable_progress_bar", True) is not False,
            logging=bool(loggers),
        )
        if self.subcommand in (None, "fit"):
            adapt = trainer_cfg.get("log_every_n_steps") is None
            if adapt:  # RunReport sets it from the epoch's length when fitting starts
                kwargs["log_every_n_steps"] = 1
            # zoo's own console report (header, epoch lines, summary, Ctrl-C save): part of the command,
            # like Lightning's SaveConfigCallback, so it is added here rather than configured.
            self.report = RunReport(self.run_dir, self.run_dir / "config.yaml", adapt_logging=adapt)
            callbacks.append(self.report)
        kwargs["callbacks"] = callbacks + self.extra_callbacks
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # a user's own CheckpointIO is kept
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()  # why: zoo/checkpoint_io.py
        if self.subcommand in ("validate", "test") and not loggers:
            # Nothing is logged, so a config.yaml alone would leave a folder that records nothing.
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback)]
        return trainer

    def _loggers(self, configured: Any) -> list[Logger]:
        if configured is False:
            return []
        if configured is None or configured is True:
            ckpt_path = self._cfg().get("ckpt_path")
            wandb_id = None
            if ckpt_path and self.subcommand in (None, "fit"):  # a resume continues its W&B run
                wandb_id = self._resumed().get("wandb_run_id")
            loggers = default_loggers(
                self.run_dir,
                self.experiment,
                with_wandb=self.wandb and self.subcommand in (None, "fit"),
                wandb_id=wandb_id,
                wandb_group=self.wandb_group,
            )
        else:
            loggers = _as_list(configured)
            if not any(isinstance(lg, CSVLogger) for lg in loggers):
                loggers.append(CSVLogger(save_dir=str(self.run_dir), name="", version=""))
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                # Lightning passes wandb.init an `anonymous` setting that wandb ignores and warns about on
                # every run; not passing it changes nothing else.
                getattr(logger, "_wandb_init", {}).pop("anonymous", None)
        return loggers

    def _resumed(self) -> dict[str, Any]:
        """The top level of the checkpoint a fit resumes (mmap: tensors stay on disk), read once for its uses."""
        if self._resume is None:
            self._resume = _read_checkpoint(Path(self._cfg().ckpt_path))
        return self._resume

    # --- subcommand hooks --------------------------------------------------------------------
    def before_fit(self) -> None:
        ckpt_path = self._cfg().get("ckpt_path")
        root = getattr(self.datamodule, "root", None)
        if self._cfg().get("doctor", True) and not ckpt_path and root is not None and Path(root).is_dir():
            from zoo.doctor import brief

            for line in brief(root):  # hashes and headers only: about 5,000 small images a second
                console.print(f"[yellow]doctor:[/] {line}")
        if ckpt_path:
            done = self._resumed().get("epoch", -1) + 1
            max_epochs = self.trainer.max_epochs
            if max_epochs is not None and max_epochs != -1 and done >= max_epochs:
                raise ZooError(
                    f"{ckpt_path} has already trained {done} of --trainer.max_epochs {max_epochs}; "
                    f"raise it to train on, e.g. --trainer.max_epochs {done + max(1, max_epochs // 2)}"
                )
        if ckpt_path:
            if self._cfg().lr_find or self.model.lr == "auto":
                console.print("LR finder skipped: a resumed run continues the schedule it was saved with")
            if self.model.lr == "auto":
                self.model.lr = 1e-3  # overwritten by the restored optimizer and schedule
        elif self._cfg().lr_find or self.model.lr == "auto":
            if self.trainer.num_devices * self.trainer.num_nodes > 1:
                raise ZooError(
                    "the LR finder runs on one process, not under --trainer.devices/num_nodes > 1: run `zoo lr-find` "
                    "with the same options first, then this fit with --model.lr VALUE (and --lr_find false)"
                )
            find_lr(self.trainer, self.model, self.datamodule, self.run_dir)

    def after_fit(self) -> None:
        ckpt = self.trainer.checkpoint_callback
        self.report.summary(self.trainer, ckpt.best_model_path if ckpt is not None else None)
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:
                # Lightning leaves the W&B run open until the process exits: close it, so the run's log is
                # complete now (and a resume in the same process, as a notebook does, can reopen it)
                logger.experiment.finish()
                import wandb

                wandb.teardown()  # and stop its service: a later run in this process starts a fresh one
        for run in offline_wandb_dirs(self.run_dir):
            console.print(f"[bold]W&B[/] offline run saved in {run}; upload it with: wandb sync {run}")


class _Parsed(Exception):
    def __init__(self, config: Any) -> None:
        self.config = config


class _ParseOnly(ZooCLI):
    def before_instantiate_classes(self) -> None:
        raise _Parsed(self._cfg())


def parse_config(verb: str, args: list[str]) -> Any:
    """The configuration `zoo VERB ARGS` would run, parsed and checked as that command parses it (every config
    file, every spelling of a flag, in their order), with nothing made: no run folder, data, model or trainer.
    A mistake in ARGS is the same one-line ZooError the command would give."""
    try:
        _ParseOnly(args=[verb, *lightning_args(args, verb)], wandb=False)
    except _Parsed as parsed:
        return parsed.config
    raise AssertionError("ZooCLI parsed its arguments without calling before_instantiate_classes")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's top level, weights-only (mmap: tensors stay on disk until used)."""
    return load_tensors_only(path, "--ckpt_path", "checkpoint", mmap=True)


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
    channels = data.get("channels")
    for key, value in defaults.items():
        if key in data and data[key] is None:
            # grey input to an RGB net: one average (channels None: the data module decides and averages)
            if key in ("mean", "std") and channels is not None and channels != len(value):
                value = [round(sum(value) / len(value), 4)] * channels
            data[key] = value


def _data_config_getter(key: str):
    def get(data: ImageClassificationDataModule) -> Any:
        return data.data_config[key]

    return get


def _family_of(class_path: str) -> str:
    name = class_path.rsplit(".", 1)[-1]
    for family, cls in families().items():
        if cls.__name__ == name:
            return family
    return name.lower()


def _as_list(value: Any) -> list:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def lightning_args(args: list[str], verb: str = "fit") -> list[str]:
    """What a user may type that jsonargparse would refuse, rewritten to what it accepts.

    - `--model cnn`: the registry's short names stand for the family's class path.
    - `--trainer.logger TensorBoardLogger` alone: jsonargparse requires a save_dir; zoo uses the run folder.
    - `zoo validate|test --ckpt_path X` with no --config: the settings of X's run (its config.yaml).
    """
    if wandb_offline():
        os.environ.setdefault("WANDB_SILENT", "true")  # zoo prints the one line that matters: how to sync
    if verb in ("validate", "test") and not any(
        a in ("-c", "--config") or a.startswith("--config=") for a in args
    ):
        args = _run_config_of_checkpoint(args) + args
    out = []
    known = families()
    for i, arg in enumerate(args):
        previous = args[i - 1] if i else ""
        if previous == "--model" and arg in known:
            arg = f"{known[arg].__module__}.{known[arg].__name__}"
        elif arg.startswith("--model=") and arg[8:] in known:
            arg = f"--model={known[arg[8:]].__module__}.{known[arg[8:]].__name__}"
        out.append(arg)
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


def _run_config_of_checkpoint(args: list[str]) -> list[str]:
    """`--config RUN/config.yaml` for the run a --ckpt_path comes from, so validate/test see its data."""
    ckpt = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--ckpt_path"), None)
    ckpt = ckpt or next((a.split("=", 1)[1] for a in args if a.startswith("--ckpt_path=")), None)
    if ckpt is None or ckpt in ("last", "best") or not Path(ckpt).is_file():
        return []  # no checkpoint yet: the parser or before_instantiate_classes says what is missing
    config = run_config_of(ckpt)
    if not config.is_file():
        raise ZooError(
            f"no config.yaml in the run folder of {ckpt}; pass the data and model settings with "
            "--config (the recipe it was trained with) and --data.root PATH"
        )
    console.print(f"settings from {config} (pass --config to use others)")
    # A run trained with --trainer.limit_val_batches N (a quick try) is still evaluated on all its data.
    return [
        "--config",
        str(config),
        "--trainer.limit_val_batches",
        "null",
        "--trainer.limit_test_batches",
        "null",
    ]
