"""Where a run writes (runs/<experiment>/<version>/) and what logs it by default."""

from __future__ import annotations

import netrc
import os
import re
import shutil
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from zoo.errors import ZooError


def default_precision() -> str:
    """bf16-mixed on GPUs that support it, else 16-mixed on GPU, else full fp32 on CPU."""
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


CREATED: list[Path] = []  # run folders made by this process, so a failed start can remove them


def remove_empty_run_dirs() -> None:
    """Remove run folders this process made that are still empty (a run that failed to start)."""
    for run_dir in CREATED:
        # the experiment folder and runs/ too, when this run was all they held
        for folder in (run_dir, run_dir.parent, run_dir.parent.parent):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def discard_failed_runs() -> None:
    """After an error: remove the run folders this process made that hold no checkpoint.

    A start that failed (bad weights file, a missing test split) would otherwise leave a config.yaml
    and a W&B stub that look like a run. A run that saved a checkpoint before failing is kept.
    """
    for run_dir in CREATED:
        if run_dir.is_dir() and not any(run_dir.rglob("*.ckpt")):
            shutil.rmtree(run_dir, ignore_errors=True)
    remove_empty_run_dirs()


def new_run_dir(runs_dir: str | Path, experiment: str) -> Path:
    """A fresh runs_dir/experiment/version_N (N one past the highest there): never reuses a folder."""
    parent = Path(runs_dir) / experiment
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := re.fullmatch(r"version_(\d+)", p.name))]
    version = max(taken, default=-1) + 1
    while True:  # mkdir without exist_ok: two runs started at once still get different folders
        run_dir = parent / f"version_{version}"
        try:
            run_dir.mkdir()
            CREATED.append(run_dir)
            return run_dir
        except FileExistsError:
            version += 1


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """RUN for a checkpoint zoo saved as RUN/checkpoints/x.ckpt; None for one kept anywhere else."""
    folder = Path(checkpoint).resolve().parent
    return folder.parent if folder.name == "checkpoints" else None


def run_config_of(checkpoint: str | Path) -> Path:
    """RUN/config.yaml for RUN/checkpoints/x.ckpt: the settings the checkpoint was trained with (may be absent)."""
    return Path(checkpoint).resolve().parent.parent / "config.yaml"


def latest_checkpoint(runs_dir: str | Path, experiment: str) -> Path:
    """runs_dir/experiment/version_N/checkpoints/last.ckpt of the highest N that has one."""
    parent = Path(runs_dir) / experiment
    found = [
        (int(m.group(1)), p / "checkpoints" / "last.ckpt")
        for p in (parent.iterdir() if parent.is_dir() else [])
        if (m := re.fullmatch(r"version_(\d+)", p.name)) and (p / "checkpoints" / "last.ckpt").is_file()
    ]
    if not found:
        raise ZooError(
            f"--ckpt_path last: no run under {parent} has checkpoints/last.ckpt to resume; "
            "train one first, or pass --ckpt_path PATH (or --experiment NAME for another experiment)"
        )
    return max(found)[1]


def wandb_api_key_configured() -> bool:
    """True when `wandb login` or WANDB_API_KEY has given this machine a key."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].rstrip("/")
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_offline() -> bool:
    """Offline unless a key is configured; WANDB_MODE=offline forces it."""
    return os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun") or not wandb_api_key_configured()


def default_loggers(
    run_dir: Path,
    experiment: str,
    with_wandb: bool = True,
    wandb_id: str | None = None,
    wandb_group: str | None = None,
) -> list[Logger]:
    """W&B (offline automatically without a key) + a CSV copy of every metric, both in run_dir.

    `wandb_id`: the W&B run a resumed checkpoint logged to (zoo.dashboard saves it), continued rather than
    a new one. Online, the checkpoints are uploaded as model artifacts when training ends. `wandb_group`: the W&B
    group of the run (`zoo tune`: the study), else WANDB_RUN_GROUP's or none.
    """
    loggers: list[Logger] = []
    if with_wandb and os.environ.get("WANDB_MODE", "").lower() != "disabled":
        offline = wandb_offline()
        loggers.append(
            WandbLogger(
                project=os.environ.get("WANDB_PROJECT", "zoo"),
                name=f"{experiment}/{run_dir.name}",
                save_dir=str(run_dir),
                offline=offline,
                log_model=not offline,
                **({"id": wandb_id, "resume": "allow"} if wandb_id else {}),
                **({"group": wandb_group} if wandb_group else {}),
            )
        )
    loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=""))
    return loggers


def offline_wandb_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))
