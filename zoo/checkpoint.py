"""Loading a zoo checkpoint on its own: the seam that predict, export and the app build on."""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.classifier import ImageClassifier
from zoo.errors import ZooError
from zoo.registry import get_family


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> ImageClassifier:
    """Rebuild the model a zoo checkpoint was trained as, in eval mode, from plain values only.

    The family comes from the checkpoint's "zoo" block and the architecture from its hyperparameters;
    nothing is downloaded (pretrained weights are already in the state dict). `model.data_config`
    then says how to preprocess: class names, image size, channels, mean and std.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooError(
            f"checkpoint {path} not found; pass the path of a .ckpt from runs/<experiment>/<version>/checkpoints/"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ZooError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
    if not isinstance(ckpt, dict) or "zoo" not in ckpt or "state_dict" not in ckpt:
        raise ZooError(f"{path} is not a zoo checkpoint (no 'zoo' block); train it with `zoo fit`")
    cls = get_family(ckpt["zoo"]["family"])
    hparams = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    if "pretrained" in hparams:  # the trained weights are in the state dict: fetch nothing
        hparams.update(pretrained=False, weights=None)
    if hparams.get("lr") == "auto":
        hparams["lr"] = 1e-3  # only the optimiser reads it
    model = cls(**hparams)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().to(map_location)
