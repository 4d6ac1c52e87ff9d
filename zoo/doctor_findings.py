"""What `zoo doctor` calls a problem: the rules that turn a folder scan into findings, worst kinds first."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from zoo.doctor_scan import FolderScan, ImageRecord

TINY_SIDE = 32  # px: below this on a side, an image holds too little to learn from
HUGE_SIDE = 4096  # px on a side, or...
HUGE_PIXELS = 40_000_000  # ...pixels: slow to decode every epoch, and usually a scan or panorama by mistake
IMBALANCE_WARN = 3.0  # largest over smallest class


@dataclass
class Finding:
    """One kind of problem, counted, in one line, with the files that show it."""

    severity: str  # "error": training goes wrong; "warning": worth a look; "note": for information
    check: str  # a stable key: "unreadable", "leakage", "label_conflict", ...
    count: int
    message: str
    examples: list[str] = field(default_factory=list)


def counts(scan: FolderScan) -> dict[str, dict[str, int]]:
    """Readable images per class folder of each split (what training gets; 0 for an empty class folder)."""
    per = {split: dict.fromkeys(names, 0) for split, names in scan.classes.items()}
    for r in scan.images:
        per[r.split][r.label] += r.error is None
    return per


def imbalance(class_counts: dict[str, int]) -> float | None:
    """Largest class over smallest non-empty class; None with fewer than two non-empty classes."""
    sizes = [n for n in class_counts.values() if n > 0]
    return round(max(sizes) / min(sizes), 2) if len(sizes) > 1 else None


def is_tiny(r: ImageRecord) -> bool:
    return r.format is not None and min(r.width, r.height) < TINY_SIDE


def is_huge(r: ImageRecord) -> bool:
    return max(r.width, r.height) > HUGE_SIDE or r.width * r.height > HUGE_PIXELS


def split_name(scan: FolderScan, split: str) -> str:
    """ "all" for a folder without split folders (zoo makes the split when it trains), else the split."""
    return "all" if scan.layout[split] == scan.root else split


def findings(
    scan: FolderScan,
    exact: dict[str, list[list[ImageRecord]]],
    near: list[list[ImageRecord]],
    labels: dict[str, Any] | None,
) -> list[Finding]:
    """Every problem found in a scan, its exact and near duplicates and its label errors, worst kinds first."""
    out: list[Finding] = []

    def add(severity: str, check: str, count: int, message: str, examples: list[str] | None = None) -> None:
        out.append(Finding(severity, check, count, message, examples or []))

    per = counts(scan)
    train = scan.classes["train"]
    for split, names in scan.classes.items():
        missing, extra = sorted(set(train) - set(names)), sorted(set(names) - set(train))
        if split != "train" and (missing or extra):
            add("error", "classes_differ", len(missing) + len(extra),
                f"{split}/ has other classes than train/ (missing: {missing}, extra: {extra}); "
                "`zoo fit` needs the same class folders in every split")  # fmt: skip
        empty = [
            f"{(scan.layout[split] / n).relative_to(scan.root).as_posix()}/"
            for n in names
            if not per[split][n]
        ]
        if empty:
            add(
                "error",
                "empty_class",
                len(empty),
                f"{_n(len(empty), 'class folder')} with no readable images",
                empty,
            )
    bad = [r for r in scan.images if r.error]
    if bad:
        add("error", "unreadable", len(bad), f"{_n(len(bad), 'unreadable image file')} (`zoo fit` skips them)",
            [f"{r.rel} ({r.error})" for r in bad])  # fmt: skip
    copies = {
        "label_conflict": ("error", "same image under two classes (label conflict: one label is wrong)"),
        "leakage": ("error", "same image in two splits (leakage: validation scores memorised images)"),
        "within_class": ("warning", "same image twice in one class (it weighs double"
                         + ("; zoo's split can put the copies in train and val)" if scan.zoo_splits else ")")),
    }  # fmt: skip
    for kind, (severity, what) in copies.items():
        if exact[kind]:
            add(severity, kind, len(exact[kind]), f"{_n(len(exact[kind]), 'group')}: {what}",
                [" = ".join(r.rel for r in g) for g in exact[kind]])  # fmt: skip
    if near:
        spans = [where for where, key in (("across splits", "split"), ("across classes", "label"))
                 if any(len({getattr(r, key) for r in g}) > 1 for g in near)]  # fmt: skip
        add("warning", "near_duplicate", len(near),
            f"{_n(len(near), 'group')} of near-duplicates (resized or re-encoded copies"
            f"{', some ' + ' and '.join(spans) if spans else ''})",
            [" ~ ".join(r.rel for r in g) for g in near])  # fmt: skip
    if labels and labels["issues"]:
        issues = labels["issues"]
        add("warning", "label_errors", len(issues),
            f"{_n(len(issues), 'likely label error')} (out-of-sample scores from {labels['folds']}-fold heads "
            f"on {labels['model']} features)",
            [f"{i.record.rel}: given {i.given} ({i.p_given:.2f}), suggested {i.suggested} ({i.p_suggested:.2f})"
             for i in issues])  # fmt: skip
    for split, class_counts in per.items():
        ratio = imbalance(class_counts)
        if ratio is not None and ratio >= IMBALANCE_WARN:
            big = max(class_counts, key=class_counts.get)
            small = min((c for c in class_counts if class_counts[c]), key=class_counts.get)
            add("warning", "imbalance", 1,
                f"imbalance {ratio:.3g}:1 in {split_name(scan, split)} ({big} {class_counts[big]}, {small} "
                f"{class_counts[small]}); consider --data.sampler balanced")  # fmt: skip
    tiny = [r for r in scan.images if is_tiny(r)]
    sized = [r for r in scan.images if r.format]
    if tiny and len(tiny) == len(sized):  # a low-resolution data set (MNIST, CIFAR): its nature, no mistake
        add("note", "tiny", len(tiny), f"all images have a side under {TINY_SIDE} px")
    elif tiny:
        add("warning", "tiny", len(tiny), f"{_n(len(tiny), 'tiny image')} (a side under {TINY_SIDE} px)",
            [f"{r.rel} ({r.width}x{r.height})" for r in tiny])  # fmt: skip
    huge = [r for r in scan.images if is_huge(r)]
    if huge:
        add("warning", "huge", len(huge),
            f"{_n(len(huge), 'huge image')} (a side over {HUGE_SIDE} px or over {HUGE_PIXELS // 1_000_000} MP: "
            "slow to decode every epoch)", [f"{r.rel} ({r.width}x{r.height})" for r in huge])  # fmt: skip
    skipped = [(f, why) for f, why in scan.ignored if why != "hidden"]
    if skipped:
        add("warning", "ignored", len(skipped), f"{_n(len(skipped), 'path')} in the folder that `zoo fit` does not read",
            [f"{f} ({why})" for f, why in skipped])  # fmt: skip
    hidden = [f for f, why in scan.ignored if why == "hidden"]
    if hidden:
        add("note", "hidden", len(hidden), f"{_n(len(hidden), 'hidden file')} skipped", hidden)
    modes = Counter(r.mode for r in scan.images if r.mode)
    if len(modes) > 1:
        said = ", ".join(f"{m} {n}" for m, n in modes.most_common())
        add("note", "modes", len(modes),
            f"images of {len(modes)} modes ({said}): zoo converts them all to RGB (or L when all are grayscale)")  # fmt: skip
    return out


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
