"""`zoo doctor`'s file pass: which files `zoo fit` would read from a folder, and each one's header, hash
and (optionally) a decode with its perceptual hash and thumbnail, on a thread pool."""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from datamodules.images import list_images, to_array
from datamodules.layout import check_not_nested_splits, class_dirs, detect_layout
from zoo.errors import ZooError

# Images are shrunk to this shorter side before the perceptual hash (JPEGs decode at 1/8 scale on the way).
HASH_SIDE = 32
CHUNK = 32  # files a thread reads per task


@dataclass
class ImageRecord:
    """One image file as `zoo fit` would see it, and what the pass read from it."""

    path: Path
    rel: str  # path under the root, posix: what reports show
    split: str  # "train", "val" or "test" (a folder without split folders is all "train": zoo splits it)
    label: str  # the class folder's name
    nbytes: int = 0
    digest: str | None = None  # blake2b of the file's bytes
    format: str | None = None  # PIL's format from the header: PNG, JPEG, ...
    mode: str | None = None  # PIL's mode: L, RGB, RGBA, P, I;16, ...
    width: int = 0
    height: int = 0
    error: str | None = None  # why the file cannot be read (header) or decoded
    dhash: int | None = None  # 64-bit difference hash of the decoded image
    thumb: np.ndarray | None = None  # (16, 16) uint8 grayscale thumbnail of it


@dataclass
class FolderScan:
    """An image folder: its splits, the class folders of each, its images and the files zoo ignores."""

    root: Path
    layout: dict[str, Path]  # split -> folder, as ImageFolderDataModule detects it
    classes: dict[str, list[str]]  # split -> class folder names, sorted
    images: list[ImageRecord]
    ignored: list[tuple[str, str]]  # (path under the root, why zoo does not read it)

    @property
    def zoo_splits(self) -> bool:
        """True when `zoo fit` makes the train/val split itself (no val/ folder)."""
        return "val" not in self.layout


def check_root(root: str | Path) -> Path:
    """`root` as a Path, if it is a folder; else a ZooError that says what is wrong."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ZooError(
            f"image folder {root} does not exist; pass the folder that holds the class sub-folders"
        )
    if not root.is_dir():
        raise ZooError(f"{root} is a file; pass the folder that holds the class sub-folders")
    return root


def list_folder(root: str | Path) -> FolderScan:
    """The images of every split and class folder of `root`, and every other file with the reason it is skipped.

    Raises:
        ZooError: `root` is missing, a file, or has no class folders (the messages `zoo fit` gives).
    """
    root = check_root(root)
    layout = detect_layout(root)
    ignored = [
        (f"{_rel(p, root)}/", "not a split folder: zoo reads train/, val/ and test/")
        for p in sorted(root.iterdir())
        if layout["train"] != root and p.is_dir() and not p.name.startswith(".") and p not in layout.values()
    ]
    classes, images = {}, []
    for split, folder in layout.items():
        dirs = class_dirs(folder)
        if not dirs:
            raise ZooError(
                f"no class sub-folders in {folder}; expected {folder}/<class_name>/<images> "
                f"(or {root}/train/<class_name>/... and {root}/val/<class_name>/...)"
            )
        classes[split] = [d.name for d in dirs]
        if split == "train":
            check_not_nested_splits(folder, classes[split])
        ignored += [
            (_rel(p, root), "outside the class folders")
            for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".")
        ]
        for d in dirs:
            found = list_images(d)  # the files `zoo fit` reads, by its own rule
            images += [ImageRecord(p, _rel(p, root), split, d.name) for p in found]
            listed = set(found)
            ignored += [
                (_rel(p, root), _why_ignored(p, d))
                for p in sorted(d.rglob("*"))
                if p.is_file() and p not in listed
            ]
    return FolderScan(root, layout, classes, images, ignored)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _why_ignored(path: Path, class_dir: Path) -> str:
    if any(part.startswith(".") for part in path.relative_to(class_dir).parts):
        return "hidden"
    return f"not an image extension zoo reads: {path.suffix.lower() or 'no extension'}"


def read_images(records: list[ImageRecord], decode: bool = True, workers: int | None = None) -> None:
    """Fill in each record's bytes, hash and header; with `decode`, decode it too (errors, perceptual hash).

    One thread per core (benchmarks/doctor_speed.py, 2 cores, files in the page cache): 640x480 photos go
    2x faster than on one thread (hashing and Pillow's decoders release the GIL), more threads than cores
    only contend; small files (<= 96 px) are bound by Python and go ~0.6x as fast as on one thread.
    Threads also overlap the waits on a cold disk.
    """
    workers = workers or os.cpu_count() or 1

    def read_chunk(chunk: list[ImageRecord]) -> None:
        for record in chunk:
            _read(record, decode)

    # Chunks, not one task a file: a task costs ~60 us of locking, more than a small image's header (~50 us).
    chunks = [records[i : i + CHUNK] for i in range(0, len(records), CHUNK)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(read_chunk, chunks))


def _read(record: ImageRecord, decode: bool) -> None:
    try:
        data = record.path.read_bytes()
    except OSError as err:
        record.error = f"cannot read the file: {err.strerror or err}"
        return
    record.nbytes = len(data)
    record.digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        # The bytes are in memory already (for the hash), so Pillow parses them there: one read per file.
        with Image.open(io.BytesIO(data)) as img:
            record.format, record.mode = img.format, img.mode
            record.width, record.height = img.size
            if not decode:
                return
            if Image.MAX_IMAGE_PIXELS and img.width * img.height > Image.MAX_IMAGE_PIXELS:
                # zoo's loader turns Pillow's decompression-bomb warning into an error: so does this.
                record.error = f"{img.width}x{img.height} px is more than Pillow decodes by default"
                return
            img.draft(None, (HASH_SIDE, HASH_SIDE))  # as load_image: JPEGs decode at a fraction of their size
            img.load()
            gray = to_array(img, 1, HASH_SIDE)[:, :, 0]  # load_image's conversions: EXIF, 16-bit, alpha
    except UnidentifiedImageError:  # its own text names the in-memory buffer, not the file
        record.error = "not an image format Pillow recognises: a damaged header, or another kind of file"
        return
    except Exception as err:  # any decoder error means "this file is broken", as in training
        record.error = f"{type(err).__name__}: {err}"
        return
    record.dhash = dhash(gray)
    record.thumb = np.asarray(Image.fromarray(gray).resize((16, 16), Image.Resampling.BOX))  # (16, 16) uint8


def dhash(gray: np.ndarray) -> int:
    """64-bit difference hash (Krawetz): is each pixel of a 9x8 thumbnail brighter than its left neighbour."""
    small = np.asarray(Image.fromarray(gray).resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = small[:, 1:] > small[:, :-1]  # (8, 8)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")
