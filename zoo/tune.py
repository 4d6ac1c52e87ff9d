"""`zoo tune`: hyper-parameter search over any `zoo fit` option with Optuna.

Each trial is an ordinary `zoo fit` (its own run folder and W&B run, all in one W&B group named after the
study) with the sampled options added to the command line. Optuna samples them (random search or TPE), its
pruner stops unpromising trials after any epoch (Hyperband by default, through optuna-integration's Lightning
callback), and its storage (SQLite by default, or any database URL Optuna accepts) holds the study, so the
same command resumes it and several machines can share one.
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback

from zoo.console import console
from zoo.errors import Diverged, ZooError

SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "successive_halving", "median", "none")


@dataclass
class Dimension:
    """One searched option: `choices` (categorical) or a numeric range from `low` to `high`."""

    key: str
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def sample(self, trial: Any) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        if self.integer:
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


def read_space(path: Path) -> list[Dimension]:
    """The search space file: each key a `zoo fit` option (as in YAML, e.g. `model.lr`) and its range.

    `model.lr: {low: 1e-4, high: 0.1, log: true}` (log-uniform), `model.dropout: {low: 0, high: 0.5}`,
    `data.batch_size: {low: 32, high: 256, step: 32}` (whole numbers when low, high and step are),
    `model.optimizer: [adamw, sgd]` (one of a list).
    """
    where = f"--search {path}"
    if not path.is_file():
        raise ZooError(
            f"{where}: no such file; write a YAML file such as:  model.lr: {{low: 1e-4, high: 0.1, log: true}}"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ZooError(f"{where} is not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(raw, dict) or not raw:
        raise ZooError(
            f"{where}: expected a mapping of options to ranges, e.g.  model.lr: {{low: 1e-4, high: 0.1, log: true}}"
        )
    space = []
    for key, spec in raw.items():
        key = str(key).removeprefix("--")
        if isinstance(spec, list) and spec:
            space.append(Dimension(key, choices=spec))
            continue
        if (
            not isinstance(spec, dict)
            or not {"low", "high"} <= set(spec)
            or set(spec) - {"low", "high", "log", "step"}
        ):
            raise ZooError(
                f"{where}: {key}: give a list of choices or {{low: L, high: H}} with optional log: true and step: S"
            )
        low, high, step = (_number(spec.get(k), f"{where}: {key}.{k}") for k in ("low", "high", "step"))
        log = bool(spec.get("log", False))
        if not low < high or (log and low <= 0):
            raise ZooError(
                f"{where}: {key}: need low < high{' and low > 0 for log' if log else ''} (got {low}, {high})"
            )
        integer = all(isinstance(v, int) for v in (low, high, step) if v is not None)
        space.append(Dimension(key, low=low, high=high, log=log, step=step, integer=integer))
    return space


def _number(value: Any, where: str) -> float | int | None:
    """YAML 1.1 reads 1e-4 (no dot) as a string: accept it as the number it means."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ZooError(f"{where}: {value!r} is not a number") from None


def as_args(params: dict[str, Any]) -> list[str]:
    """Sampled values as `zoo fit` options."""
    args = []
    for key, value in params.items():
        args += [
            f"--{key}",
            "null" if value is None else (str(value).lower() if isinstance(value, bool) else str(value)),
        ]
    return args


def _sampler(name: str, seed: int | None, trials: int) -> Any:
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # Optuna's default of 10 random trials before TPE models anything would leave a small budget all random.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, trials // 4)))


def _pruner(name: str, max_epochs: int | str) -> Any:
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _storage(url: str) -> Any:
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if not url.startswith(("sqlite:", "postgresql", "mysql", "oracle", "mssql")):
        raise ZooError(f"--storage {url}: give a database URL, e.g. sqlite:///runs/tune/study.db")
    try:
        # A trial whose process died (killed, a machine lost) stops its heartbeat; after the grace period the
        # next trial to start marks it failed and Optuna queues it again with the same options.
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=10,
            grace_period=30,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    except Exception as err:  # sqlalchemy's errors for a bad URL, a missing driver, no server
        raise ZooError(f"--storage {url}: Optuna cannot open it ({str(err).splitlines()[0][:200]})") from err


