"""The demo: top-k predictions and, beside them, a Grad-CAM view of where the model looked.

`python -m apps.gradio_app --checkpoint CKPT` or `zoo app --checkpoint CKPT`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import torch
import yaml
from PIL import Image, UnidentifiedImageError

from apps.explain import METHODS, Explainer
from apps.inference import Predictor
from apps.serving import check_port_free, parser
from datamodules.folder import sample_root
from datamodules.images import ImageTooLarge, list_images
from datamodules.layout import VAL_NAMES
from zoo.runs import run_config_of

PREDICTED = "predicted class"
MAX_FILE_SIZE = "10mb"
DISPLAY_SIDE = 384
# Predictions computed at once. They only read the shared model (torch.inference_mode), and a request
# spends much of its time outside the forward (upload, decode, Gradio's own work), so a few in flight
# overlap; each one in flight holds its activations, and on a CPU one forward of a large net already
# uses every core, so many more add memory, not speed. benchmarks/app_load.py: with the sample CNN on
# 2 cores, 1, 4 and 8 at once all serve 6-9 predictions/s (the time goes to HTTP and Gradio, not the
# model). Explanations run one at a time: each model's Explainer holds one private copy of it behind
# a lock, so a second one would only wait there, holding one of Gradio's threads.
PREDICT_CONCURRENCY = 4
# Events waiting in the queue, at most: past this a user hears at once that the app is busy rather
# than waiting minutes, and a flood of requests cannot grow the server's memory without bound.
QUEUE_SIZE = 100


def example_images(predictor: Predictor, per_model: int = 6) -> list[str]:
    """A few validation images of the checkpoint's own run when they can be found, else the bundled sample."""
    config_path = run_config_of(predictor.path)  # runs/<experiment>/<version>/config.yaml
    run_dir = config_path.parent
    found: list[Path] = []
    try:
        config = yaml.safe_load(config_path.read_text())
        root = Path(config["data"]["init_args"]["root"])
        split_list = run_dir / "splits" / "val.txt"
        if split_list.is_file():
            found = [root / line.split("\t")[0] for line in split_list.read_text().splitlines() if line]
        else:
            val = next((root / n for n in VAL_NAMES if (root / n).is_dir()), None)
            found = list_images(val) if val else []
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        found = []
    if not found:
        found = list_images(sample_root() / "val")
    step = max(1, len(found) // per_model)
    return [str(p) for p in found[::step][:per_model] if p.is_file()]


def for_display(overlay: np.ndarray, min_side: int = DISPLAY_SIDE) -> np.ndarray:
    """Models see small images (28 px for Fashion-MNIST): scale the overlay up so people can see it."""
    height, width = overlay.shape[:2]
    scale = min_side / min(height, width)
    if scale <= 1:
        return overlay
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(overlay).resize(size, Image.BILINEAR))


def model_info(name: str, predictor: Predictor) -> str:
    card = predictor.card
    h = card["hyper_parameters"]
    arch = h.get("backbone") or card["family"].upper()
    acc = card.get("info", {}).get("val_acc")
    classes = ", ".join(card["class_names"][:20]) + (" …" if len(card["class_names"]) > 20 else "")
    lines = [
        f"### {name}",
        f"- **architecture**: {arch} ({card['family']} family)",
        f"- **input**: {card['image_size']}×{card['image_size']}, {card['channels']} channel(s)",
        f"- **classes ({len(card['class_names'])})**: {classes}",
        f"- **best val/acc in training**: {acc:.4f}"
        if acc is not None
        else "- **best val/acc in training**: not recorded",
        f"- **file**: `{predictor.path}`",
    ]
    if predictor.model is None:
        lines.append("- Grad-CAM needs a `.ckpt` or `.safetensors` model; this ONNX model only predicts.")
    return "\n".join(lines)


