"""Getting weights into a timm net: from the hub (timm's own code) or from a local file."""

from __future__ import annotations

import contextlib
import difflib
import socket
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from rich.console import Console
from timm.models import adapt_input_conv
from torch import nn

from zoo.errors import ZooError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick probe, so an offline machine fails in seconds instead of minutes of retries.

    Behind a proxy the probe cannot tell, so it says yes and leaves the hub client to decide.
    """
    import os
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
def _hub_offline(offline: bool):
    """Make huggingface_hub use only its local cache (it reads this flag on every download)."""
    import huggingface_hub.constants as hf_constants

    before = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = before


def create_timm_net(name: str, num_classes: int, in_chans: int, pretrained: bool, **kwargs) -> nn.Module:
    """timm.create_model with one-line errors for an unknown name or missing pretrained weights."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise ZooError(
            f"unknown timm backbone {name!r}{hint}; `python -c 'import timm; print(timm.list_models())'` lists all"
        )
    try:
        with _hub_offline(pretrained and not hub_reachable()):
            return timm.create_model(
                name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
            )
    except OSError as err:  # huggingface_hub's LocalEntryNotFoundError and network errors are OSErrors
        raise ZooError(
            f"cannot get pretrained weights for {name!r}: no network and not in the local cache ({type(err).__name__}); "
            "pass --model.weights PATH (a local .safetensors/.pth/.ckpt) or --model.pretrained false"
        ) from err


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """Tensors from a .safetensors, .pth/.pt/.bin or zoo/Lightning .ckpt file (weights only, no code).

    Returns:
        The state dict and, for a zoo checkpoint, the class names it was trained on.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooError(f"weights file {path} not found; pass --model.weights PATH to an existing file")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ZooError(
            f"--model.weights {path}: unsupported file type; use one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path)), None
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ZooError(f"cannot read weights from {path}: {type(err).__name__}: {err}") from err
    class_names = None
    if isinstance(state, dict) and isinstance(state.get("hyper_parameters"), dict):
        class_names = state["hyper_parameters"].get("class_names")
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ZooError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    # A zoo checkpoint stores the timm net under "net."; strip it to get the bare net's keys.
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, class_names


@dataclass
class LoadReport:
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)  # skipped: shape differs (e.g. a new head)

    def summary(self) -> str:
        def short(keys: list[str]) -> str:
            return (
                ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
                if keys
                else "none"
            )

        return (
            f"loaded {self.loaded} tensors; missing: {short(self.missing)}; unexpected: {short(self.unexpected)}; "
            f"shape mismatch (re-initialised): {short(self.reshaped)}"
        )


def load_weights(net: nn.Module, path: str | Path, class_names: list[str] | None = None) -> LoadReport:
    """Load a local weights file into a timm net, the way timm adapts its own pretrained weights.

    The first conv is adapted to the net's input channels (timm's adapt_input_conv); tensors whose
    shape differs (a head for another number of classes) are skipped and stay freshly initialised.
    timm's `pretrained_cfg_overlay=dict(file=...)` does the adaptation but not our .ckpt format nor a
    report of what was skipped, hence this function.

    Args:
        class_names: the classes being trained; when the file is a zoo checkpoint trained on other
            classes, its head is skipped even if the class count matches (a new task).
    """
    state, source_classes = read_state_dict(path)
    reset_head = source_classes is not None and class_names is not None and source_classes != class_names
    own = net.state_dict()
    report = LoadReport()
    head_keys: set[str] = set()
    if reset_head and hasattr(net, "get_classifier"):
        head = net.get_classifier()
        prefix = next(name for name, module in net.named_modules() if module is head)
        head_keys = {f"{prefix}.{n}" for n in head.state_dict()}
    usable = {}
    for key, tensor in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        target = own[key]
        if (
            tensor.ndim == 4
            and target.ndim == 4
            and tensor.shape[1] != target.shape[1]
            and tensor.shape[0] == target.shape[0]
        ):
            tensor = adapt_input_conv(target.shape[1], tensor)
        if tensor.shape != target.shape or key in head_keys:
            report.reshaped.append(key)
            continue
        usable[key] = tensor
    result = net.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    report.missing = [k for k in result.missing_keys if k not in report.reshaped]
    Console(stderr=True, soft_wrap=True).print(
        f"[bold]weights[/] {path}: {report.summary()}", highlight=False
    )
    return report