@dataclass
class TuneOptions:
    search: Path
    trials: int
    sampler: str = "tpe"
    pruner: str = "hyperband"
    storage: str | None = None
    study: str = "tune"
    metric: str = "val/acc"
    seed: int | None = 0
    runs_dir: str = "runs"


def tune(fit_args: list[str], o: TuneOptions) -> dict[str, Any]:
    """Run (or resume) the study until it has `o.trials` complete or pruned trials; returns its summary."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    space = read_space(o.search)
    max_epochs = _max_epochs(fit_args)  # also checks the fit options once, before any folder or trial
    folder = Path(o.runs_dir) / o.study
    folder.mkdir(parents=True, exist_ok=True)
    url = o.storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    direction = _direction(o.metric)
    # zoo prints a line per trial; Optuna's own warnings repeat them (with a traceback for a bad option)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # Heartbeats and their retry are marked experimental (since Optuna 2.8): they are what makes a study resume.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = optuna.create_study(
        storage=_storage(url),
        study_name=o.study,
        sampler=_sampler(o.sampler, o.seed, o.trials),
        pruner=_pruner(o.pruner, max_epochs),
        direction=direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ZooError(
            f"study {o.study!r} in {url} was made to {study.direction.name.lower()}; use another --study"
        )
    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=counted))
    if o.seed is not None:  # a resumed study must not draw the first trials' options again
        study.sampler = _sampler(o.sampler, o.seed + len(study.get_trials(deepcopy=False)), o.trials)
    if done:
        console.print(f"study {o.study!r} ({url}): {done} trial(s) done, {max(0, o.trials - done)} to go")
    if done < o.trials:
        objective = Objective(fit_args, space, o)
        study.optimize(objective, callbacks=[MaxTrialsCallback(o.trials, states=counted)], catch=())
    return write_results(study, folder, o)


def _max_epochs(fit_args: list[str]) -> int | str:
    """The trials' trainer.max_epochs (the pruners' resource), read as `zoo fit` reads it; "auto" (Optuna
    learns it from the first trials) for a run bounded by max_steps or max_time instead."""
    from zoo.lightning_cli import parse_config

    epochs = parse_config("fit", fit_args).trainer.max_epochs
    return int(epochs) if epochs is not None and epochs > 0 else "auto"


class Objective:
    """One trial: `zoo fit` with the sampled options; its score is the best epoch's metric."""

    def __init__(self, fit_args: list[str], space: list[Dimension], o: TuneOptions) -> None:
        self.fit_args, self.space, self.o = fit_args, space, o

    def __call__(self, trial: Any) -> float:
        import optuna

        params = {d.key: d.sample(trial) for d in self.space}
        monitor = Monitor(trial, self.o.metric)
        # One process a trial: a DDP launcher would start `zoo tune` again in every process. Parallel trials are
        # several `zoo tune` commands sharing one --storage (one per GPU: CUDA_VISIBLE_DEVICES).
        args = ["fit", *self.fit_args, *as_args(params), "--runs_dir", self.o.runs_dir, "--experiment", self.o.study,
                "--trainer.devices", "1", "--trainer.num_nodes", "1", "--trainer.strategy", "auto"]  # fmt: skip
        start = time.perf_counter()
        state, error = "complete", None
        quiet, console.quiet = console.quiet, True  # the trial's own lines; zoo tune prints one per trial
        try:
            _fit(args, monitor, self.o.study)
        except optuna.TrialPruned:
            state = "pruned"
        except Diverged as err:  # a bad lr is a bad trial, not the user's mistake: the search goes on
            state, error = "failed", str(err)
        finally:
            console.quiet = quiet
            _finish_wandb(state)
        run_dir = monitor.run_dir  # None when the fit stopped before it started
        trial.set_user_attr("run_dir", str(run_dir) if run_dir else None)
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))
        trial.set_user_attr("epochs", len(monitor.values))
        config = Path(run_dir) / "config.yaml" if run_dir else None
        if config and config.is_file():  # kept in the study, so any machine sharing it can write best.yaml
            trial.set_user_attr("config", config.read_text())
        shown = "  ".join(f"{k}={_short(v)}" for k, v in params.items())
        best = monitor.best()
        score = "-" if best is None else f"{best:.4f}"
        what = {"complete": "", "pruned": f" pruned after epoch {len(monitor.values)}", "failed": " failed"}[
            state
        ]
        console.print(f"trial {trial.number}: {shown}  {self.o.metric} {score}{what}  {run_dir or ''}")
        if error:
            console.print(f"  {error}")
            trial.set_user_attr("error", error)
            return math.nan  # Optuna records the trial as failed
        if state == "pruned":
            raise optuna.TrialPruned()
        if best is None:
            raise ZooError(
                f"the trial logged no {self.o.metric}; --metric must be a metric each validation logs"
            )
        return best


