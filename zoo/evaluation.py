"""`zoo evaluate`: a trained model on one split, measured per class, with its calibration and worst mistakes."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from zoo.classifier import ImageClassifier
from zoo.errors import ZooError
from zoo.runs import run_config_of, run_dir_of

ECE_BINS = 15  # as the test/ece metric (torchmetrics' MulticlassCalibrationError, n_bins=15, L1)


@dataclass
class Predictions:
    """Softmax scores of every image of a split, in the data module's order."""

    probs: np.ndarray  # (N, K) float
    labels: np.ndarray  # (N,) int
    files: list[str]  # the image file of each row ("" where the data set has no files)
    logits: np.ndarray | None = None  # (N, K), without test-time augmentation


def run_data_config(checkpoint: Path) -> dict[str, Any] | None:
    """The `data` section of the config.yaml of the run a checkpoint comes from (RUN/checkpoints/x.ckpt)."""
    config = run_config_of(checkpoint)
    if not config.is_file():
        return None
    return (yaml.safe_load(config.read_text()) or {}).get("data")


def datamodule_for(checkpoint: Path, model: ImageClassifier, root: str | None = None) -> Any:
    """The data module the model was trained with (its run's settings, so zoo's own split is the same),
    on `root` if given; files are read from disk so each prediction keeps its file name."""
    data = run_data_config(checkpoint)
    h = model.hparams
    if data is not None:
        module, _, name = data["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        kwargs = dict(data.get("init_args") or {})
        if root is not None:
            kwargs["root"] = root
    elif root is not None:
        from datamodules import ImageFolderDataModule

        cls, kwargs = ImageFolderDataModule, {"root": root}
    else:
        raise ZooError(
            f"no config.yaml in the run folder of {checkpoint}, so the data it was trained on is unknown; "
            "pass --data.root PATH (a folder of <class>/ or {train,val,test}/<class>/ images)"
        )
    kwargs.update(image_size=h.image_size, channels=h.channels, interpolation=h.interpolation, cache_gb=0)
    datamodule = cls(**kwargs)
    if list(datamodule.class_names) != list(h.class_names):
        raise ZooError(
            f"the model knows the classes {list(h.class_names)} but {kwargs.get('root')} has "
            f"{list(datamodule.class_names)}; evaluate on a folder with the same class folders"
        )
    return datamodule


@torch.no_grad()
def predict_split(model: ImageClassifier, datamodule: Any, split: str, tta: bool = False) -> Predictions:
    """Scores for every image of `split`, with the eval preprocessing; `tta`: averaged with the mirror image's."""
    datamodule.setup("test" if split == "test" else "fit")
    loader = datamodule.eval_loader(split)
    model.eval()
    device = model.mean.device
    probs, logits, labels = [], [], []
    for images, targets in loader:
        x = images.to(device).float().div_(255)  # (B, C, H, W) uint8 -> [0, 1]
        out = model(x).float()
        p = out.softmax(dim=-1)
        if tta:
            p = (p + model(x.flip(-1)).float().softmax(dim=-1)) / 2
        probs.append(p.cpu())
        logits.append(out.cpu())
        labels.append(targets)
    items = datamodule.splits[split].items
    files = [str(item) if isinstance(item, (str, Path)) else "" for item in items]
    return Predictions(torch.cat(probs).numpy(), torch.cat(labels).numpy(), files, torch.cat(logits).numpy())


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def per_class(cm: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows true, columns predicted)."""
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    precision = tp / np.maximum(cm.sum(axis=0), 1)
    recall = tp / np.maximum(support, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, Any]:
    """Confidence against accuracy in equal-width bins, and the expected calibration error (L1).

    Bins are (lo, hi], as torchmetrics bins them, so the ECE here equals the test/ece zoo logs.
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    acc = np.bincount(index, weights=correct, minlength=bins) / np.maximum(counts, 1)
    conf = np.bincount(index, weights=confidence, minlength=bins) / np.maximum(counts, 1)
    ece = float(np.sum(counts / max(1, len(labels)) * np.abs(acc - conf)))
    return {
        "bin_edges": edges.tolist(),
        "count": counts.tolist(),
        "accuracy": acc.tolist(),
        "confidence": conf.tolist(),
        "ece": ece,
    }


def metrics(pred: Predictions, class_names: list[str], top_losses: int = 16) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, top-1/top-5 accuracy, the confusion matrix, calibration
    and the `top_losses` images with the highest loss (the model's most confident mistakes first)."""
    k = len(class_names)
    predicted = pred.probs.argmax(axis=1)
    cm = confusion(pred.labels, predicted, k)
    rows = per_class(cm, class_names)
    ranks = (-pred.probs).argsort(axis=1)
    top5 = float(np.mean([label in row[:5] for row, label in zip(ranks, pred.labels, strict=True)]))
    p_true = pred.probs[np.arange(len(pred.labels)), pred.labels]
    loss = -np.log(np.clip(p_true, 1e-12, None))
    worst = np.argsort(-loss, kind="stable")[:top_losses]
    return {
        "images": len(pred.labels),
        "accuracy": float(np.mean(predicted == pred.labels)),
        "top5_accuracy": top5 if k >= 6 else None,
        "macro_f1": float(np.mean([r["f1"] for r in rows])),
        "per_class": rows,
        "confusion": cm.tolist(),
        "calibration": reliability(pred.probs, pred.labels),
        "top_losses": [
            {
                "index": int(i),
                "file": pred.files[i],
                "true": class_names[pred.labels[i]],
                "predicted": class_names[predicted[i]],
                "p_true": float(p_true[i]),
                "p_predicted": float(pred.probs[i, predicted[i]]),
                "loss": float(loss[i]),
            }
            for i in worst
        ],
    }


def evaluate(
    checkpoint: Path,
    root: str | None = None,
    split: str = "val",
    top_losses: int = 16,
    output: Path | None = None,
    tta: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on a split; write evaluation.json, the figures and report.html.

    Without `output`: the files go to RUN/evaluate/SPLIT and the report to RUN/report.html for a checkpoint
    in a run folder (else beside the checkpoint). Returns the evaluation and the report's path.
    """
    from apps.explain import Explainer
    from zoo import figures
    from zoo.checkpoint import load_checkpoint
    from zoo.report import write_report

    if not checkpoint.is_file():
        raise ZooError(
            f"--checkpoint {checkpoint} not found; pass a .ckpt from runs/<experiment>/<version>/checkpoints/"
        )
    model = load_checkpoint(checkpoint)
    run_dir = run_dir_of(checkpoint)
    report_dir = output  # --output: everything goes there; else the report goes into the run folder
    output = output or (
        (run_dir / "evaluate" / split) if run_dir else checkpoint.with_name(f"{checkpoint.stem}_{split}")
    )
    output.mkdir(parents=True, exist_ok=True)
    datamodule = datamodule_for(checkpoint, model, root)
    pred = predict_split(model, datamodule, split, tta)
    names = list(model.hparams.class_names)
    result = metrics(pred, names, top_losses)
    result.update(
        split=split,
        checkpoint=str(checkpoint),
        model=f"{type(model.net).__name__} ({model.family})",
        tta=tta,
        temperature=float(model.hparams.temperature),
    )
    (output / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")

    cells = []
    dataset = datamodule.eval_loader(split).dataset
    explain = Explainer(model)  # one float32 copy for every picture
    for entry in result["top_losses"]:
        image, _ = dataset[entry["index"]]  # (C, H, W) uint8, as the model saw it
        shown = explain(image.float() / 255, class_index=names.index(entry["predicted"]))
        picture = image.permute(1, 2, 0).numpy()
        cells.append({**entry, "image": picture[..., 0] if picture.shape[-1] == 1 else picture,
                      "overlay": shown.overlay})  # fmt: skip
    made = {
        "confusion": figures.save(figures.confusion_figure(np.asarray(result["confusion"]), names), output / "confusion.png"),
        "reliability": figures.save(figures.reliability_figure(result["calibration"], split), output / "reliability.png"),
        "top_losses": figures.save(figures.top_losses_figure(cells), output / "top_losses.png") if cells else None,
    }  # fmt: skip
    if run_dir is not None and (run_dir / "metrics.csv").is_file():
        made["curves"] = figures.save(
            figures.learning_curves_figure(run_dir / "metrics.csv"), output / "curves.png"
        )
    if run_dir is not None:
        made["lr_find"] = next(iter(sorted(run_dir.glob("lr_find.png"))), None)
    report = write_report(
        (report_dir or run_dir or output) / "report.html", str(run_dir or checkpoint), result, made
    )
    return result, report
