"""`python -m tests.faults FAULT -- ZOO_ARGS`: run the zoo CLI with a fault of the machine injected.

FAULT is one of
    kill-in-save:NAME:N    the N-th save of checkpoint NAME writes 64 KB, then writes the path of the file it
                           was writing to $FAULT_MARKER and hangs (for the test to SIGKILL)
    enospc-in-save:NAME:N  the N-th save of checkpoint NAME writes 64 KB, then the disk is full (ENOSPC)
    oom:STEP           the training step at global step STEP runs out of memory (torch's CPU message)
    missing:MODULE     the Python package MODULE is not installed
In a test process, pass `patch=monkeypatch.setattr` to the inject_* functions to undo them afterwards.
Faults hook in below zoo (builtins.open, Lightning's Trainer.save_checkpoint, the model's training step), so
they test what zoo does when the machine fails, whatever writes the file.
"""

from __future__ import annotations

import builtins
import errno
import os
import sys
import time
from pathlib import Path

CHUNK = 64 * 1024


class FaultyFile:
    """A binary file whose writes stop after CHUNK bytes: then it hangs or reports a full disk."""

    def __init__(self, real, fault: str) -> None:
        self.real, self.fault, self.written = real, fault, 0

    def write(self, data) -> int:
        room = CHUNK - self.written
        if room > 0:
            self.written += self.real.write(bytes(memoryview(data)[:room]))
            self.real.flush()
        if self.written >= CHUNK:
            if self.fault == "kill-in-save":
                Path(os.environ["FAULT_MARKER"]).write_text(self.real.name)
                time.sleep(600)  # the test kills the process here, in the middle of the save
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.real.name)
        return len(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.real.close()


def inject_into_saves(fault: str, name: str, nth: int, patch=setattr) -> None:
    from lightning.pytorch import Trainer

    real_open, real_save = builtins.open, Trainer.save_checkpoint
    state = {"saves": 0, "active": False}

    def save_checkpoint(self, filepath, *args, **kwargs):
        state["saves"] += Path(filepath).name == name
        state["active"] = Path(filepath).name == name and state["saves"] == nth
        try:
            return real_save(self, filepath, *args, **kwargs)
        finally:
            state["active"] = False

    def open_(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FaultyFile(handle, fault) if state["active"] and "w" in mode and "b" in mode else handle

    patch(Trainer, "save_checkpoint", save_checkpoint)
    patch(builtins, "open", open_)


def inject_oom(step: int, patch=setattr) -> None:
    from zoo.classifier import ImageClassifier

    real_step = ImageClassifier.training_step

    def training_step(self, batch, batch_idx):
        if self.trainer.global_step >= step:
            raise RuntimeError(
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate 34359738368 bytes. "
                "Error code 12 (Cannot allocate memory)"
            )
        return real_step(self, batch, batch_idx)

    patch(ImageClassifier, "training_step", training_step)


def main() -> int:
    fault, _, zoo_args = sys.argv[1], sys.argv[2], sys.argv[3:]
    kind, _, value = fault.partition(":")
    if kind in ("kill-in-save", "enospc-in-save"):
        name, _, nth = value.partition(":")
        inject_into_saves(kind, name, int(nth))
    elif kind == "oom":
        inject_oom(int(value))
    elif kind == "missing":
        sys.modules[value] = None  # `import value` now raises ModuleNotFoundError, as when not installed
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    from zoo.cli import main as zoo_main

    return zoo_main(zoo_args)


if __name__ == "__main__":
    sys.exit(main())
