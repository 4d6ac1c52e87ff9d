"""`zoo evaluate`: per-class metrics, confusion, calibration and top losses, the figures and report.html."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchmetrics

from tests.conftest import make_folder
from zoo.cli import main
from zoo.evaluation import Predictions, confusion, metrics, reliability


def test_metrics_on_known_predictions():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])  # predicted 0, 1, 0, 1
    labels = np.array([0, 1, 1, 1])
    out = metrics(Predictions(probs, labels, ["a", "b", "c", "d"]), ["cat", "dog"], top_losses=2)
    assert out["accuracy"] == 0.75 and out["confusion"] == [[1, 0], [1, 2]]
    cat, dog = out["per_class"]
    assert (cat["precision"], cat["recall"], cat["support"]) == (0.5, 1.0, 1)
    assert (dog["precision"], dog["recall"], dog["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert out["top_losses"][0]["file"] == "c" and out["top_losses"][0]["predicted"] == "cat"  # p(dog) 0.4
    assert out["top5_accuracy"] is None  # fewer than 6 classes


def test_ece_equals_torchmetrics():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 7)) * 3
    probs = torch.tensor(logits).softmax(-1).numpy()
    labels = rng.integers(0, 7, 500)
    ours = reliability(probs, labels)["ece"]
    theirs = torchmetrics.classification.MulticlassCalibrationError(7, n_bins=15, norm="l1")(
        torch.tensor(probs), torch.tensor(labels)
    )
    assert ours == pytest.approx(float(theirs), abs=1e-6)
    assert confusion(np.array([0, 1, 1]), np.array([1, 1, 0]), 2).tolist() == [[0, 1], [1, 1]]


def test_zoo_evaluate_writes_the_figures_json_and_report(trained_ckpt: Path, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_ckpt.parent.parent, run)  # leave the shared fixture's run folder as it is
    ckpt = run / "checkpoints" / "best.ckpt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--top-losses", "4"]) == 0
    err = capsys.readouterr().err
    assert "accuracy" in err and "report" in err
    out = run / "evaluate" / "val"
    for name in ("evaluation.json", "confusion.png", "reliability.png", "top_losses.png"):
        assert (out / name).stat().st_size > 1000, name
    result = json.loads((out / "evaluation.json").read_text())
    assert (
        result["images"] == sum(r["support"] for r in result["per_class"]) == 12
    )  # 3 classes x 4 val images
    assert len(result["top_losses"]) == 4 and all(Path(t["file"]).is_file() for t in result["top_losses"])
    losses = [t["loss"] for t in result["top_losses"]]
    assert losses == sorted(losses, reverse=True)
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "Top losses" in page and "dog" in page


def test_zoo_evaluate_on_another_folder_and_its_mistakes(trained_ckpt: Path, tmp_path, capsys):
    other = make_folder(tmp_path / "other", n=5, layout="split")
    assert main(["evaluate", "--checkpoint", str(trained_ckpt), "--data.root", str(other),
                 "--output", str(tmp_path / "out")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["images"] == 6  # 3 x max(2, 5 // 3)
    wrong = make_folder(tmp_path / "wrong", classes=("cat", "emu"), n=4, layout="split")
    assert main(["evaluate", "--checkpoint", str(trained_ckpt), "--data.root", str(wrong)]) == 2
    assert "same class folders" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.ckpt")]) == 2


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_report_renders_in_a_browser(trained_ckpt: Path, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.apps.test_gradio_app import ARTIFACTS

    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(trained_ckpt), "--output", str(out)]) == 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto((out / "report.html").as_uri())
        widths = page.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) >= 3 and all(w > 100 for w in widths)  # every inlined picture decoded
        assert "accuracy" in page.locator("p.numbers").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
