"""`zoo calibrate`: temperature scaling (Guo et al. 2017) fitted on the validation split.

One scalar T divides the logits, so the ranking (accuracy) is unchanged and only the confidence moves. T is
saved as the model's `temperature` hyperparameter in a copy of the checkpoint; `zoo predict`, `zoo export`
(the division is traced into ONNX) and the app read it from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.errors import ZooError, check_output


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimises the cross-entropy of softmax(logits / T): LBFGS on log T, as Guo et al.

    A dozen lines, so written here rather than adding a calibration library for them.
    """
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    logits, labels = logits.double(), labels.long()
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def _ece(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    from zoo.evaluation import reliability

    return reliability(torch.tensor(logits / t).softmax(-1).numpy(), labels)["ece"]


def _nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    return float(torch.nn.functional.cross_entropy(torch.tensor(logits / t), torch.tensor(labels)))


def cross_fitted_ece(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """ECE after scaling, measured out of sample: T fitted on one half of the images, ECE on the other, both ways.

    The in-sample ECE (T fitted and measured on the same images) flatters; this one does not.
    """
    order = np.random.default_rng(seed).permutation(len(labels))
    halves = order[: len(order) // 2], order[len(order) // 2 :]
    eces, weights = [], []
    for fit, test in (halves, halves[::-1]):
        t = fit_temperature(torch.tensor(logits[fit]), torch.tensor(labels[fit]))
        eces.append(_ece(logits[test], labels[test], t))
        weights.append(len(test))
    return float(np.average(eces, weights=weights))


def calibrate(
    checkpoint: Path, root: str | None = None, output: Path | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Fit T on the validation split, measure ECE before and after, and save a calibrated copy of the checkpoint.

    Returns a summary: temperature, the ECEs (val in-sample, val cross-fitted, test when there is one) and the path.
    """
    from zoo.checkpoint import load_checkpoint
    from zoo.evaluation import datamodule_for, predict_split

    output = check_output(output or checkpoint.with_name(f"{checkpoint.stem}-calibrated.ckpt"), overwrite)
    model = load_checkpoint(checkpoint)
    model.hparams.temperature = 1.0  # fit on the net's own logits, whatever an earlier calibration set
    datamodule = datamodule_for(checkpoint, model, root)
    val = predict_split(model, datamodule, "val")
    if len(val.labels) < 20:
        raise ZooError(
            f"only {len(val.labels)} validation images: too few to fit a temperature; use at least 20"
        )
    t = fit_temperature(torch.tensor(val.logits), torch.tensor(val.labels))
    summary: dict[str, Any] = {
        "temperature": t,
        "val_images": len(val.labels),
        "val_nll_before": _nll(val.logits, val.labels, 1.0),  # what T minimises
        "val_nll_after": _nll(val.logits, val.labels, t),
        "val_ece_before": _ece(val.logits, val.labels, 1.0),
        "val_ece_after": _ece(val.logits, val.labels, t),
        "val_ece_after_cross_fitted": cross_fitted_ece(val.logits, val.labels),
    }
    if "test" in datamodule.splits:  # predict_split set up every split the data has
        test = predict_split(model, datamodule, "test")
        summary |= {
            "test_ece_before": _ece(test.logits, test.labels, 1.0),
            "test_ece_after": _ece(test.logits, test.labels, t),
        }
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["temperature"] = t
    ckpt.setdefault("zoo", {})["calibration"] = summary
    torch.save(ckpt, output)
    summary["output"] = str(output)
    return summary
