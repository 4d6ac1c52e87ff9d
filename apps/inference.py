"""Predicting with a trained model: a .ckpt, a zoo .safetensors export or an ONNX export."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from datamodules.images import decode_side, list_images, load_image, to_array
from datamodules.transforms import eval_transform
from zoo.atomic import written_beside
from zoo.checkpoint import load_checkpoint, model_card
from zoo.errors import ZooError

MODEL_SUFFIXES = (".ckpt", ".safetensors", ".onnx")


class Predictor:
    """A model and exactly the eval preprocessing it was trained with.

    Args:
        path: a zoo .ckpt, a .safetensors from `zoo export`, or a .onnx from `zoo export`.
        device: torch device for .ckpt/.safetensors models ("cpu", "cuda").
        tta: test-time augmentation: average the scores of each image and its mirror image.
    """

    def __init__(self, path: str | Path, device: str = "cpu", tta: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.tta = tta
        if self.path.suffix not in MODEL_SUFFIXES:
            raise ZooError(f"--checkpoint {self.path}: expected one of {', '.join(MODEL_SUFFIXES)}")
        self.device = torch.device(device)
        self.model = None
        self.session = None
        if self.path.suffix == ".onnx":
            self.card = self._open_onnx()
        else:
            self.model = load_checkpoint(self.path, map_location=self.device)
            self.card = model_card(self.model)
        self.class_names: list[str] = list(self.card["class_names"])
        self.channels: int = self.card["channels"]
        self.transform = eval_transform(self.card["image_size"], self.card.get("interpolation", "bilinear"))

    def _open_onnx(self) -> dict[str, Any]:
        import onnxruntime as ort

        if not self.path.is_file():
            raise ZooError(f"model file {self.path} not found")
        try:
            options = ort.SessionOptions()
            # Idle threads that spin steal the cores from whatever runs next (torch, the app): no spinning.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ZooError(f"cannot load ONNX model {self.path}: {err}") from err
        meta = self.session.get_modelmeta().custom_metadata_map
        if "zoo" not in meta:
            raise ZooError(
                f"{self.path} has no zoo metadata (class names, preprocessing); export it with `zoo export`"
            )
        return json.loads(meta["zoo"])

    # --- preprocessing ----------------------------------------------------------------------
    def prepare(self, image: np.ndarray | Image.Image | str | Path) -> torch.Tensor:
        """One image (array, PIL image or file) -> (C, H, W) float in [0, 1], as in validation."""
        # Decoded as training decodes (shorter side shrunk to decode_side), so a 12 MP photo is
        # resampled the same way, and costs the same memory, as in training.
        side = decode_side(self.card["image_size"])
        if isinstance(image, (str, Path)):
            image = load_image(image, self.channels, side)
        elif isinstance(image, Image.Image):
            image = to_array(image, self.channels, side)
        elif image.ndim == 2 or image.shape[-1] != self.channels:
            image = to_array(Image.fromarray(image.squeeze()), self.channels)
        return self.transform(image=image)["image"].float().div_(255)

    # --- prediction -------------------------------------------------------------------------
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, num_classes) logits, without gradients."""
        if self.session is not None:
            return torch.from_numpy(self.session.run(None, {"image": batch.numpy()})[0])
        with torch.inference_mode():
            return self.model(batch.to(self.device)).float().cpu()

    def predict(self, images: list, top_k: int = 5) -> list[dict[str, Any]]:
        """Top-k labels and probabilities for each image, in one batch."""
        return self.rank(torch.stack([self.prepare(img) for img in images]), top_k)

    def rank(self, batch: torch.Tensor, top_k: int) -> list[dict[str, Any]]:
        """Top-k labels and probabilities for a preprocessed (B, C, H, W) batch."""
        probs = self.logits(batch).softmax(dim=-1)
        if self.tta:  # (B, C, H, W): the mirror image flips W
            probs = (probs + self.logits(batch.flip(-1)).softmax(dim=-1)) / 2
        scores, idx = probs.topk(min(top_k, len(self.class_names)), dim=-1)
        out = []
        for row_scores, row_idx in zip(scores.tolist(), idx.tolist(), strict=True):
            topk = [
                {"label": self.class_names[i], "score": s} for s, i in zip(row_scores, row_idx, strict=True)
            ]
            out.append({"label": topk[0]["label"], "score": topk[0]["score"], "topk": topk})
        return out

    def predict_files(
        self, paths: Iterable[Path], top_k: int = 5, batch_size: int = 32
    ) -> Iterator[dict[str, Any]]:
        """Predict files in batches, in input order; a file that cannot be read yields {"path", "error"}."""
        pending: list[tuple[Path, torch.Tensor | str]] = []
        for path in paths:
            try:
                pending.append((path, self.prepare(path)))
            except Exception as err:  # any decoder error: report it, go on with the rest
                pending.append((path, f"{type(err).__name__}: {err}"))
            if len(pending) == batch_size:
                yield from self._flush(pending, top_k)
                pending = []
        yield from self._flush(pending, top_k)

    def _flush(self, pending: list[tuple[Path, torch.Tensor | str]], top_k: int) -> Iterator[dict[str, Any]]:
        tensors = [item for _, item in pending if isinstance(item, torch.Tensor)]
        ranked = iter(self.rank(torch.stack(tensors), top_k) if tensors else [])
        for path, item in pending:
            yield (
                {"path": str(path), **next(ranked)}
                if isinstance(item, torch.Tensor)
                else {"path": str(path), "error": item}
            )


