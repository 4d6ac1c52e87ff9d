"""Data pipeline throughput: zoo's data module vs torchvision ImageFolder + transforms.v2.

    python -m benchmarks.data_pipeline [--images 1000] [--rounds 3]

A folder of 224 px RGB JPEGs (Fashion-MNIST images, upscaled) goes through, with the same
operations and worker count (zoo's default for this machine) on both sides:
- train: decode, RandomResizedCrop(224, scale 0.35-1), horizontal flip, colour jitter (p=0.8), normalise;
- eval: decode, resize shorter side to 224, centre crop, normalise.
zoo normalises in the model, on the device; that step is applied to zoo's batches here so both
sides deliver the same float tensors. zoo is measured with its RAM cache (images decoded once at
setup, which is timed separately) and with the cache off (decoding every epoch, like torchvision).
Rounds alternate; medians of images/s over one epoch. Writes benchmarks/results/data_pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from benchmarks.machine import describe
from datamodules import ImageFolderDataModule
from datamodules.base import default_num_workers
from datamodules.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, load_split
from datamodules.samples.make_sample import folder_name

RESULTS = Path(__file__).parent / "results"
SIZE, BATCH = 224, 64
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def write_jpegs(root: Path, n: int) -> None:
    images, labels = load_split(Path(DEBIAN_DIR), "train")
    for i in range(n):
        folder = root / "train" / folder_name(CLASS_NAMES[labels[i]])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR).save(
            folder / f"{i}.jpg", quality=90
        )
    (root / "val").symlink_to(root / "train")  # the split layout; eval reads the same files


def epoch_rate(loader: DataLoader, normalise: bool) -> float:
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    start, count = time.perf_counter(), 0
    for x, _ in loader:
        if normalise:  # what zoo's model does on the device
            x = (x.float().div_(255) - mean) / std
        count += len(x)
    return count / (time.perf_counter() - start)


def torchvision_loaders(root: Path, workers: int) -> dict[str, DataLoader]:
    train = v2.Compose([
        v2.ToImage(), v2.RandomResizedCrop(SIZE, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.3, 0.3, 0.3, 0.05)], p=0.8), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])  # fmt: skip
    evaluate = v2.Compose([v2.ToImage(), v2.Resize(SIZE, antialias=True), v2.CenterCrop(SIZE),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])  # fmt: skip
    kw = dict(batch_size=BATCH, num_workers=workers, persistent_workers=workers > 0)
    return {
        "train": DataLoader(
            datasets.ImageFolder(str(root / "train"), train), shuffle=True, drop_last=True, **kw
        ),
        "eval": DataLoader(datasets.ImageFolder(str(root / "val"), evaluate), **kw),
    }


def zoo_loaders(root: Path, workers: int, cache: bool) -> tuple[dict[str, DataLoader], float]:
    dm = ImageFolderDataModule(str(root), image_size=SIZE, channels=3, mean=MEAN, std=STD, batch_size=BATCH,
                               num_workers=workers, augment="standard", cache_gb=None if cache else 0)  # fmt: skip
    start = time.perf_counter()
    dm.setup("fit")
    return {"train": dm.train_dataloader(), "eval": dm.val_dataloader()}, time.perf_counter() - start


def main(n: int, rounds: int) -> dict:
    workers = default_num_workers()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        write_jpegs(root, n)
        tv = torchvision_loaders(root, workers)
        cached, setup_cached = zoo_loaders(root, workers, cache=True)
        streamed, setup_streamed = zoo_loaders(root, workers, cache=False)
        rates: dict[str, list[float]] = {}
        for _ in range(rounds):
            for stage in ("train", "eval"):
                rates.setdefault(f"torchvision_{stage}", []).append(epoch_rate(tv[stage], normalise=False))
                rates.setdefault(f"zoo_cached_{stage}", []).append(epoch_rate(cached[stage], normalise=True))
                rates.setdefault(f"zoo_streamed_{stage}", []).append(
                    epoch_rate(streamed[stage], normalise=True)
                )
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "machine": describe(), "images": n, "workers": workers, "rounds": rounds, "rates": rates, "medians": med,
        "zoo_setup_s_cached": setup_cached, "zoo_setup_s_streamed": setup_streamed,
        "ratio_train_cached": med["zoo_cached_train"] / med["torchvision_train"],
        "ratio_train_streamed": med["zoo_streamed_train"] / med["torchvision_train"],
        "ratio_eval_cached": med["zoo_cached_eval"] / med["torchvision_eval"],
        "ratio_eval_streamed": med["zoo_streamed_eval"] / med["torchvision_eval"],
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    a = parser.parse_args()
    out = main(a.images, a.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_pipeline.json").write_text(json.dumps(out, indent=1) + "\n")
    m = out["medians"]
    for stage in ("train", "eval"):
        print(f"{stage}: torchvision {m[f'torchvision_{stage}']:.0f} img/s | zoo cached {m[f'zoo_cached_{stage}']:.0f} "
              f"({out[f'ratio_{stage}_cached']:.2f}x) | zoo streamed {m[f'zoo_streamed_{stage}']:.0f} "
              f"({out[f'ratio_{stage}_streamed']:.2f}x)")  # fmt: skip
    print(f"zoo setup (decode + verify {a.images} files): {out['zoo_setup_s_cached']:.1f} s cached, "
          f"{out['zoo_setup_s_streamed']:.1f} s streamed; {out['workers']} loader worker(s)")  # fmt: skip
