"""Rebuild the bundled sample: `python -m datamodules.samples.make_sample [IDX_DIR]`.

Takes the first 100 train and the next 20 val images of each class from Fashion-MNIST's
training set (a deterministic cut) and writes them as PNGs in the image-folder layout.
"""

import shutil
import sys
from pathlib import Path

from PIL import Image

from datamodules.fashion_mnist import CLASS_NAMES, DEBIAN_DIR, load_split

PER_CLASS = {"train": 100, "val": 20}


def folder_name(class_name: str) -> str:
    return class_name.lower().replace("/", "_").replace(" ", "_")


def main(idx_dir: str = DEBIAN_DIR) -> None:
    out = Path(__file__).parent / "fashion_mnist_small"
    images, labels = load_split(Path(idx_dir), "train")
    for split in PER_CLASS:
        shutil.rmtree(out / split, ignore_errors=True)
    for c, name in enumerate(CLASS_NAMES):
        idx = (labels == c).nonzero()[0]
        start = 0
        for split, n in PER_CLASS.items():
            folder = out / split / folder_name(name)
            folder.mkdir(parents=True, exist_ok=True)
            for i in idx[start : start + n]:
                Image.fromarray(images[i], mode="L").save(folder / f"{i:05d}.png", optimize=True)
            start += n


if __name__ == "__main__":
    main(*sys.argv[1:])
