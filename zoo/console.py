"""The one stderr console every zoo message goes through (stdout stays for results: JSON, numbers)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, soft_wrap=True, highlight=False)


def info(message: str) -> None:
    """One line telling the user what zoo decided for them and how to change it."""
    console.print(message)
