"""`zoo doctor`: an image folder checked for the mistakes that ruin a model, before it trains on them.

The file pass (zoo.doctor_scan) reads each file once: its bytes hashed, its header parsed and, unless only
a `brief` is wanted, a decode for broken files and a perceptual hash. zoo.doctor_duplicates groups the
copies, zoo.doctor_labels looks for likely label errors with a checkpoint, and zoo.doctor_findings says
which of it are problems. This module runs them and reports: one summary block on stderr and doctor.json.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from zoo.console import console
from zoo.doctor_duplicates import NEAR_BITS, NEAR_MAD, exact_groups, near_groups
from zoo.doctor_findings import counts, findings, imbalance, is_huge, is_tiny, split_name
from zoo.doctor_scan import FolderScan, ImageRecord, check_root, list_folder, read_images
from zoo.errors import ZooError

SHOWN = 3  # examples per finding on the terminal (doctor.json has them all)


def diagnose(
    root: str | Path, checkpoint: Path | None = None, output: Path | None = None, decode: bool = True
) -> tuple[dict[str, Any], FolderScan]:
    """Check an image folder; returns the report (plain JSON values) and the scan it came from.

    Args:
        root: PATH/<class>/* or PATH/{train,val[,test]}/<class>/*.
        checkpoint: a zoo .ckpt whose features serve the label-error search; None = no search.
        output: where the label-error picture goes (needed with `checkpoint`).
        decode: decode every image (finds broken files and near-duplicates); False = headers and hashes only.
    """
    if checkpoint is not None and not checkpoint.expanduser().is_file():
        raise ZooError(
            f"--checkpoint {checkpoint} not found; pass a .ckpt from runs/<experiment>/<version>/checkpoints/"
        )
    start = time.perf_counter()
    scan = list_folder(root)
    read_images(scan.images, decode)
    scan_s = time.perf_counter() - start
    exact = exact_groups(scan.images)
    near = near_groups(scan.images) if decode else []
    labels = None
    if checkpoint is not None:
        from zoo.doctor_labels import find_label_errors  # torch and the model only when asked for

        labels = find_label_errors(scan.images, scan.classes["train"], checkpoint.expanduser(), output)
    found = findings(scan, exact, near, labels)
    per = counts(scan)
    report = {
        "root": str(scan.root.resolve()),
        "layout": {split: _rel(folder, scan.root) for split, folder in scan.layout.items()},
        "zoo_splits": scan.zoo_splits,
        "counts": per,
        "imbalance": {split: imbalance(c) for split, c in per.items()},
        "images": len(scan.images),
        "formats": _histogram(r.format for r in scan.images),
        "modes": _histogram(r.mode for r in scan.images),
        "sizes": _histogram(f"{r.width}x{r.height}" for r in scan.images if r.format),
        "short_side": _spread([min(r.width, r.height) for r in scan.images if r.format]),
        "ignored": [{"file": f, "reason": why} for f, why in scan.ignored],
        "unreadable": [{"file": r.rel, "reason": r.error} for r in scan.images if r.error],
        "tiny": [_sized(r) for r in scan.images if is_tiny(r)],
        "huge": [_sized(r) for r in scan.images if is_huge(r)],
        "duplicates": {kind: [_group(g) for g in groups] for kind, groups in exact.items()},
        "near_duplicates": [_group(g) for g in near] if decode else None,
        "near_duplicate_rule": {"max_hash_bits": NEAR_BITS, "max_thumbnail_mad": NEAR_MAD},
        "label_errors": _label_section(labels),
        "problems": [asdict(f) for f in found if f.severity != "note"],
        "notes": [asdict(f) for f in found if f.severity == "note"],
        "decoded": decode,
        "scan_seconds": round(scan_s, 3),
    }
    return report, scan


def brief(root: str | Path) -> list[str]:
    """A few one-line warnings about an image folder, cheap enough to print before training.

    Hashes and headers only (no decoding): duplicates, leakage, label conflicts, unreadable headers,
    imbalance, tiny or huge images, ignored files. [] for a folder that is no image folder (the data
    module says why).
    """
    try:
        report, _ = diagnose(root, decode=False)
    except ZooError:
        return []
    return [f"{p['message']}: see `zoo doctor {root}`" for p in report["problems"]]


def run_doctor(root: Path, checkpoint: Path | None = None, output: Path | None = None) -> dict[str, Any]:
    """`zoo doctor`: check, print the summary on stderr, write doctor.json; returns the report."""
    check_root(root)  # a mistyped folder is the first thing to say, before anything about --output
    out = output_folder(root, output)
    report, scan = diagnose(root, checkpoint, out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "doctor.json"
    try:
        path.write_text(json.dumps(report, indent=1) + "\n")
    except OSError as err:
        raise ZooError(f"cannot write {path}: {err.strerror or err}; choose another --output") from err
    print_summary(report, scan)
    console.print(f"[bold]report[/] {escape(str(path))}")
    return report


def output_folder(root: Path, output: Path | None) -> Path:
    """--output, or ./doctor; never inside the image folder, where a later run would read it as a class."""
    root = root.expanduser().resolve()
    out = (output or Path("doctor")).expanduser()
    if out.resolve().is_relative_to(root):
        if output is not None:
            raise ZooError(f"--output {output} is inside the image folder {root}; choose a folder outside it")
        out = root.parent / f"{root.name}_doctor"
    return out


def print_summary(report: dict[str, Any], scan: FolderScan) -> None:
    """One block on stderr: the folder at a glance, then each problem with its worst examples."""
    layout = "zoo splits it into train/val" if scan.zoo_splits else "split folders " + ", ".join(scan.layout)
    lines = [f"[bold]zoo doctor[/] {escape(str(scan.root))} ({layout})"]
    for split, class_counts in report["counts"].items():
        shown = ", ".join(f"{escape(c)} {n}" for c, n in list(class_counts.items())[:8])
        more = f", +{len(class_counts) - 8} more" if len(class_counts) > 8 else ""
        lines.append(
            f"  {split_name(scan, split):<6} {len(class_counts)} classes, {sum(class_counts.values())} images: {shown}{more}"
        )
    side = report["short_side"]
    lines.append(
        f"  files  {report['images']} images; formats {_top(report['formats'])}; modes {_top(report['modes'])}; "
        f"sizes {_top(report['sizes'])}"
        + (f"; shorter side {side['min']}-{side['max']} px (median {side['median']:g})" if side else "")
    )
    colours = {"error": "bold red", "warning": "yellow", "note": "dim"}
    for f in [*report["problems"], *report["notes"]]:
        lines.append(f"  [{colours[f['severity']]}]{f['severity']:<7}[/] {escape(f['message'])}")
        for example in f["examples"][:SHOWN]:
            lines.append(f"           {escape(example)}")
        if len(f["examples"]) > SHOWN:
            lines.append(f"           ... {len(f['examples']) - SHOWN} more in doctor.json")
    if report["label_errors"] and report["label_errors"]["figure"]:
        lines.append(f"  label-error suspects pictured in {escape(report['label_errors']['figure'])}")
    if not report["problems"]:
        lines.append("  [green]no problems found[/]")
    console.print("\n".join(lines))


def _label_section(labels: dict[str, Any] | None) -> dict[str, Any] | None:
    if labels is None:
        return None
    issues = [
        {
            "file": i.record.rel,
            "split": i.record.split,
            "given": i.given,
            "suggested": i.suggested,
            "p_given": round(i.p_given, 4),
            "p_suggested": round(i.p_suggested, 4),
        }
        for i in labels["issues"]
    ]
    return {**labels, "issues": issues}


def _group(group: list[ImageRecord]) -> dict[str, Any]:
    return {
        "files": [r.rel for r in group],
        "classes": sorted({r.label for r in group}),
        "splits": sorted({r.split for r in group}),
    }


def _sized(r: ImageRecord) -> dict[str, Any]:
    return {"file": r.rel, "width": r.width, "height": r.height}


def _histogram(values) -> dict[str, int]:
    return dict(Counter(v for v in values if v is not None).most_common())


def _spread(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": int(min(values)), "median": float(np.median(values)), "max": int(max(values))}


def _top(histogram: dict[str, int], k: int = 3) -> str:
    items = list(histogram.items())
    said = ", ".join(f"{key} {n}" for key, n in items[:k])
    return said + (f", +{len(items) - k} more" if len(items) > k else "") if items else "none"


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
