"""The demo: top-k predictions and, beside them, a Grad-CAM view of where the model looked.

`python -m apps.gradio_app --checkpoint CKPT` or `zoo app --checkpoint CKPT`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import yaml
from PIL import Image

from apps.explain import METHODS, explain
from apps.inference import Predictor
from apps.serving import check_port_free, parser
from datamodules.folder import sample_root
from datamodules.images import list_images
from datamodules.layout import VAL_NAMES
from zoo.runs import run_config_of

PREDICTED = "predicted class"
MAX_FILE_SIZE = "10mb"
DISPLAY_SIDE = 384


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


def build_demo(checkpoints: list[str], top_k: int = 5, device: str = "cpu") -> gr.Blocks:
    """The app for one or more models; each event is also a named API endpoint (`predict`, `explain`)."""
    predictors: dict[str, Predictor] = {}
    for path in checkpoints:
        name = Path(path).name if Path(path).name not in predictors else str(path)
        predictors[name] = Predictor(path, device=device)
    names = list(predictors)
    lock = threading.Lock()  # CAM hooks live on the shared model: one explanation at a time

    def pick(model_name: str | None) -> Predictor:
        return predictors.get(model_name or names[0], predictors[names[0]])

    def load(image_path: str | None, predictor: Predictor):
        if not image_path:
            raise gr.Error("Upload, paste or take a picture first.")
        try:
            return predictor.prepare(image_path)
        except Exception as err:
            raise gr.Error(f"This file is not an image zoo can read ({type(err).__name__}: {err}).") from err

    def predict(image: str | None, model_name: str | None = None) -> dict[str, float]:
        predictor = pick(model_name)
        with lock:
            result = predictor.rank(load(image, predictor)[None], top_k)[0]
        return {item["label"]: item["score"] for item in result["topk"]}

    def explain_image(
        image: str | None, model_name: str | None = None, method: str = "GradCAM", target: str = PREDICTED
    ):
        predictor = pick(model_name)
        if predictor.model is None:
            raise gr.Error("Grad-CAM needs a .ckpt or .safetensors model; this one is ONNX.")
        class_index = None if target in (None, PREDICTED) else predictor.class_names.index(target)
        with lock:
            result = explain(predictor.model, load(image, predictor), method, class_index)
        label = predictor.class_names[result.class_index]
        return for_display(result.overlay), f"**{result.method}** for class **{label}**. {result.note}"

    def switch_model(model_name: str):
        predictor = pick(model_name)
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
        button.click(predict, [image, model], label, api_name="predict").then(
            explain_image, [image, model, method, target], [cam, note], api_name="explain"
        )
    return demo


def launch(
    checkpoints: list[str], host: str = "127.0.0.1", port: int = 7860, share: bool = False, top_k: int = 5
) -> None:
    """Serve the app; safe defaults: localhost only, no public share link, 10 MB uploads."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_demo(checkpoints, top_k=top_k)
    demo.queue().launch(
        server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE, show_error=True
    )


if __name__ == "__main__":
    args = parser().parse_args()
    check_port_free(args.host, args.port)  # `zoo app` checks before importing gradio; this path here
    launch(args.checkpoint, args.host, args.port, args.share, args.top_k)
