"""Where the model looked: Grad-CAM and friends (pytorch-grad-cam), or input-gradient saliency."""

from __future__ import annotations

import contextlib
import io
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


def target_layer(model: ImageClassifier) -> nn.Module | None:
    """The conv layer to explain, chosen for every net zoo builds; None when there is none (MLP, ViT)."""
    net = model.net
    if hasattr(net, "cam_layer"):  # zoo's CNN
        return net.cam_layer
    info = getattr(net, "feature_info", None)  # timm nets list their stages
    if info:
        last = info[-1] if isinstance(info, list) else info.info[-1]
        layer = net.get_submodule(last["module"])
        with torch.no_grad():  # only maps shaped (B, C, H, W) make a CAM without a reshape
            shapes = []
            hook = layer.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
            size = model.hparams.image_size
            net.eval()(torch.zeros(1, model.hparams.channels, size, size, device=model.mean.device))
            hook.remove()
        return layer if len(shapes[0]) == 4 else None
    return None


def explain(
    model: ImageClassifier, image: torch.Tensor, method: str = "GradCAM", class_index: int | None = None
) -> Explanation:
    """Explain one prediction.

    Args:
        model: a zoo model (computed in float32 whatever precision it was trained in).
        image: (C, H, W) in [0, 1], preprocessed as for prediction.
        method: one of METHODS; ignored for nets without conv layers, which get saliency.
        class_index: the class to explain; None = the predicted class.
    """
    model = model.float().eval()
    image = image.float()
    x = image[None].to(model.mean.device)  # (1, C, H, W)
    layer = target_layer(model)
    with torch.autocast(x.device.type, enabled=False), torch.enable_grad():
        if layer is None:
            with torch.no_grad():
                index = int(model(x).argmax(dim=-1)) if class_index is None else int(class_index)
            heatmap = _saliency(model, x, index)
            used, note = (
                SALIENCY,
                "This model has no conv layers: showing input-gradient saliency instead of a CAM.",
            )
        else:
            if method not in METHODS:
                raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
            heatmap, index = _cam(model, layer, METHODS[method], x, class_index)
            used, note = method, f"{method} on {_layer_name(model, layer)}."
    rgb = image.permute(1, 2, 0).cpu().numpy().astype(np.float32)  # (H, W, C)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    overlay = show_cam_on_image(rgb, heatmap.astype(np.float32), use_rgb=True)
    return Explanation(heatmap, overlay, index, used, note)


def _cam(
    model: ImageClassifier, layer: nn.Module, method, x: torch.Tensor, class_index: int | None
) -> tuple[np.ndarray, int]:
    """One forward and a backward through the layers after `layer` only.

    The CAM needs d(score)/d(activation of `layer`), nothing below it: the graph is cut there
    (the layer's output becomes a fresh leaf) and no parameter asks for a gradient, so backward
    costs the head, not the whole net. The predicted class comes from the CAM's own forward.
    """
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    cut = layer.register_forward_hook(lambda module, inputs, out: out.detach().requires_grad_(True) * 1.0)
    try:
        with method(model=model, target_layers=[layer]) as cam:
            targets = None if class_index is None else [ClassifierOutputTarget(int(class_index))]
            with contextlib.redirect_stderr(io.StringIO()):  # ScoreCAM draws tqdm bars
                heatmap = cam(input_tensor=x, targets=targets)[0]
            index = int(cam.outputs.argmax(dim=-1)[0]) if class_index is None else int(class_index)
    finally:
        cut.remove()
        for p in frozen:
            p.requires_grad_(True)
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
