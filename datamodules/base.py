"""What every zoo data module shares: the data config, the RAM cache, the loaders."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from datamodules.images import decode_side, image_nbytes, load_image
from datamodules.transforms import (
    AUGMENTS,
    Augment,
    Interpolation,
    check_pipeline,
    eval_transform,
    to_tensor,
    train_transform,
)
from zoo.errors import ZooError

Sampler = Literal["shuffle", "balanced"]


@dataclass
class Split:
    """One split: either decoded images (uint8 (H, W, C) arrays) or file paths, with labels."""

    items: list  # list[np.ndarray] | list[Path]
    labels: np.ndarray  # (N,) int64


def seed_transform(transform, seeded_with: int | None) -> int:
    """Seed an albumentations pipeline from torch's seed for this process (a loader worker's differs per
    worker), unless it already is; returns the seed in use.

    albumentations 2 draws from its own generator, seeded from OS entropy unless told otherwise, so
    `seed_everything` alone leaves augmentation, and so every run, unrepeatable. A worker's torch seed
    comes from the main process's seeded RNG, so it is repeatable and differs between workers.
    """
    info = torch.utils.data.get_worker_info()
    seed = info.seed if info is not None else torch.initial_seed()
    if seed != seeded_with:
        transform.set_random_seed(seed % 2**32)
    return seed


def warn_bad_files(bad: list[str], where: str = "") -> None:
    """One warning listing (the first 20 of) the image files that could not be decoded."""
    shown = "\n  ".join(bad[:20]) + ("\n  ..." if len(bad) > 20 else "")
    warnings.warn(
        f"skipping {len(bad)} image file(s) that cannot be decoded{where}:\n  {shown}", stacklevel=3
    )


class ImageDataset(Dataset):
    """Images held in RAM or read from disk on access, each run through an albumentations pipeline.

    Files are decoded with their shorter side shrunk to `min_side` (None = full size), as in the RAM cache.
    """

    def __init__(self, split: Split, transform, channels: int, min_side: int | None = None) -> None:
        self.split = split
        self.transform = transform
        self.channels = channels
        self.min_side = min_side
        self.seeded_with: int | None = None

    def __len__(self) -> int:
        return len(self.split.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        self.seeded_with = seed_transform(self.transform, self.seeded_with)
        item = self.split.items[index]
        image = item if isinstance(item, np.ndarray) else load_image(item, self.channels, self.min_side)
        return to_tensor(self.transform, image), int(self.split.labels[index])  # (C, H, W) uint8


def default_num_workers() -> int:
    """Loader workers from the machine: leave one core to the training process, at most 8."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cpus - 1))


def _nbytes_or_zero(path: Path, channels: int, min_side: int) -> int:
    try:
        return image_nbytes(path, channels, min_side)
    except Exception:  # an unreadable header: the decode pass reports the file
        return 0


def _total_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def balanced_sampler(labels: np.ndarray) -> WeightedRandomSampler:
    """Draw len(labels) images with replacement, each with weight 1/count(its class): classes come equally often.

    The generator starts from torch's seed (`seed_everything`'s), so a rerun draws the same images, and
    every DDP rank draws the same order for Lightning's distributed wrapper to split.
    """
    weights = torch.as_tensor(1.0 / np.bincount(labels)[labels], dtype=torch.double)
    generator = torch.Generator().manual_seed(torch.initial_seed())
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)


