"""Files written so that a kill or an error never leaves one half-written under its final name."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial"  # a file being written; never a name that looks complete (*.ckpt, *.onnx, *.jsonl)


@contextlib.contextmanager
def written_beside(path: Path) -> Iterator[Path]:
    """`NAME.partial` beside `path`, for the block to write; renamed over `path` when the block ends without
    an error, removed when it raises (Ctrl-C included).

    Beside, not in $TMPDIR: a rename within one folder is atomic, so readers see the old file or the new one,
    whole; a move from another filesystem is a copy, which a kill can cut short.
    """
    partial = path.with_name(path.name + PARTIAL)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
