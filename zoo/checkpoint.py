"""Loading a zoo checkpoint (or a zoo .safetensors export) on its own, and describing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import zoo
from zoo.classifier import ImageClassifier
from zoo.errors import ZooError
from zoo.registry import get_family
from zoo.weights import first_line, load_tensors_only


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> ImageClassifier:
    """Rebuild the model a zoo checkpoint was trained as, in eval mode, from plain values only.

    The family comes from the checkpoint's "zoo" block and the architecture from its hyperparameters;
    nothing is downloaded (starting weights are read only when a fit starts). `model.data_config`
    then says how to preprocess: class names, image size, channels, mean and std.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooError(
            f"checkpoint {path} not found; pass the path of a .ckpt from runs/<experiment>/<version>/checkpoints/"
        )
    if path.suffix == ".safetensors":
        return _load_safetensors(path, map_location)
    if path.suffix in (".onnx", ".pt", ".ts", ".json") and _is_export(path):
        raise ZooError(
            f"{path} is an exported model, not a checkpoint; pass the .ckpt it was exported from "
            "(runs/<experiment>/<version>/checkpoints/best.ckpt)"
        )
    ckpt = load_tensors_only(path, "checkpoint", "checkpoint", map_location=map_location)
    if not isinstance(ckpt, dict) or "zoo" not in ckpt or "state_dict" not in ckpt:
        raise ZooError(f"{path} is not a zoo checkpoint (no 'zoo' block); train it with `zoo fit`")
    made_by = ckpt["zoo"].get("version", "an unknown version")
    try:
        model = _build(ckpt["zoo"]["family"], ckpt["hyper_parameters"])
        model.load_state_dict(ckpt["state_dict"])
    except Exception as err:  # a family, option or layer this zoo does not have
        why = str(err) if isinstance(err, ZooError) else first_line(err)
        raise ZooError(
            f"{path} was saved by zoo {made_by} and does not load in zoo {zoo.__version__} ({why[:200]}); "
            f"load it with zoo {made_by}, or retrain it with this one"
        ) from err
    model.info = {"source": str(path), "epoch": ckpt.get("epoch"), "val_acc": _best_score(ckpt)}
    return model.eval().to(map_location)


def _is_export(path: Path) -> bool:
    """True for what `zoo export` writes: ONNX, TorchScript, or its JSON model card."""
    if path.suffix == ".json" or Path(f"{path}.json").is_file():
        return True
    with open(path, "rb") as f:
        head = f.read(64)
    return path.suffix == ".onnx" and not head.startswith(b"PK")  # a .ckpt is a zip; ONNX is protobuf


def _build(family: str, hyper_parameters: dict[str, Any]) -> ImageClassifier:
    hparams = {k: v for k, v in hyper_parameters.items() if not k.startswith("_")}
    if hparams.get("lr") == "auto":
        hparams["lr"] = 1e-3  # only the optimiser reads it
    return get_family(family)(**hparams)


def _best_score(ckpt: dict) -> float | None:
    """The best val/acc that ModelCheckpoint recorded, if the checkpoint has it."""
    for key, state in ckpt.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and state.get("best_model_score") is not None:
            return float(state["best_model_score"])
    return None


def model_card(model: ImageClassifier) -> dict[str, Any]:
    """Everything besides the weights that predicting needs, as plain JSON values."""
    hparams = {k: v for k, v in model.hparams.items() if not k.startswith("_")}
    return {
        "format": "zoo-model/1",
        "family": model.family,
        **model.data_config,
        "hyper_parameters": json.loads(json.dumps(hparams, default=list)),
        "info": getattr(model, "info", {}),
    }


def _load_safetensors(path: Path, map_location: str | torch.device) -> ImageClassifier:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "zoo" not in meta:
        raise ZooError(f"{path} has no zoo metadata; export it with `zoo export --format safetensors`")
    card = json.loads(meta["zoo"])
    from safetensors.torch import load_file

    model = _build(card["family"], card["hyper_parameters"])
    model.net.load_state_dict(load_file(str(path)))
    model.info = {**card.get("info", {}), "source": str(path)}
    return model.eval().to(map_location)
