"""Building a timm net, and loading a local weights file into it whatever its key layout."""

from __future__ import annotations

import difflib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import adapt_input_conv
from torch import nn

from zoo.console import console
from zoo.errors import ZooError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def create_timm_net(name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    """timm.create_model with random weights, and a one-line error for an unknown name."""
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise ZooError(f"unknown timm backbone {name!r}{hint}; `zoo models` lists them")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def check_weights_path(path: str | Path) -> Path:
    """The weights file as a Path, or a one-line error when it is missing or of an unknown type."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ZooError(f"weights file {path} not found; pass --model.weights PATH to an existing file")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ZooError(
            f"--model.weights {path}: unsupported file type; use one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    return path


def pickled_object_message(path: Path, option: str) -> str:
    """torch.load(weights_only=True) refused a file: it pickles Python objects (a whole model), not tensors."""
    return (
        f"{option} {path} holds pickled Python objects (e.g. a whole model saved with torch.save(model)), "
        "which zoo does not load because unpickling can run any code; save the weights instead: "
        "torch.save(model.state_dict(), 'weights.pth')"
    )


def first_line(err: BaseException) -> str:
    """`Type: first line of the message`, for errors whose messages run to many lines."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def load_tensors_only(path: Path, option: str, what: str, **kwargs: Any) -> Any:
    """torch.load(weights_only=True): a file whose pickle would run code is refused without running it.

    Args:
        option: how the user named the file (`--ckpt_path`, `--model.weights`, `checkpoint`), for the error.
        what: what it should be, for a file torch cannot read ("checkpoint", "weights from").
        kwargs: more torch.load arguments (map_location, default "cpu"; mmap).

    Raises:
        ZooError: one line, for a pickle of Python objects or a file torch cannot read.
    """
    kwargs.setdefault("map_location", "cpu")
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as err:
        raise ZooError(pickled_object_message(path, option)) from err
    except Exception as err:
        raise ZooError(f"cannot read {what} {path}: {first_line(err)}") from err


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """Tensors from a .safetensors, .pth/.pt/.bin or zoo/Lightning .ckpt file (weights only, no code).

    Returns:
        The state dict and, for a zoo checkpoint, the class names it was trained on.
    """
    path = check_weights_path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), None
        except Exception as err:
            raise ZooError(f"cannot read weights from {path}: {first_line(err)}") from err
    state = load_tensors_only(path, "--model.weights", "weights from")
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
    layout: str = "matched by name"  # or "matched by order" for another implementation's key names

    def summary(self) -> str:
        def short(keys: list[str]) -> str:
            return (
                ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
                if keys
                else "none"
            )

        return (
            f"loaded {self.loaded} tensors ({self.layout}); missing: {short(self.missing)}; unexpected: {short(self.unexpected)}; "
            f"shape mismatch (re-initialised): {short(self.reshaped)}"
        )


def load_weights(
    net: nn.Module, path: str | Path, class_names: list[str] | None = None, quiet: bool = False
) -> LoadReport:
    """Load a local weights file into a timm net, the way timm adapts its own pretrained weights.

    Keys are matched by name. When names match for less than half of the net's tensors (a file
    saved by another implementation: torchvision, lukemelas' EfficientNet, ...), the tensors are
    matched by order instead, provided both hold the same number and every shape agrees outside
    the head. The first conv is adapted to the net's input channels (timm's adapt_input_conv);
    tensors whose shape differs (a head for another number of classes) are skipped and stay
    freshly initialised. timm's `pretrained_cfg_overlay=dict(file=...)` does the adaptation but
    not our .ckpt format, other key layouts, nor a report of what was skipped, hence this function.

    Args:
        class_names: the classes being trained; when the file is a zoo checkpoint trained on other
            classes, its head is skipped even if the class count matches (a new task).
        quiet: do not print the report (the caller says where the weights came from).
    """
    state, source_classes = read_state_dict(path)
    own = net.state_dict()
    head_keys = _head_keys(net)
    report = LoadReport()
    if sum(k in own for k in state) < len(_weights_only(own)) / 2 and (
        by_order := _by_order(state, own, head_keys)
    ):
        state, report.layout = by_order, "matched by order"
    reset_head = source_classes is not None and class_names is not None and source_classes != class_names
    usable = {}
    for key, tensor in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        tensor = _adapt_input_conv(tensor, own[key])
        if tensor.shape != own[key].shape or (reset_head and key in head_keys):
            report.reshaped.append(key)
            continue
        usable[key] = tensor
    result = net.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    report.missing = [k for k in result.missing_keys if k not in report.reshaped]
    if not quiet:
        console.print(f"[bold]weights[/] {path}: {report.summary()}", highlight=False)
    return report


def _head_keys(net: nn.Module) -> set[str]:
    """State-dict keys of the net's classifier (timm's get_classifier)."""
    if not hasattr(net, "get_classifier"):
        return set()
    head = net.get_classifier()
    prefix = next((name for name, module in net.named_modules() if module is head), None)
    return {f"{prefix}.{n}" for n in head.state_dict()} if prefix else set()


def _weights_only(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """Entries that hold learned values (BatchNorm's step counters are bookkeeping, and optional)."""
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def _adapt_input_conv(tensor: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A first conv for other input channels, summed/repeated as timm does for its own weights."""
    if (
        tensor.ndim == 4
        and target.ndim == 4
        and tensor.shape[1] != target.shape[1]
        and tensor.shape[0] == target.shape[0]
    ):
        return adapt_input_conv(target.shape[1], tensor)
    return tensor


def _by_order(
    state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], head_keys: set[str]
) -> dict[str, torch.Tensor] | None:
    """`state` renamed to `own`'s keys by position, or None unless every tensor outside the head fits."""
    source, target = _weights_only(state), _weights_only(own)
    if len(source) != len(target):
        return None
    for (_, tensor), (key, want) in zip(source, target, strict=True):
        if key not in head_keys and _adapt_input_conv(tensor, want).shape != want.shape:
            return None
    return {key: tensor for (_, tensor), (key, _) in zip(source, target, strict=True)}
