"""`zoo export`: ONNX, TorchScript or safetensors files that describe themselves."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zoo.atomic import written_beside
from zoo.checkpoint import model_card
from zoo.classifier import ImageClassifier
from zoo.console import info
from zoo.errors import ZooError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
# onnxruntime and PyTorch sum in different orders; deep nets amplify the rounding with the logits'
# scale (a fine-tuned EfficientNet-Lite0 differs by 3.7e-4 at logits near 10). Allowed: 1e-4 plus
# 1e-4 of the largest |logit|, and the same top-1 class for every image.
ONNX_ATOL, ONNX_RTOL = 1e-4, 1e-4
TORCHSCRIPT_NOTE = (
    "note: PyTorch deprecates TorchScript (torch.jit); this file still loads with torch.jit.load, "
    "but --format onnx is the export to build on"
)


class InferenceModule(nn.Module):
    """Normalisation + net (+ the calibrated temperature) as a plain nn.Module (no Lightning): input
    (B, C, H, W) in [0, 1] -> the logits ImageClassifier.forward gives."""

    def __init__(self, model: ImageClassifier) -> None:
        super().__init__()
        self.net = model.net
        self.register_buffer("mean", model.mean.clone())
        self.register_buffer("std", model.std.clone())
        self.temperature = float(model.hparams.temperature)  # `zoo calibrate`'s T; a constant in the trace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net((x - self.mean) / self.std)
        return logits if self.temperature == 1 else logits / self.temperature


def check_images(model: ImageClassifier, n: int = 8) -> torch.Tensor:
    """A fixed batch to compare runtimes on: bundled sample images (real structure) plus uniform noise."""
    from datamodules.folder import sample_root
    from datamodules.images import list_images, load_image
    from datamodules.transforms import eval_transform

    cfg = model.data_config
    transform = eval_transform(cfg["image_size"], cfg["interpolation"])
    paths = list_images(sample_root() / "val")[::20][: n // 2]
    real = [transform(image=load_image(p, cfg["channels"]))["image"].float() / 255 for p in paths]
    noise = torch.rand(
        n - len(real),
        cfg["channels"],
        cfg["image_size"],
        cfg["image_size"],
        generator=torch.Generator().manual_seed(0),
    )
    return torch.cat([torch.stack(real), noise]) if real else noise


def export(model: ImageClassifier, fmt: str, output: Path) -> dict:
    """Write `model` to `output` in `fmt` plus a sidecar `output.json` with its model card.

    Returns:
        The card, with `max_abs_diff` against PyTorch for ONNX.
    """
    if fmt not in FORMATS:
        raise ZooError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    card = model_card(model)
    module = InferenceModule(model).eval().float()
    example = torch.rand(2, card["channels"], card["image_size"], card["image_size"])
    # Written beside the target and renamed once checked: a failed or killed export leaves no file that looks
    # finished, and an export over an older one (--overwrite) replaces it only when the new one is good.
    with written_beside(output) as partial:
        if fmt == "onnx":
            _export_onnx(module, example, partial, card, check_images(model))
        elif fmt == "torchscript":
            _export_torchscript(module, example, partial, card)
        else:
            from safetensors.torch import save_file

            state = {k: v.contiguous() for k, v in model.net.state_dict().items()}
            save_file(state, str(partial), metadata={"zoo": json.dumps(card)})
    Path(f"{output}.json").write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return card


def _export_torchscript(module: nn.Module, example: torch.Tensor, output: Path, card: dict) -> None:
    info(TORCHSCRIPT_NOTE)
    with warnings.catch_warnings():
        # torch.jit.trace and torch.jit.save each warn (FutureWarning, torch 2.14): the note above says it once.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module, example)
        torch.jit.save(traced, str(output), _extra_files={"zoo.json": json.dumps(card)})


def _export_onnx(
    module: nn.Module, example: torch.Tensor, output: Path, card: dict, images: torch.Tensor
) -> float:
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        module, (example,), str(output), input_names=["image"], output_names=["logits"],
        dynamic_shapes={"x": {0: batch}}, dynamo=True, verbose=False, external_data=False,
    )  # fmt: skip
    diff, limit, same_top1 = onnx_parity(module, output, images)
    if diff > limit or not same_top1:
        raise ZooError(
            f"ONNX export differs from PyTorch by {diff:.2e} (limit {limit:.2e}), "
            f"top-1 {'agrees' if same_top1 else 'differs'}; please report it"
        )
    card["max_abs_diff"] = diff
    proto = onnx.load(str(output))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "zoo", json.dumps(card)
    onnx.save(proto, str(output))
    return diff


def onnx_parity(module: nn.Module, path: Path, images: torch.Tensor) -> tuple[float, float, bool]:
    """onnxruntime vs PyTorch on `images` (one batch, then one image).

    Returns:
        The largest |logit difference|, the limit it is held to, and whether every top-1 class agrees.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module(images).numpy()
    got = session.run(None, {"image": images.numpy()})[0]
    single = session.run(None, {"image": images[:1].numpy()})[0]  # the batch axis really is dynamic
    diff = float(max(np.abs(got - expected).max(), np.abs(single - expected[:1]).max()))
    limit = ONNX_ATOL + ONNX_RTOL * float(np.abs(expected).max())
    same_top1 = bool(
        (got.argmax(-1) == expected.argmax(-1)).all() and single.argmax(-1)[0] == expected[0].argmax()
    )
    return diff, limit, same_top1
