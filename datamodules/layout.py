"""How an image folder is laid out: split folders and class folders. Light (no Lightning), so `zoo doctor`
reads folders by exactly the rules `zoo fit` uses without loading the training stack."""

from __future__ import annotations

from pathlib import Path

from datamodules.images import is_image_file
from zoo.errors import ZooError

VAL_NAMES = ("val", "valid", "validation")


def detect_layout(root: Path) -> dict[str, Path]:
    """Which sub-folders are splits: train/ + val|valid|validation/ (+ test/), or none (root is the train set)."""
    sub = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    if "train" not in sub:
        return {"train": root}
    layout = {"train": sub["train"]}
    for name in VAL_NAMES:
        if name in sub:
            layout["val"] = sub[name]
            break
    if "test" in sub:
        layout["test"] = sub["test"]
    return layout


def class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_not_nested_splits(folder: Path, names: list[str]) -> None:
    """`PATH/training/<class>/` with `PATH/testing/<class>/` would give the classes training, testing."""
    if len(names) < 2:
        return
    subdirs = [{d.name for d in class_dirs(folder / n)} for n in names]
    direct = [any(is_image_file(p) for p in (folder / n).iterdir()) for n in names]
    if not any(direct) and subdirs[0] and all(sub == subdirs[0] for sub in subdirs):
        raise ZooError(
            f"{folder} looks like split folders ({', '.join(names)}) that each hold the same class folders "
            f"({', '.join(sorted(subdirs[0])[:5])}); rename them train/ and val/ (and test/), or pass one as --data.root"
        )
