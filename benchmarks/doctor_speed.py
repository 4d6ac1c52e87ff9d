"""Speed of `zoo doctor`'s file pass: headers + hashes (what `brief` runs before `zoo fit`) and the full
pass that decodes every image too (what `zoo doctor` runs).

    python -m benchmarks.doctor_speed [--images 5000] [--photos 300] [--rounds 3]

Writes N small real images (half PNG, half JPEG, 32-96 px a side, smooth random pictures, 10 class
folders) to a temporary folder and times each pass `--rounds` times, end to end (`diagnose`); medians of
images/s are reported. The file pass alone is timed on the thread pool and on one thread, on those small
files and on `--photos` 640x480 ones, where decoding (which releases the GIL) outweighs Python's share.
The files were just written, so they sit in the page cache: this measures the CPU side, not the disk
(where the threads' waits overlap too).
Writes benchmarks/results/doctor_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.machine import describe
from zoo.doctor import diagnose
from zoo.doctor_scan import list_folder, read_images

RESULTS = Path(__file__).parent / "results"


def write_images(root: Path, n: int, size: tuple[int, int] | None = None, seed: int = 0) -> None:
    """n pictures (smooth random colour fields) in 10 class folders, alternately PNG and JPEG, each of
    `size` (W, H), or None: squares of 32-96 px a side."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        side = int(rng.integers(32, 97))
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        picture = coarse.resize(size or (side, side), Image.Resampling.BICUBIC)
        picture.save(folder / f"{i:05d}.{'png' if i % 2 else 'jpg'}", quality=90)


def images_per_s(run, n: int, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(n / (time.perf_counter() - start))
    return times


def main(n: int, photos: int, rounds: int) -> dict:
    load = os.getloadavg()[0]  # other work on the machine slows every figure: recorded beside them
    measured = {}
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "small", Path(tmp) / "photos"
        write_images(small, n)
        write_images(large, photos, size=(640, 480))
        runs = {
            # what `brief` runs before `zoo fit`, and what `zoo doctor` runs, end to end
            "header_hash": (small, lambda: diagnose(small, decode=False)),
            "full_decode": (small, lambda: diagnose(small)),
        }
        for name, root in (("small", small), ("photos", large)):
            images = list_folder(root).images
            for decode, what in ((False, "header_hash"), (True, "full_decode")):
                runs[f"read_{what}_{name}_threads"] = (root, partial(read_images, images, decode))
                runs[f"read_{what}_{name}_one_thread"] = (root, partial(read_images, images, decode, 1))
        for name, (root, run) in runs.items():
            measured[name] = images_per_s(run, photos if root == large else n, rounds)
    return {
        "machine": describe(),
        "load_average_1min_before": round(load, 2),
        "images": n,
        "photos": photos,
        "rounds": rounds,
        "images_per_s": measured,
        "median_images_per_s": {name: statistics.median(v) for name, v in measured.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    a = parser.parse_args()
    out = main(a.images, a.photos, a.rounds)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "doctor_speed.json").write_text(json.dumps(out, indent=1) + "\n")
    med = out["median_images_per_s"]
    print(
        f"zoo doctor on {a.images} small PNG/JPEG files ({out['machine']['cores']} cores, load "
        f"{out['load_average_1min_before']}): headers + hashes {med['header_hash']:.0f} images/s, with a full "
        f"decode {med['full_decode']:.0f} images/s, end to end (medians of {a.rounds}). The file pass alone, "
        "threads vs one thread, headers + hashes | full decode:"
    )
    for name in ("small", "photos"):
        print(
            f"  {name:<6} {med[f'read_header_hash_{name}_threads']:.0f} vs "
            f"{med[f'read_header_hash_{name}_one_thread']:.0f} | {med[f'read_full_decode_{name}_threads']:.0f} "
            f"vs {med[f'read_full_decode_{name}_one_thread']:.0f} images/s"
        )