class ImageClassificationDataModule(L.LightningDataModule):
    """Base class: subclasses say where the images are (`class_names`, `_find_splits`) and, at the end of
    their `__init__`, call `_resolve_image_config` with the image size and channels their data has.

    Images are decoded once, with the shorter side shrunk to twice `image_size` (never enlarged), so
    large photos cost neither the RAM nor the time of full resolution.

    Args:
        image_size: side of the square images the model sees; None = from the data (see the subclass).
        channels: 1 (grayscale) or 3 (RGB); images are converted on load; None = from the data.
        mean: per-channel mean of [0, 1] pixels used by the model to normalise; None = 0.5 each
            (`zoo fit` fills in a pretrained backbone's own statistics instead). Three values with
            channels inferred as 1 are averaged into one, as for grey images into an RGB net.
        std: per-channel std, as `mean`; None = 0.5 each.
        interpolation: how images are resized: bilinear, bicubic, area or nearest; None = bilinear
            (`zoo fit` fills in a pretrained backbone's own).
        batch_size: images per batch.
        num_workers: DataLoader worker processes; None = one fewer than the cores (at most 8).
        augment: training augmentation preset: none, light (pad-crop), standard (RRC + jitter); or the
            path of an albumentations pipeline file (A.save's .yaml/.yml/.json), to which zoo appends
            the resize and centre crop to image_size.
        hflip: random horizontal flips in training; only for classes that a mirror image keeps.
        cache_gb: decoded images are kept in RAM when they fit in this many GiB;
            None = a fifth of the machine's RAM, 0 = never.
        sampler: how training batches are drawn: shuffle (each image once per epoch) or balanced
            (with replacement, each class equally often: weight 1/count(class) per image), for
            imbalanced data.
    """

    def __init__(
        self,
        image_size: int | None = None,
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        interpolation: Interpolation | None = None,
        batch_size: int = 64,
        num_workers: int | None = None,
        augment: Augment | str = "light",
        hflip: bool = False,
        cache_gb: float | None = None,
        sampler: Sampler = "shuffle",
    ) -> None:
        super().__init__()
        if channels is not None and channels not in (1, 3):
            raise ZooError(f"--data.channels must be 1 or 3, got {channels}")
        if num_workers is not None and num_workers < 0:
            raise ZooError(
                f"--data.num_workers must be 0 or more (0 = load in the main process), got {num_workers}"
            )
        if batch_size < 1:
            raise ZooError(f"--data.batch_size must be at least 1, got {batch_size}")
        if image_size is not None and image_size < 8:
            raise ZooError(f"--data.image_size must be at least 8, got {image_size}")
        # None until `_resolve_image_config`: they may come from the data, which the subclass finds.
        self.image_size = image_size
        self.channels = channels
        self.mean = mean
        self.std = std
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.augment = augment
        self.hflip = hflip
        self.interpolation = interpolation or "bilinear"
        self.cache_bytes = _total_ram() // 5 if cache_gb is None else int(cache_gb * 2**30)
        self.sampler = sampler
        self.splits: dict[str, Split] = {}

    # --- what subclasses provide -------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    def _find_splits(self) -> dict[str, Split]:
        """All splits this source has ("train", "val", optionally "test"), not yet decoded."""
        raise NotImplementedError

    # --- the data config, linked into the model so every checkpoint carries it ---------------
    def _resolve_image_config(self, natural: Callable[[], tuple[int, int]]) -> list[str]:
        """Fill image_size and channels left None from `natural()` (image_size, channels), then mean/std.

        Called at the end of every subclass's `__init__`: the CLI links `data_config` into the model
        as soon as the data module exists. `natural` runs only when something is missing.

        Returns:
            the names filled from the data, of "channels" and "image_size".
        """
        filled = [name for name in ("channels", "image_size") if getattr(self, name) is None]
        if filled:
            image_size, channels = natural()
            self.image_size = image_size if self.image_size is None else self.image_size
            self.channels = channels if self.channels is None else self.channels
        for name in ("mean", "std"):
            value = [0.5] * self.channels if getattr(self, name) is None else list(getattr(self, name))
            if "channels" in filled and self.channels == 1 and len(value) == 3:
                value = [round(sum(value) / 3, 4)]  # an RGB net's statistics for grey images: one average
            if len(value) != self.channels:
                why = " (channels from the data; set --data.channels)" if "channels" in filled else ""
                raise ZooError(
                    f"--data.{name} needs {self.channels} values, one per channel{why}; got {value}"
                )
            setattr(self, name, value)
        if self.augment not in AUGMENTS:  # a wrong pipeline file fails now, before a run folder exists
            check_pipeline(self.augment, self.image_size, self.channels, self.interpolation)
        return filled

    @property
    def data_config(self) -> dict:
        return {
            "class_names": self.class_names,
            "image_size": self.image_size,
            "channels": self.channels,
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
        }

    @property
    def run_dir(self) -> Path | None:
        """Where this run writes its files (the trainer's root dir); None outside a trainer, and in every process
        but the first of a multi-process run, which writes for all."""
        trainer = getattr(self, "trainer", None)
        return Path(trainer.default_root_dir) if trainer is not None and trainer.is_global_zero else None

    def setup(self, stage: str) -> None:
        if not self.splits:
            self.splits = self._find_splits()
            self._load_into_ram()

    def _load_into_ram(self) -> None:
        """Decode every file once: bad files are found now, and small data sets stay in RAM."""
        path_splits = {
            k: s for k, s in self.splits.items() if s.items and not isinstance(s.items[0], np.ndarray)
        }
        if not path_splits:
            return
        all_paths = [p for s in path_splits.values() for p in s.items]
        min_side = decode_side(self.image_size)
        keep = sum(_nbytes_or_zero(p, self.channels, min_side) for p in all_paths) <= self.cache_bytes

        def decode(path: Path):
            try:
                image = load_image(path, self.channels, min_side)
                return (image if keep else path), None
            except Exception as err:  # any decoder error means "this file is broken"
                return None, f"{path}: {type(err).__name__}: {err}"

        # Pillow releases the GIL while decoding, so threads give real parallelism here.
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers + 1)) as pool:
            results = list(pool.map(decode, all_paths))
        bad = [msg for _, msg in results if msg]
        if bad:
            self._report_bad_files(bad)
        it = iter(results)
        for name, split in path_splits.items():
            pairs = [(next(it)[0], label) for label in split.labels]
            good = [(item, label) for item, label in pairs if item is not None]
            self.splits[name] = Split(
                [i for i, _ in good], np.asarray([lbl for _, lbl in good], dtype=np.int64)
            )
        for name, split in self.splits.items():
            if name == "train" and len(split.labels) == 0:
                raise ZooError("no decodable training images left after removing broken files")

    def _report_bad_files(self, bad: list[str]) -> None:
        where = ""
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "bad_files.txt").write_text("\n".join(bad) + "\n")
            where = f" (list saved to {self.run_dir / 'bad_files.txt'})"
        if getattr(self, "strict", False):
            raise ZooError(
                f"{len(bad)} image file(s) cannot be decoded, e.g. {bad[0]}{where}; "
                "fix or remove them, or drop --data.strict to skip them"
            )
        warn_bad_files(bad, where)

    # --- loaders -----------------------------------------------------------------------------
    def _loader(self, split: str, train: bool, persistent: bool = True, shard: bool = True) -> DataLoader:
        if split not in self.splits:
            raise ZooError(f"this data set has no {split!r} split; {self._missing_split_hint(split)}")
        dataset = ImageDataset(
            self.splits[split], self.transform(train), self.channels, decode_side(self.image_size)
        )
        sampler = (
            balanced_sampler(self.splits[split].labels) if train and self.sampler == "balanced" else None
        )
        if shard and not train and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Lightning's DistributedSampler would pad the split with repeated images so every rank gets as many:
            # val/acc over several processes would then differ from one process's. Each image once, instead.
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=persistent and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def transform(self, train: bool):
        """The albumentations pipeline of training (the augmentation preset) or of evaluation."""
        if train:
            return train_transform(
                self.image_size, self.channels, self.augment, self.hflip, self.interpolation
            )
        return eval_transform(self.image_size, self.interpolation)

    def _missing_split_hint(self, split: str) -> str:
        return "use a data set that has one"

    def eval_loader(self, split: str) -> DataLoader:
        """One pass over a split in order with the eval pipeline (no augmentation): for feature caching."""
        return self._loader(split, train=False, persistent=False, shard=False)  # every process sees it all

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test" if "test" in self.splits else "val", train=False)
