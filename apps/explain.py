"""Where the model looked: Grad-CAM and friends (pytorch-grad-cam), or input-gradient saliency."""

from __future__ import annotations

import contextlib
import copy
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from zoo.classifier import ImageClassifier

METHODS = {
    "GradCAM": GradCAM,
    "GradCAM++": GradCAMPlusPlus,
    "HiResCAM": HiResCAM,
    "EigenCAM": EigenCAM,
    "ScoreCAM": ScoreCAM,
    "LayerCAM": LayerCAM,
}
SALIENCY = "input-gradient saliency"


@dataclass
class Explanation:
    heatmap: np.ndarray  # (H, W) in [0, 1]
    overlay: np.ndarray  # (H, W, 3) uint8: the heat-map over the input
    class_index: int
    method: str  # what was computed (saliency for nets without conv layers)
    note: str  # one sentence for the UI


def _channels_first(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)


def cam_layer(model: ImageClassifier) -> tuple[nn.Module, Callable | None] | None:
    """The layer to explain and the reshape that makes its output (B, C, H, W); None when there is none.

    zoo's CNN names its layer. A timm net's last stage (`feature_info`) is used when its output is a
    4-D map: (B, C, H, W), or channels last (B, H, W, C) as in Swin, which is permuted for
    pytorch-grad-cam (read as (B, C, H, W) it would average over the wrong axes). Token outputs
    (B, N, C) (ViT) and nets without stages (MLP) get None: saliency instead.
    """
    net = model.net
    if hasattr(net, "cam_layer"):  # zoo's CNN
        return net.cam_layer, None
    info = getattr(net, "feature_info", None)  # timm nets list their stages
    if not info:
        return None
    last = info[-1] if isinstance(info, list) else info.info[-1]
    layer = net.get_submodule(last["module"])
    shape = _output_shape(model, layer)
    if len(shape) != 4:
        return None
    channels = last["num_chs"]
    if getattr(net, "output_fmt", None) == "NHWC" or (shape[1] != channels and shape[-1] == channels):
        return layer, _channels_first
    return layer, None


def target_layer(model: ImageClassifier) -> nn.Module | None:
    """The layer a CAM is computed on (see `cam_layer`); None when the model gets saliency."""
    found = cam_layer(model)
    return found[0] if found else None


def _output_shape(model: ImageClassifier, layer: nn.Module) -> torch.Size:
    """`layer`'s output shape for one blank image; the model is left in the mode it was in."""
    shapes = []
    was_training = model.training
    hook = layer.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    try:
        size, dtype = model.hparams.image_size, model.mean.dtype
        with torch.no_grad():
            model.eval()(
                torch.zeros(1, model.hparams.channels, size, size, device=model.mean.device, dtype=dtype)
            )
    finally:
        hook.remove()
        model.train(was_training)
    return shapes[0]


