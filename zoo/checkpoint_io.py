"""Checkpoint files written so that a kill or a full disk never leaves a broken `last.ckpt`.

Lightning 2.6 writes a checkpoint into a temporary file under $TMPDIR and then moves it into place. That is
atomic only while $TMPDIR and the run folder share a filesystem; in a container whose runs/ is a mounted
volume the move is a copy, and a kill during the copy leaves a truncated checkpoint, while each kill also
leaves a checkpoint-sized file in /tmp. Here the bytes go to `NAME.partial` beside the target, are flushed
to the disk, and replace the target with one rename, which a kill cannot split.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from zoo.atomic import written_beside
from zoo.errors import ZooError


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic and durable on a local filesystem."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # s3://, gs://: the object store's own upload is all or nothing
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with written_beside(path) as partial, open(partial, "wb") as f:
                torch.save(checkpoint, f)  # streamed: no second copy of the checkpoint in memory
                f.flush()
                os.fsync(f.fileno())
            _fsync_folder(path.parent)  # the rename itself survives a power cut
        except BaseException as err:  # written_beside has removed the partial file
            fault = checkpoint_write_error(path, err)
            if fault is None:
                raise
            raise fault from err


def checkpoint_write_error(path: Path, err: BaseException) -> ZooError | None:
    """One line for a failed checkpoint write that the user can fix (disk full, no permission), else None.

    torch.save reports a failed write of its file as a RuntimeError whose context is the OSError.
    """
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    if err is None:
        return None
    kept = f"the previous {path.name} is intact" if path.is_file() else f"no {path.name} was written"
    if err.errno == errno.ENOSPC:
        return ZooError(
            f"disk full while writing checkpoint {path}; {kept}; free some space or point --runs_dir at a "
            "larger disk, then resume with --ckpt_path last"
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ZooError(
            f"cannot write checkpoint {path}: {err.strerror}; {kept}; choose a --runs_dir you can write to"
        )
    return err


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every OS (Windows): the rename is still atomic there
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