def build_demo(
    checkpoints: list[str], top_k: int = 5, device: str = "cpu", concurrency: int = PREDICT_CONCURRENCY
) -> gr.Blocks:
    """The app for one or more models; each event is also a named API endpoint (`predict`, `explain`).

    Args:
        checkpoints: model files (.ckpt, .safetensors, .onnx); the first is shown first.
        top_k: classes shown per prediction.
        device: torch device of the models.
        concurrency: predictions computed at once (explanations: one at a time).
    """
    predictors: dict[str, Predictor] = {}
    for path in checkpoints:
        name = Path(path).name if Path(path).name not in predictors else str(path)
        predictors[name] = Predictor(path, device=device)
    # Explanations work on their own float32 copy of each model: predictions keep the shared one to
    # themselves, hook-free, and run while a Grad-CAM is computed.
    explainers = {name: Explainer(p.model) for name, p in predictors.items() if p.model is not None}
    names = list(predictors)

    def pick(model_name: str | None) -> str:
        return model_name if model_name in predictors else names[0]

    def load(upload: dict | None, predictor: Predictor) -> torch.Tensor:
        """The uploaded image, decoded by zoo; `upload` is Gradio's FileData, not preprocessed (see below)."""
        if not upload or not upload.get("path"):
            raise gr.Error("Upload, paste or take a picture first.")
        image_path = upload["path"]  # checked by Gradio to lie in its upload folder
        name = Path(image_path).name  # never the server's path
        try:
            return predictor.prepare(image_path)
        except ImageTooLarge as err:
            raise gr.Error(f"{name}: {err}. Shrink it and try again.") from err
        except UnidentifiedImageError as err:
            raise gr.Error(f"{name} is not an image zoo can read: no image format recognised in it.") from err
        except OSError as err:  # what Pillow's decoders raise on damaged data
            raise gr.Error(f"{name} could not be decoded: the file is damaged or truncated ({err}).") from err
        except Exception as err:
            raise gr.Error(f"{name} is not an image zoo can read ({type(err).__name__}: {err}).") from err

    def predict(image: dict | None, model_name: str | None = None) -> dict[str, float]:
        predictor = predictors[pick(model_name)]
        result = predictor.rank(load(image, predictor)[None], top_k)[0]
        return {item["label"]: item["score"] for item in result["topk"]}

    def explain_image(
        image: dict | None, model_name: str | None = None, method: str = "GradCAM", target: str = PREDICTED
    ):
        name = pick(model_name)
        predictor = predictors[name]
        if name not in explainers:
            raise gr.Error("Grad-CAM needs a .ckpt or .safetensors model; this one is ONNX.")
        if method not in METHODS:
            raise gr.Error(f"Unknown explanation method {method!r}; choose one of {', '.join(METHODS)}.")
        if target not in (None, PREDICTED, *predictor.class_names):
            raise gr.Error(f"{target!r} is not one of this model's classes.")
        class_index = None if target in (None, PREDICTED) else predictor.class_names.index(target)
        result = explainers[name](load(image, predictor), method, class_index)
        label = predictor.class_names[result.class_index]
        return for_display(result.overlay), f"**{result.method}** for class **{label}**. {result.note}"

    def switch_model(model_name: str):
        predictor = predictors[pick(model_name)]
        return model_info(model_name, predictor), gr.Dropdown(
            choices=[PREDICTED, *predictor.class_names], value=PREDICTED
        )

    first = predictors[names[0]]
    with gr.Blocks(title="zoo classifier") as demo:
        gr.Markdown(
            "# zoo classifier\nUpload, paste or take a picture: the top classes, and where the model looked."
        )
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(names, value=names[0], label="Model", visible=len(names) > 1)
                image = gr.Image(
                    type="filepath", sources=["upload", "clipboard", "webcam"], label="Image", height=320
                )
                with gr.Row():
                    method = gr.Dropdown(list(METHODS), value="GradCAM", label="Explanation method")
                    target = gr.Dropdown(
                        [PREDICTED, *first.class_names], value=PREDICTED, label="Explain class"
                    )
                button = gr.Button("Classify", variant="primary")
                gr.Examples(example_images(first), inputs=image, label="Examples")
            with gr.Column():
                label = gr.Label(num_top_classes=top_k, label="Prediction")
                cam = gr.Image(label="Grad-CAM", type="numpy", interactive=False, height=320, elem_id="cam")
                note = gr.Markdown()
                info = gr.Markdown(model_info(names[0], first))
        model.change(switch_model, model, [info, target], api_name=False)
        # preprocess=False: the functions get the upload as Gradio's FileData, its path already checked
        # to lie in the upload folder, and the dropdowns' raw values (checked above). gr.Image's own
        # preprocessing would open every upload with Pillow and convert any non-RGB image at full size
        # first: a decompression bomb under Pillow's hard limit decoded, 16-bit images clipped to white,
        # and Gradio's own error text, with server paths, for a file that is no image. zoo's loader
        # reads the size from the header and converts every mode as training does.
        button.click(
            predict, [image, model], label, api_name="predict", concurrency_limit=concurrency,
            concurrency_id="predict", preprocess=False,
        ).then(
            explain_image, [image, model, method, target], [cam, note], api_name="explain", concurrency_limit=1,
            concurrency_id="explain", preprocess=False,
        )  # fmt: skip
    return demo


def launch(
    checkpoints: list[str],
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    top_k: int = 5,
    concurrency: int = PREDICT_CONCURRENCY,
    block: bool = True,
) -> gr.Blocks:
    """Serve the app; safe defaults: localhost only, no public share link, 10 MB uploads, a bounded queue,
    its own upload folder.

    Args:
        block: serve until interrupted; False returns the running app at once (tests, benchmarks).
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if "GRADIO_TEMP_DIR" not in os.environ:
        # Gradio serves any file in its upload folder, by default /tmp/gradio: shared by every Gradio
        # app and user of the machine, so anything written there would be served. This app's own folder
        # (mode 0700) holds only its uploads and examples.
        folder = tempfile.mkdtemp(prefix="zoo-app-")
        os.environ["GRADIO_TEMP_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    demo = build_demo(checkpoints, top_k=top_k, concurrency=concurrency)
    demo.queue(max_size=QUEUE_SIZE).launch(
        server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE, show_error=True,
        prevent_thread_lock=not block, quiet=not block,
    )  # fmt: skip
    return demo


if __name__ == "__main__":
    args = parser().parse_args()
    check_port_free(args.host, args.port)  # `zoo app` checks before importing gradio; this path here
    launch(args.checkpoint, args.host, args.port, args.share, args.top_k)