def _fit(args: list[str], monitor: Any, group: str) -> None:
    from zoo.lightning_cli import ZooCLI, lightning_args

    ZooCLI(args=[args[0], *lightning_args(args[1:])], extra_callbacks=[monitor], wandb_group=group)


def _finish_wandb(state: str) -> None:
    """A pruned or failed trial ends inside the fit: close its W&B run, as a finished fit does."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.summary["tune/state"] = state
        wandb.run.finish(exit_code=0 if state != "failed" else 1)


def _direction(metric: str) -> str:
    """A loss is minimised, anything else (accuracy, F1) maximised."""
    return "minimize" if "loss" in metric else "maximize"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class Monitor(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, which also keeps each epoch's metric and the trial's run folder."""

    def __init__(self, trial: Any, metric: str) -> None:
        super().__init__(trial, monitor=metric)
        self.values: list[float] = []
        self.run_dir: str | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_fit_start(trainer, pl_module)
        self.run_dir = trainer.default_root_dir

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if not trainer.sanity_checking and value is not None:
            self.values.append(float(value))
        super().on_validation_end(trainer, pl_module)  # reports the value; raises TrialPruned to stop

    def best(self) -> float | None:
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            return None
        return (min if _direction(self.monitor) == "minimize" else max)(finite)


def write_results(study: Any, folder: Path, o: TuneOptions) -> dict[str, Any]:
    """trials.csv (every trial), summary.json, and best.yaml: the best trial's config, for `zoo fit --config`."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    rows = [
        {
            "trial": t.number,
            "state": t.state.name.lower(),
            o.metric: t.value if t.value is not None else "",
            **{k: t.params.get(k, "") for k in keys},
            "epochs": t.user_attrs.get("epochs", ""),
            "seconds": t.user_attrs.get("seconds", ""),
            "run_dir": t.user_attrs.get("run_dir", ""),
        }
        for t in trials
    ]
    with open(folder / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["trial", "state", o.metric, *keys, "epochs", "seconds", "run_dir"]
        )
        writer.writeheader()
        writer.writerows(rows)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary: dict[str, Any] = {
        "study": o.study,
        "metric": o.metric,
        "sampler": o.sampler,
        "pruner": o.pruner,
        "n_trials": len(trials),
        "n_complete": len(complete),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_failed": sum(t.state == TrialState.FAIL for t in trials),
        "best_value": None,
        "best_params": None,
        "best_trial": None,
        "best_run_dir": None,
        "best_config": None,
    }
    if complete:
        best = study.best_trial
        summary.update(
            best_value=best.value,
            best_params=best.params,
            best_trial=best.number,
            best_run_dir=best.user_attrs.get("run_dir"),
        )
        if "config" in best.user_attrs:
            (folder / "best.yaml").write_text(
                f"# zoo tune, study {o.study!r}: trial {best.number}, {o.metric} {best.value:.4f}\n{best.user_attrs['config']}"
            )
            summary["best_config"] = str(folder / "best.yaml")
    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