def expand_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories searched recursively with the training image rules."""
    out: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        # A file named directly is always tried: if it is no image, it gets its own error line.
        out += list_images(path) if path.is_dir() else [path]
    return out


CSV_HEADER = ["path", "label", "score", "topk", "error"]


@dataclass
class EarlierRun:
    """What an earlier `zoo predict --output FILE` left in FILE, read to resume it."""

    file: Path
    kept: list[str] = field(default_factory=list)  # raw lines to keep, newline included (csv: header first)
    done: set[str] = field(default_factory=set)  # absolute paths predicted without error
    labels: set[str] = field(default_factory=set)
    top_k: set[int] = field(default_factory=set)
    retried: int = 0  # error rows dropped, so that their files are tried again
    partial: bool = False  # a half-written last line (the run was killed mid-write), dropped

    @property
    def rewrite(self) -> bool:
        """FILE holds more than `kept`: it is rewritten to `kept` before appending."""
        return self.partial or self.retried > 0

    def is_done(self, path: Path) -> bool:
        return os.path.abspath(path) in self.done

    def check_model(self, class_names: list[str], top_k: int) -> None:
        """Refuse to append rows of another model to FILE, as far as its rows can tell."""
        foreign = sorted(self.labels - set(class_names))
        other_k = sorted(self.top_k - {min(top_k, len(class_names))})
        if foreign or other_k:
            why = (
                f"labels {', '.join(foreign[:3])} are not this model's"
                if foreign
                else f"--top-k {other_k[0]}"
            )
            raise ZooError(
                f"cannot resume {self.file}: its rows come from another model or --top-k ({why}); "
                "pass --overwrite to start over or choose another --output"
            )


def read_predictions(output: Path) -> EarlierRun:
    """Read an earlier .jsonl/.csv --output: its predictions are kept; its error rows and a half-written
    last line are dropped, so that those files are predicted again and each path stays in FILE once.

    Raises:
        ZooError: a complete line that is not a zoo prediction row (zoo leaves such a file alone).
    """
    data = output.read_bytes()
    tail = data.rpartition(b"\n")[2]  # after the last newline: a line cut off mid-write
    earlier = EarlierRun(output, partial=bool(tail))
    try:
        text = data[: len(data) - len(tail)].decode("utf-8")
    except UnicodeDecodeError:
        raise ZooError(
            f"{output} is not a zoo predictions file (not UTF-8); choose another --output"
        ) from None
    # split("\n"), not splitlines(): a path may hold other line separators (json.dumps keeps U+2028).
    lines = [line + "\n" for line in text.split("\n")[:-1]]
    is_csv = output.suffix == ".csv"
    if is_csv and lines:
        if next(csv.reader(lines[:1])) != CSV_HEADER:
            raise ZooError(f"{output} is not a zoo predictions file (header); choose another --output")
        earlier.kept.append(lines.pop(0))
    for number, line in enumerate(lines, start=2 if is_csv else 1):
        row = _parse_row(line, is_csv)
        if row is None:
            raise ZooError(
                f"{output} line {number} is not a zoo prediction; pass --overwrite or choose another --output"
            )
        if "error" in row:
            earlier.retried += 1
            continue
        earlier.kept.append(line)
        earlier.done.add(os.path.abspath(row["path"]))
        earlier.labels.add(row["label"])
        earlier.top_k.add(len(row["topk"]))
    return earlier


def _parse_row(line: str, is_csv: bool) -> dict[str, Any] | None:
    """One line of a predictions file as write_predictions wrote it, or None."""
    try:
        if is_csv:
            fields = next(csv.reader([line]))
            if len(fields) != len(CSV_HEADER):
                return None
            row = dict(zip(CSV_HEADER, fields, strict=True))
            if row["error"]:
                return {"path": row["path"], "error": row["error"]}
            row = {"path": row["path"], "label": row["label"], "topk": json.loads(row["topk"])}
        else:
            row = json.loads(line)
    except (ValueError, csv.Error):
        return None
    ok = isinstance(row, dict) and isinstance(row.get("path"), str)
    ok = ok and ("error" in row or (isinstance(row.get("label"), str) and isinstance(row.get("topk"), list)))
    return row if ok else None


def write_predictions(
    rows: Iterable[dict[str, Any]], output: Path | None, stream=None, earlier: EarlierRun | None = None
) -> tuple[int, int]:
    """JSON lines to `stream` (stdout) or to a .jsonl/.csv file, one line flushed per row so that a
    killed run keeps every row it wrote.

    Args:
        earlier: resume `output`: rewrite it to the rows kept (when it held more), then append.

    Returns:
        (images predicted, files that failed).
    """
    import sys

    done = failed = 0
    stream = stream or sys.stdout
    if output and earlier and earlier.rewrite:
        # Written beside it and renamed over it: a kill here leaves the old file or the new one, whole.
        with written_beside(output) as staging:
            staging.write_text("".join(earlier.kept), encoding="utf-8", newline="")
    handle = open(output, "a" if earlier else "w", newline="", encoding="utf-8") if output else stream  # noqa: SIM115 - closed below
    try:
        writer = None
        if output and output.suffix == ".csv":
            writer = csv.writer(handle)
            if not (earlier and earlier.kept):
                writer.writerow(CSV_HEADER)
        for row in rows:
            failed += "error" in row
            done += "error" not in row
            if writer:
                topk = json.dumps(row["topk"], ensure_ascii=False) if "topk" in row else ""
                writer.writerow(
                    [row["path"], row.get("label", ""), row.get("score", ""), topk, row.get("error", "")]
                )
            else:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
    finally:
        if output:
            handle.close()
    return done, failed