class Explainer:
    """Explanations computed on a private float32 copy of a model, one at a time.

    The CAM's hooks, the gradients and the float32 weights live on the copy, so the model it was
    built from (shared with concurrent predictions, or training in bf16) is never touched. Build one
    per model and reuse it: the copy costs the model's memory once.

    Args:
        model: a zoo model, in any precision or mode.
    """

    def __init__(self, model: ImageClassifier) -> None:
        self.model = copy.deepcopy(model).float().eval()
        for p in self.model.parameters():  # backward stops at the image or the cut layer: no .grad anywhere
            p.requires_grad_(False)
            p.grad = None
        self.layer = cam_layer(self.model)
        self.has_stages = hasattr(self.model.net, "feature_info")
        self.lock = threading.Lock()  # one CAM's hooks at a time on the copy

    def __call__(
        self, image: torch.Tensor, method: str = "GradCAM", class_index: int | None = None
    ) -> Explanation:
        """Explain one prediction.

        Args:
            image: (C, H, W) in [0, 1], preprocessed as for prediction.
            method: one of METHODS; ignored for nets without a feature map, which get saliency.
            class_index: the class to explain; None = the predicted class.
        """
        if self.layer is not None and method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        classes = self.model.num_classes
        if class_index is not None and not 0 <= class_index < classes:
            # pytorch-grad-cam would catch the IndexError, print it and leave no heat-map
            raise ValueError(f"class_index {class_index} is not a class of this model: use 0..{classes - 1}")
        image = image.float()
        x = image[None].to(self.model.mean.device)  # (1, C, H, W)
        with self.lock, torch.autocast(x.device.type, enabled=False), torch.enable_grad():
            if self.layer is None:
                with torch.no_grad():
                    index = int(self.model(x).argmax(dim=-1)) if class_index is None else int(class_index)
                heatmap = _saliency(self.model, x, index)
                used, note = (
                    SALIENCY,
                    (
                        "This model's last stage gives no (C, H, W) feature map (e.g. ViT tokens): showing "
                        "input-gradient saliency instead of a CAM."
                        if self.has_stages
                        else "This model has no conv layers: showing input-gradient saliency instead of a CAM."
                    ),
                )
            else:
                layer, reshape = self.layer
                heatmap, index = _cam(self.model, layer, reshape, METHODS[method], x, class_index)
                used, note = method, f"{method} on {_layer_name(self.model, layer)}."
        rgb = image.permute(1, 2, 0).cpu().numpy().astype(np.float32)  # (H, W, C)
        if rgb.shape[-1] == 1:
            rgb = np.repeat(rgb, 3, axis=-1)
        overlay = show_cam_on_image(rgb, heatmap.astype(np.float32), use_rgb=True)
        return Explanation(heatmap, overlay, index, used, note)


def explain(
    model: ImageClassifier, image: torch.Tensor, method: str = "GradCAM", class_index: int | None = None
) -> Explanation:
    """Explain one prediction on a copy of `model` (left untouched); see `Explainer`, to reuse the copy.

    Args:
        model: a zoo model (computed in float32 whatever precision it was trained in).
        image: (C, H, W) in [0, 1], preprocessed as for prediction.
        method: one of METHODS; ignored for nets without a feature map, which get saliency.
        class_index: the class to explain; None = the predicted class.
    """
    return Explainer(model)(image, method, class_index)


def _cam(
    model: ImageClassifier,
    layer: nn.Module,
    reshape: Callable | None,
    method,
    x: torch.Tensor,
    class_index: int | None,
) -> tuple[np.ndarray, int]:
    """One forward and a backward through the layers after `layer` only.

    The CAM needs d(score)/d(activation of `layer`), nothing below it: the graph is cut there
    (the layer's output becomes a fresh leaf; no parameter of the copy asks for a gradient), so
    backward costs the head, not the whole net. The predicted class comes from the CAM's own forward.
    """
    cut = layer.register_forward_hook(lambda module, inputs, out: out.detach().requires_grad_(True) * 1.0)
    try:
        with method(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            targets = None if class_index is None else [ClassifierOutputTarget(int(class_index))]
            with contextlib.redirect_stderr(io.StringIO()):  # ScoreCAM draws tqdm bars
                heatmap = cam(input_tensor=x, targets=targets)[0]
            index = int(cam.outputs.argmax(dim=-1)[0]) if class_index is None else int(class_index)
    finally:
        cut.remove()
    return heatmap, index


def _saliency(model: ImageClassifier, x: torch.Tensor, index: int) -> np.ndarray:
    """|d score / d pixel|, max over channels, scaled to [0, 1] (Simonyan et al., 2014)."""
    x = x.clone().requires_grad_(True)
    model(x)[0, index].backward()
    sal = x.grad.abs().amax(dim=1)[0]  # (H, W)
    sal = sal / sal.max() if sal.max() > 0 else sal
    return sal.cpu().numpy()


def _layer_name(model: ImageClassifier, layer: nn.Module) -> str:
    return next((name for name, m in model.named_modules() if m is layer), type(layer).__name__)
