"""Inference speed, side by side in one process (medians of interleaved repeats).

    python benchmarks/inference.py [--repeats 30]

1. `zoo predict` per-image latency (decode + preprocess + forward, batch 1) vs the bare model forward.
2. ONNX Runtime vs eager PyTorch on the same exported model (batch 1 and batch 32).
3. Grad-CAM (GradCAM, one image) vs one forward.
For the CNN recipe at 28 px and ResNet-18 at 224 px, each trained for a few steps by `zoo fit` on the
bundled sample. Writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from apps.explain import Explainer
from apps.inference import Predictor
from benchmarks.machine import describe
from datamodules.folder import sample_root
from datamodules.images import list_images
from zoo.checkpoint import load_checkpoint
from zoo.cli import main
from zoo.export import InferenceModule, export

RESULTS = Path(__file__).parent / "results"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = {
    "cnn@28": ["--config", str(CONFIGS / "cnn.yaml")],
    "resnet18@224": ["--config", str(CONFIGS / "resnet18_finetune.yaml"), "--model.pretrained", "false"],
}


def train(name: str, args: list[str], workdir: Path) -> Path:
    os.chdir(workdir)
    rc = main(["fit", *args, "--experiment", name.replace("@", "_"), "--trainer.max_epochs", "1",
               "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
               "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])  # fmt: skip
    assert rc == 0
    return next((workdir / "runs" / name.replace("@", "_")).rglob("best.ckpt"))


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def side_by_side(a, b, repeats: int) -> tuple[float, float]:
    """Interleave A and B so machine noise hits both alike; return their medians in ms."""
    ta, tb = [], []
    for _ in range(repeats):
        ta += timed(a, 1)
        tb += timed(b, 1)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def bench(name: str, ckpt: Path, repeats: int, workdir: Path) -> dict:
    model = load_checkpoint(ckpt)
    image_path = list_images(sample_root() / "val")[0]
    predictor = Predictor(ckpt)
    x1 = predictor.prepare(image_path)[None]
    x32 = x1.repeat(32, 1, 1, 1)

    def bare(x=x1):
        with torch.inference_mode():
            model(x)

    predict_ms, bare_ms = side_by_side(
        lambda: list(predictor.predict_files([image_path], batch_size=1)), bare, repeats
    )
    onnx_path = workdir / f"{ckpt.stem}_{name.replace('@', '_')}.onnx"
    export(model, "onnx", onnx_path)
    onnx = Predictor(onnx_path)
    eager = InferenceModule(model).eval()

    def eager_fn(x):
        with torch.inference_mode():
            eager(x)

    ort1, eager1 = side_by_side(lambda: onnx.logits(x1), lambda: eager_fn(x1), repeats)
    ort32, eager32 = side_by_side(lambda: onnx.logits(x32), lambda: eager_fn(x32), max(5, repeats // 3))
    explainer = Explainer(model)  # built once, as the app does: the timing is the CAM, not the copy
    cam_ms, fwd_ms = side_by_side(lambda: explainer(x1[0], "GradCAM"), bare, repeats)
    return {
        "predict_per_image_ms": predict_ms, "bare_forward_ms": bare_ms, "predict_vs_forward": predict_ms / bare_ms,
        "onnx_b1_ms": ort1, "eager_b1_ms": eager1, "onnx_speedup_b1": eager1 / ort1,
        "onnx_b32_ms": ort32, "eager_b32_ms": eager32, "onnx_speedup_b32": eager32 / ort32,
        "gradcam_ms": cam_ms, "forward_ms": fwd_ms, "gradcam_vs_forward": cam_ms / fwd_ms,
    }  # fmt: skip


def run(repeats: int) -> dict:
    torch.set_num_threads(os.cpu_count() or 1)
    results = {"machine": describe(),
               "repeats": repeats, "models": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        try:
            for name, args in RECIPES.items():
                ckpt = train(name, args, Path(tmp))
                results["models"][name] = bench(name, ckpt, repeats, Path(tmp))
        finally:
            os.chdir(cwd)
    return results


def report(results: dict) -> str:
    rows = ["| model | zoo predict / bare forward (goal ≤ 1.3×) | ONNX Runtime speed-up b1 / b32 (goal ≥ 1.5×) | Grad-CAM / forward (goal ≤ 3×) |",
            "| --- | --- | --- | --- |"]  # fmt: skip
    for name, r in results["models"].items():
        rows.append(
            f"| {name} | {r['predict_per_image_ms']:.2f} / {r['bare_forward_ms']:.2f} ms = **{r['predict_vs_forward']:.2f}×** "
            f"| {r['onnx_speedup_b1']:.2f}× / {r['onnx_speedup_b32']:.2f}× ({r['onnx_b1_ms']:.2f} vs {r['eager_b1_ms']:.2f} ms at b1) "
            f"| {r['gradcam_ms']:.2f} / {r['forward_ms']:.2f} ms = **{r['gradcam_vs_forward']:.2f}×** |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    results = run(parser.parse_args().repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inference.json").write_text(json.dumps(results, indent=1) + "\n")
    print(results["machine"])
    print(report(results))
