"""The one exception type for user mistakes (the CLI prints it as a single line and exits 2), and the
small argparse parser of the verbs outside LightningCLI, which reports its mistakes the same way."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, NoReturn


class ZooError(Exception):
    """A problem the user can fix (bad path, bad option); the message says what, where and how."""


class Diverged(ZooError):
    """The training loss became NaN or infinite (a user's lr too high; in `zoo tune`, a failed trial)."""


class VerbParser(argparse.ArgumentParser):
    """argparse for `zoo predict/export/app/models`: a mistake is one `zoo: error:` line, not usage + error."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # `zoo fit`'s options are spelled with underscores (--data.batch_size, --ckpt_path): each --top-k here
        # also answers to --top_k, so a user need not remember which verb takes which spelling. (Not as argparse
        # aliases: its messages and help would then name every option twice.)
        if args is not None:
            args = [_hyphenated(arg, self._option_string_actions) for arg in args]
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        raise ZooError(f"{self.prog}: {message} (see {self.prog} --help)")


def _hyphenated(arg: str, known: dict[str, Any]) -> str:
    """--top_k (or --top_k=3) as --top-k when that is the option's name."""
    name, eq, value = arg.partition("=")
    if not name.startswith("--") or name in known:
        return arg
    hyphen = "--" + name[2:].replace("_", "-")
    return f"{hyphen}{eq}{value}" if hyphen in known else arg


def positive_int(text: str) -> int:
    """argparse type for counts such as --top-k and --batch-size."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def check_output(path: Path, overwrite: bool, option: str = "--output") -> Path:
    """A file the user asked zoo to write: refuse, in one line, what would fail or lose their data."""
    path = path.expanduser()
    if path.is_dir():
        raise ZooError(f"{option} {path} is a folder; give a file name, e.g. {path / 'model'}")
    if path.exists() and not overwrite:
        raise ZooError(f"{path} already exists; choose another {option} or pass --overwrite")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ZooError(f"{option} {path}: {ancestor} is a file, not a folder; choose another {option}")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ZooError(f"{option} {path}: no permission to write in {ancestor}; choose another {option}")
    return path
