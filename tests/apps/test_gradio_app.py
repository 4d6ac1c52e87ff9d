"""The Gradio app, served on localhost: its HTTP API through gradio_client, and a real browser."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from apps.gradio_app import PREDICTED, launch
from datamodules.images import list_images
from zoo.cli import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(trained_ckpt, tmp_path_factory):
    onnx = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", "--checkpoint", str(trained_ckpt), "--format", "onnx", "--output", str(onnx)]) == 0
    port = free_port()
    demo = launch([str(trained_ckpt), str(onnx)], port=port, top_k=3, block=False)  # the app's own settings
    yield f"http://127.0.0.1:{port}/", list_images(trained_ckpt.parents[4] / "images" / "val")
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[0], verbose=False)


def test_api_predict_returns_top_k(client, app):
    from gradio_client import handle_file

    result = client.predict(handle_file(str(app[1][0])), api_name="/predict")
    assert result["label"] in ("cat", "dog", "owl")
    assert len(result["confidences"]) == 3
    assert sum(c["confidence"] for c in result["confidences"]) == pytest.approx(1.0, abs=1e-4)


def test_api_explain_returns_an_overlay_for_a_chosen_method_and_class(client, app):
    from gradio_client import handle_file

    overlay, note = client.predict(
        handle_file(str(app[1][0])), "best.ckpt", "GradCAM++", "owl", api_name="/explain"
    )
    image = np.asarray(Image.open(overlay))
    assert image.shape[:2] == (384, 384) and image.shape[2] in (3, 4)  # the 16 px CAM, scaled up to be seen
    assert "GradCAM++" in note and "owl" in note


def test_api_explain_draws_the_class_asked_for(client, app):
    """The overlay for a class that is not the predicted one is that class's map, not the prediction's."""
    from gradio_client import handle_file

    image = handle_file(str(app[1][0]))
    predicted = client.predict(image, api_name="/predict")["label"]

    def overlay(target: str) -> np.ndarray:
        path, _ = client.predict(image, "best.ckpt", "GradCAM", target, api_name="/explain")
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)  # (384, 384, 3)

    shown = overlay(PREDICTED)
    assert np.abs(overlay(predicted) - shown).max() < 1  # the predicted class by name: the same picture
    for other in {"cat", "dog", "owl"} - {predicted}:
        assert np.abs(overlay(other) - shown).mean() > 20, other  # of 255 (measured 75-94): another map


def test_model_selector_serves_the_onnx_model_for_predictions(client, app):
    from gradio_client import handle_file

    ckpt = client.predict(handle_file(str(app[1][1])), "best.ckpt", api_name="/predict")
    onnx = client.predict(handle_file(str(app[1][1])), "model.onnx", api_name="/predict")
    assert ckpt["label"] == onnx["label"]
    with pytest.raises(Exception, match="Grad-CAM needs a .ckpt"):
        client.predict(handle_file(str(app[1][1])), "model.onnx", api_name="/explain")


def test_bad_uploads_get_a_message_and_the_app_keeps_serving(client, app, tmp_path):
    from gradio_client import handle_file

    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(Exception, match="notes.png is not an image zoo can read"):
        client.predict(handle_file(str(tmp_path / "notes.png")), api_name="/predict")
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(11 * 1024 * 1024))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # refused before it is sent
        client.predict(handle_file(str(big)), api_name="/predict")
    assert client.predict(handle_file(str(app[1][0])), api_name="/predict")["label"]  # still serving


def test_explain_checks_the_method_and_class_it_is_sent(client, app):
    """The events take raw values (preprocess=False), so the app checks them itself."""
    from gradio_client import handle_file

    image = handle_file(str(app[1][0]))
    with pytest.raises(Exception, match="Unknown explanation method 'Nope'"):
        client.predict(image, "best.ckpt", "Nope", "owl", api_name="/explain")
    with pytest.raises(Exception, match="'zebra' is not one of this model's classes"):
        client.predict(image, "best.ckpt", "GradCAM", "zebra", api_name="/explain")
    assert client.predict(image, "no-such-model", api_name="/predict")["label"]  # the first model


def test_predictions_run_side_by_side(client, app, monkeypatch):
    """PREDICT_CONCURRENCY predictions are computed at once (Gradio's default is one at a time)."""
    import threading

    from gradio_client import handle_file

    from apps.gradio_app import PREDICT_CONCURRENCY
    from apps.inference import Predictor

    assert PREDICT_CONCURRENCY > 1
    meeting = threading.Barrier(PREDICT_CONCURRENCY, timeout=20)
    rank = Predictor.rank

    def rank_together(self, batch, top_k):
        meeting.wait()  # passes only when PREDICT_CONCURRENCY predictions are inside at the same time
        return rank(self, batch, top_k)

    monkeypatch.setattr(Predictor, "rank", rank_together)
    jobs = [
        client.submit(handle_file(str(app[1][0])), api_name="/predict") for _ in range(PREDICT_CONCURRENCY)
    ]
    assert all(job.result(timeout=60)["label"] in ("cat", "dog", "owl") for job in jobs)


def test_a_prediction_is_answered_while_a_grad_cam_is_computed(client, app, monkeypatch):
    """Explanations hold their own copy of the model and their own lock, not the predictions'."""
    import threading

    from gradio_client import handle_file

    import apps.explain

    inside, release = threading.Event(), threading.Event()
    cam = apps.explain._cam

    def slow_cam(*args):
        inside.set()
        release.wait(60)
        return cam(*args)

    monkeypatch.setattr(apps.explain, "_cam", slow_cam)
    image = handle_file(str(app[1][0]))
    try:
        explaining = client.submit(image, "best.ckpt", "GradCAM", "predicted class", api_name="/explain")
        assert inside.wait(30)
        answer = client.submit(image, api_name="/predict").result(timeout=20)
        assert answer["label"] in ("cat", "dog", "owl") and not explaining.done()
    finally:
        release.set()
    overlay, note = explaining.result(timeout=60)
    assert "GradCAM" in note


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_browser_upload_shows_label_and_cam(app):
    from playwright.sync_api import sync_playwright

    url, images = app
    ARTIFACTS.mkdir(exist_ok=True)
    big = ARTIFACTS / "upload.png"
    Image.open(images[0]).resize((160, 160), Image.NEAREST).save(big)  # big enough to see in the screenshot
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(big))
        page.get_by_role("button", name="Classify").click()
        page.locator("#cam img").wait_for(state="visible", timeout=30_000)
        page.get_by_text("GradCAM for class").wait_for(timeout=30_000)
        label_text = page.locator(".output-class, [data-testid='label-output-value']").first.inner_text()
        assert label_text.strip() in ("cat", "dog", "owl")
        assert page.locator("#cam img").evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "app.png").stat().st_size > 10_000


def test_examples_come_from_the_checkpoints_own_validation_images(trained_ckpt):
    from apps.gradio_app import example_images
    from apps.inference import Predictor

    examples = example_images(Predictor(trained_ckpt))
    val = trained_ckpt.parents[4] / "images" / "val"
    assert examples and all(Path(p).is_relative_to(val) for p in examples)


def test_zoo_app_command_serves_the_api(trained_ckpt, tmp_path):
    """`zoo app` as a user starts it: a real process on localhost, called over HTTP."""
    import subprocess
    import sys
    import time
    import urllib.request

    from gradio_client import Client, handle_file

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "app", "--checkpoint", str(trained_ckpt), "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.5)
        result = Client(url, verbose=False).predict(
            handle_file(str(next(iter(example_paths(trained_ckpt))))), api_name="/predict"
        )
        assert result["label"] in ("cat", "dog", "owl")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def example_paths(trained_ckpt):
    return list_images(trained_ckpt.parents[4] / "images" / "val")
