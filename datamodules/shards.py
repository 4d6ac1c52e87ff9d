"""Data larger than a disk: WebDataset tar shards streamed from local paths or object storage.

A shard is a tar of samples (`KEY.png`/`KEY.jpg`... the image file's own bytes, `KEY.cls` its class index),
read front to back, so a data set of any size streams through a machine that holds one shard at a time.
Beside the shards a small `dataset.json` (written by `write_shards`) gives the class names, the image size
and channels, and each shard's sample count, which fixes the epoch length that every process must agree on.

    python -m datamodules.shards write FOLDER OUT_DIR --shard-size 1000
    zoo fit --config configs/cnn.yaml --data.class_path datamodules.ShardDataModule \
        --data.init_args.urls s3://bucket/pets/
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import warnings
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import fsspec
import numpy as np
import torch
from torch.utils.data import default_collate

from datamodules.base import ImageClassificationDataModule, Sampler, seed_transform, warn_bad_files
from datamodules.images import IMG_EXTENSIONS, decode_side, load_image
from datamodules.transforms import Augment, Interpolation, to_tensor
from zoo.errors import ZooError

INDEX = "dataset.json"
_IMAGE_KEYS = tuple(ext.lstrip(".") for ext in IMG_EXTENSIONS)


def _wds():
    try:
        import webdataset
    except ImportError as err:
        raise ZooError(
            "shards need WebDataset: pip install 'zoo[stream]' (or pip install webdataset)"
        ) from err
    return webdataset


# --- writing -------------------------------------------------------------------------------------
def write_shards(
    folder: str | Path, out_dir: str | Path, shard_size: int = 1000, val_fraction: float = 0.2, seed: int = 42
) -> Path:
    """Write an image folder as tar shards plus `dataset.json`, with the train/val split `zoo fit` would make.

    Every image is decoded once on the way, so the shards hold only readable images (broken files are
    skipped with a warning, as training on the folder would). Training samples are written in a seeded
    random order, so a shard holds every class and the loader's small shuffle buffer is enough.

    Args:
        folder: an image folder in either layout zoo reads (`<class>/*` or `train|val[|test]/<class>/*`).
        out_dir: where `train-000000.tar`, ..., `val-000000.tar`, ... and `dataset.json` go (created).
        shard_size: samples per shard; aim for 100 MB-1 GB shards, and at least as many training
            shards as processes x loader workers.
        val_fraction: share of each class held out when the folder has no val/ (as `--data.val_fraction`).
        seed: the split's seed (as `--data.split_seed`) and the training order's.

    Returns:
        the index file written.
    """
    from datamodules.folder import ImageFolderDataModule

    wds = _wds()
    if shard_size < 1:
        raise ZooError(f"--shard-size must be at least 1, got {shard_size}")
    # The folder module's own scan and split: shards hold the split training on the folder would use.
    source = ImageFolderDataModule(str(folder), val_fraction=val_fraction, split_seed=seed, num_workers=0)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    splits, bad = {}, []
    for name, split in source._find_splits().items():
        order = np.random.default_rng(seed).permutation(len(split.labels)) if name == "train" else None
        pairs = [
            (split.items[i], int(split.labels[i]))
            for i in (order if order is not None else range(len(split.labels)))
        ]
        good = []
        for path, label in pairs:
            try:
                load_image(path, source.channels)
                good.append((path, label))
            except Exception as err:  # any decoder error means "this file is broken"
                bad.append(f"{path}: {type(err).__name__}: {err}")
        counts = {}
        # TarWriter per shard rather than wds.ShardWriter: the index needs each shard's count.
        for number, start in enumerate(range(0, len(good), shard_size)):
            shard = f"{name}-{number:06d}.tar"
            chunk = good[start : start + shard_size]
            with wds.TarWriter(str(out / shard), encoder=False) as sink:
                for i, (path, label) in enumerate(chunk, start):
                    ext = path.suffix.lower().lstrip(".")
                    sink.write({"__key__": f"{i:09d}", ext: path.read_bytes(), "cls": str(label).encode()})
            counts[shard] = len(chunk)
        splits[name] = counts
    if bad:
        warn_bad_files(bad)
    index = {
        "class_names": source.class_names,
        "image_size": source.image_size,
        "channels": source.channels,
        "splits": splits,
    }
    (out / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return out / INDEX


# --- reading -------------------------------------------------------------------------------------
def _open(urls: Iterator[dict]) -> Iterator[dict]:
    """Open each shard with fsspec: local paths, file://, s3:// (s3fs), gs:// (gcsfs), https://, az://...

    Not WebDataset's own opener (gopen): it has no s3://, and reads gs:// and https:// by running gsutil
    and curl. fsspec comes with Lightning and uses each cloud's usual credentials. `pipe:` URLs still go
    to gopen, for users who stream through a command of their own.
    """
    for sample in urls:
        url = sample["url"]
        if url.startswith("pipe:"):
            sample["stream"] = _wds().gopen(url)  # webdataset.gopen: the function
        else:
            sample["stream"] = fsspec.open(url, "rb").open()
        yield sample


def split_by_rank(shards: list[str], rank: int, world_size: int) -> list[str]:
    """The shards process `rank` of `world_size` reads: every world_size-th from its rank, as
    `webdataset.split_by_node` deals them."""
    return list(islice(shards, rank, None, world_size))


def _by_rank(rank: int, world_size: int):
    # Not wds.split_by_node: it reads the rank from RANK/WORLD_SIZE or the process group, which a loader
    # worker started by spawn (macOS, Windows, CUDA setups) lacks: every process would read every shard.
    def stage(src):
        yield from islice(src, rank, None, world_size)

    return stage


class _Decode:
    """A sample's image bytes to a transformed (C, H, W) uint8 tensor, with zoo's decoder, and its label."""

    def __init__(self, transform, channels: int, min_side: int) -> None:
        self.transform = transform
        self.channels = channels
        self.min_side = min_side
        self.seeded_with: int | None = None

    def __call__(self, sample: dict) -> tuple[torch.Tensor, int]:
        self.seeded_with = seed_transform(self.transform, self.seeded_with)  # repeatable, per worker
        key = next((k for k in _IMAGE_KEYS if k in sample), None)
        if key is None or "cls" not in sample:
            raise ZooError(
                f"shard sample {sample.get('__key__')} in {sample.get('__url__')} needs an image "
                f"({', '.join(_IMAGE_KEYS)}) and a .cls label; it has {sorted(k for k in sample if k[0] != '_')}"
            )
        image = load_image(io.BytesIO(sample[key]), self.channels, self.min_side)
        return to_tensor(self.transform, image), int(sample["cls"])


def _read_index(url: str) -> dict:
    try:
        with fsspec.open(url, "r") as f:
            return json.load(f)
    except FileNotFoundError as err:
        raise ZooError(
            f"no shard index at {url}; write shards with `python -m datamodules.shards write FOLDER OUT_DIR`, "
            "or pass --data.index URL of a dataset.json"
        ) from err


def _beside(url: str, name: str) -> str:
    """The URL of file `name` in the folder of `url` (a path or any scheme://...)."""
    return url.rsplit("/", 1)[0] + "/" + name if "/" in url else name


def _expand(urls: str | list[str]) -> list[str]:
    if isinstance(urls, str):
        return list(_wds().shardlists.expand_urls(urls))  # brace notation: train-{000000..000099}.tar
    return list(urls)


class ShardDataModule(ImageClassificationDataModule):
    """Images streamed from tar shards (WebDataset format), local or in object storage.

    A subclass of ImageClassificationDataModule for its data config (linked into the model and every
    checkpoint), its argument checks and its transforms; it holds no splits in RAM: each epoch streams
    the shards again. Shards are dealt to processes (DDP ranks) and then to their loader workers, each
    reading every n-th shard, so no two readers share a shard; an epoch is as many batches as the
    process with the fewest samples has, so every process takes the same number of steps.

    Args:
        urls: the training shards: a list, or one string in brace notation
            (`s3://bucket/pets/train-{000000..000099}.tar`), or a folder URL ending in `/`: every
            training shard its dataset.json lists. Local paths, file://, s3://, gs://, https://,
            pipe:COMMAND.
        val_urls: the validation shards, as `urls`; None = the index's val shards.
        test_urls: the test shards, as `urls`; None = the index's test shards, if any.
        index: the dataset.json (class names, image size, channels, samples per shard);
            None = dataset.json beside the first training shard.
        class_names: the class names, in label order; None = from the index.
        shuffle_buffer: training samples shuffled in a buffer of this many (shards are also shuffled).
        image_size: None = from the index. channels: None = from the index. The remaining arguments
            are ImageClassificationDataModule's; cache_gb is unused (nothing is cached) and sampler
            takes only shuffle (a balanced sampler needs every label up front).
    """

    def __init__(
        self,
        urls: str | list[str],
        val_urls: str | list[str] | None = None,
        test_urls: str | list[str] | None = None,
        index: str | None = None,
        class_names: list[str] | None = None,
        shuffle_buffer: int = 1000,
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
        super().__init__(
            image_size,
            channels,
            mean,
            std,
            interpolation,
            batch_size,
            num_workers,
            augment,
            hflip,
            0,
            sampler,
        )
        if sampler != "shuffle":
            raise ZooError("--data.sampler balanced needs every label up front; shards take only shuffle")
        folder = isinstance(urls, str) and urls.endswith("/")
        first = None if folder else _expand(urls)[0]
        # Read now, not in setup: the CLI links class names and image size into the model when this module
        # is made. A few KB, once; the shards themselves are read only when an epoch starts.
        self.index_url = index or (urls + INDEX if folder else _beside(first, INDEX))
        self.index = _read_index(self.index_url)
        listed = {
            n: [_beside(self.index_url, s) for s in shards]
            for n, shards in self.index.get("splits", {}).items()
        }
        self.urls = {
            "train": listed.get("train", []) if folder else _expand(urls),
            "val": listed.get("val", []) if val_urls is None else _expand(val_urls),
            "test": listed.get("test", []) if test_urls is None else _expand(test_urls),
        }
        self.samples = {
            s.rsplit("/", 1)[-1]: n
            for shards in self.index.get("splits", {}).values()
            for s, n in shards.items()
        }
        for split in ("train", "val"):
            if not self.urls[split]:
                raise ZooError(f"no {split} shards: pass --data.{'urls' if split == 'train' else 'val_urls'}")
            unknown = [u for u in self.urls[split] if u.rsplit("/", 1)[-1] not in self.samples]
            if unknown:
                raise ZooError(
                    f"{unknown[0]} is not in {self.index_url}: the index gives each shard's sample count, "
                    "which sets the epoch length; list it there"
                )
        self.shuffle_buffer = shuffle_buffer
        self._class_names = class_names or self.index.get("class_names")
        if not self._class_names:
            raise ZooError(f"no class names: pass --data.class_names or add class_names to {self.index_url}")

        def natural() -> tuple[int, int]:
            if "image_size" not in self.index or "channels" not in self.index:
                raise ZooError(
                    f"{self.index_url} gives no image_size/channels: pass --data.image_size and --data.channels"
                )
            return self.index["image_size"], self.index["channels"]

        self._resolve_image_config(natural)

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    def setup(self, stage: str) -> None:
        """Nothing to load: the shards stream when a loader is iterated."""

    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def shard_loader(self, split: str, train: bool, rank: int = 0, world_size: int = 1):
        """The loader of process `rank` of `world_size`: its shards, dealt on to its workers, in batches.

        Returns:
            a webdataset WebLoader (a DataLoader with a length) of (uint8 (B, C, H, W), int64 (B,)) batches.
        """
        wds = _wds()
        shards = self.urls[split]
        if not shards:
            raise ZooError(f"no {split} shards: pass --data.{split}_urls, or list them in {self.index_url}")
        per_rank = [split_by_rank(shards, r, world_size) for r in range(world_size)]
        if not all(per_rank):
            raise ZooError(
                f"{len(shards)} {split} shard(s) for {world_size} processes: write at least one each"
            )
        # More workers than shards would leave some idle (WebDataset's split_by_worker gives them none).
        workers = min(self.num_workers, min(len(s) for s in per_rank))
        batches = [
            sum(
                math.ceil(self._count(ws) / self.batch_size)
                for ws in (split_by_rank(s, w, max(workers, 1)) for w in range(max(workers, 1)))
            )
            for s in per_rank
        ]
        # Training: every process takes as many steps as the one with the fewest batches (DDP's gradient
        # all-reduce waits for all); validation and test may differ, each sample is read once.
        length = min(batches) if train else batches[rank]
        if train and world_size > 1 and rank == 0 and max(batches) > length:
            warnings.warn(
                f"processes hold {min(batches)}-{max(batches)} training batches an epoch; each stops at {length}, "
                "skipping the rest this epoch; write shards in a multiple of processes x workers of equal size",
                stacklevel=2,
            )
        seed = torch.initial_seed() % 2**31  # seed_everything's: the same run shuffles the same way
        transform = self.transform(train)
        stages = [wds.SimpleShardList(shards), _by_rank(rank, world_size), wds.split_by_worker]
        if train:  # detshuffle: seed + epoch, so each epoch reads the shards in another, repeatable order
            stages.append(wds.detshuffle(len(shards), seed=seed))
        stages += [
            _open,
            wds.pipelinefilter(wds.tariterators.tar_file_expander)(),
            wds.pipelinefilter(wds.tariterators.group_by_keys)(),
        ]
        if train:
            stages.append(
                wds.detshuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer), seed=seed)
            )
        stages += [
            wds.map(_Decode(transform, self.channels, decode_side(self.image_size))),
            # Batched in each worker (not by the DataLoader), so the length above is exact: a worker's
            # last batch may be short, and no worker waits for another's samples.
            wds.batched(self.batch_size, collation_fn=default_collate, partial=True),
        ]
        loader = wds.WebLoader(
            wds.DataPipeline(*stages),
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,  # detshuffle's epoch counter lives in the worker
            pin_memory=torch.cuda.is_available(),
        )
        # with_epoch stops each process at `length` batches; with_length tells Lightning (progress, schedules).
        return loader.with_epoch(length).with_length(length, silent=True)

    def _count(self, shards: list[str]) -> int:
        return sum(self.samples[s.rsplit("/", 1)[-1]] for s in shards)

    def eval_loader(self, split: str):
        return self.shard_loader(split, train=False)  # every process reads it all

    def train_dataloader(self):
        return self.shard_loader("train", True, *self._rank())

    def val_dataloader(self):
        return self.shard_loader("val", False, *self._rank())

    def test_dataloader(self):
        return self.shard_loader("test", False, *self._rank())

    def predict_dataloader(self):
        return self.shard_loader("test" if self.urls["test"] else "val", False, *self._rank())


def main(argv: list[str] | None = None) -> int:
    """`python -m datamodules.shards write FOLDER OUT_DIR`: an image folder as shards and dataset.json."""
    parser = argparse.ArgumentParser(prog="python -m datamodules.shards", description=main.__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    write = verbs.add_parser("write", help="write an image folder as tar shards plus dataset.json")
    write.add_argument("folder")
    write.add_argument("out_dir")
    write.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    write.add_argument("--val-fraction", type=float, default=0.2, help="held out when FOLDER has no val/")
    write.add_argument("--seed", type=int, default=42, help="the split's seed, as --data.split_seed")
    args = parser.parse_args(argv)
    try:
        index = write_shards(args.folder, args.out_dir, args.shard_size, args.val_fraction, args.seed)
    except ZooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    splits = json.loads(index.read_text())["splits"]
    said = ", ".join(f"{sum(c.values())} {name} in {len(c)} shard(s)" for name, c in splits.items())
    print(f"wrote {said}; index {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
