"""The one stderr console every zoo message goes through (stdout stays for results: JSON, numbers).

In a multi-process run (DDP, torchrun, SLURM) only the process of global rank 0 prints, so each line shows
once; the others' consoles are quiet, except for their errors (zoo.cli).
"""

from __future__ import annotations

import os

from rich.console import Console


def launched_rank() -> int:
    """This process's global rank as its launcher set it, before any process group exists (0 when alone).

    The variables Lightning reads (lightning.fabric.utilities.rank_zero._get_rank), read here so that printing
    and run folders are decided without importing Lightning; NODE_RANK / GROUP_RANK > 0 is a process of
    another node, started by Lightning's own launcher there.
    """
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit() and int(os.environ[key]) > 0:
            return int(os.environ[key])
    for key in ("NODE_RANK", "GROUP_RANK"):
        if os.environ.get(key, "").isdigit() and int(os.environ[key]) > 0:
            return int(os.environ[key])  # not the true global rank, but not 0, which is what matters
    return 0


console = Console(stderr=True, soft_wrap=True, highlight=False, quiet=launched_rank() > 0)
_errors = Console(stderr=True, soft_wrap=True, highlight=False)


def error(message: str) -> None:
    """`zoo: error: message`, from every process (prefixed with its rank after the first): a process that
    fails alone must say why."""
    rank = launched_rank()
    _errors.print(f"{f'[rank {rank}] ' if rank else ''}[bold red]zoo: error:[/] {message}")


def info(message: str) -> None:
    """One line telling the user what zoo decided for them and how to change it."""
    console.print(message)
