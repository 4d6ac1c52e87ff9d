"""A run's report.html: one self-contained page (pictures inlined) that opens without a server."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 3px 10px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; } img { max-width: 100%; }
.numbers span { display: inline-block; margin-right: 2em; font-size: 1.1em; } .muted { color: #777; }
"""


def _img(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _per_class_table(rows: list[dict[str, Any]]) -> str:
    return _table(
        ["class", "precision", "recall", "F1", "support"],
        [
            [r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", r["support"]]
            for r in rows
        ],
    )


def _top_losses_table(rows: list[dict[str, Any]]) -> str:
    return _table(
        ["file", "true", "p(true)", "predicted", "p(predicted)"],
        [[r["file"] or r["index"], r["true"], f"{r['p_true']:.3f}", r["predicted"], f"{r['p_predicted']:.3f}"]
         for r in rows],
    )  # fmt: skip


def write_report(out: Path, title: str, evaluation: dict[str, Any], figures: dict[str, Path | None]) -> Path:
    """Write `out` (report.html) from an evaluation (zoo.evaluation.metrics plus where and what) and its PNGs.

    Args:
        out: the HTML file to write.
        title: the page's heading (the run folder).
        evaluation: metrics() of the split, with "split", "checkpoint" and "model" added.
        figures: "curves", "lr_find", "confusion", "reliability", "top_losses" -> PNG paths (missing: left out).
    """
    e = evaluation
    top5 = (
        f"<span>top-5 accuracy <b>{e['top5_accuracy']:.4f}</b></span>"
        if e.get("top5_accuracy") is not None
        else ""
    )
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='muted'>{html.escape(e['model'])} · checkpoint {html.escape(e['checkpoint'])} · "
        f"{e['images']} {html.escape(e['split'])} images"
        f"{' · test-time augmentation (mirror)' if e.get('tta') else ''}"
        f"{f' · temperature {t:.3f}' if (t := e.get('temperature', 1.0)) != 1.0 else ''}</p>",
        f"<p class='numbers'><span>accuracy <b>{e['accuracy']:.4f}</b></span>{top5}"
        f"<span>macro F1 <b>{e['macro_f1']:.4f}</b></span>"
        f"<span>ECE <b>{e['calibration']['ece']:.4f}</b></span></p>",
    ]
    if figures.get("curves") or figures.get("lr_find"):
        sections += [
            "<h2>Training</h2>",
            _img(figures.get("curves"), "learning curves"),
            _img(figures.get("lr_find"), "LR finder"),
        ]
    sections += [
        "<h2>Per class</h2>",
        _per_class_table(e["per_class"]),
        "<h2>Confusion matrix</h2>",
        _img(figures.get("confusion"), "confusion matrix"),
        "<h2>Calibration</h2>",
        "<p>Bars: the accuracy of the images whose top score falls in each bin; a calibrated model follows "
        "the diagonal. ECE is the gap, weighted by how many images each bin holds.</p>",
        _img(figures.get("reliability"), "reliability diagram"),
        "<h2>Top losses</h2>",
        "<p>The images with the highest loss: confident mistakes first. Right of each: Grad-CAM of the "
        "predicted class. Look for wrong labels, ambiguous images and what the model keyed on.</p>",
        _img(figures.get("top_losses"), "top losses"),
        _top_losses_table(e["top_losses"]),
    ]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>"
    )
    out.write_text(page)
    return out
