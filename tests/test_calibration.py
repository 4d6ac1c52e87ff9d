"""Temperature scaling (`zoo calibrate`) and test-time augmentation (`--tta`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST, make_folder
from zoo.calibration import fit_temperature
from zoo.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_fit_temperature_recovers_a_known_overconfidence():
    torch.manual_seed(0)
    honest = torch.randn(4000, 5) * 2
    labels = torch.distributions.Categorical(logits=honest).sample()  # labels drawn from the honest scores
    assert fit_temperature(honest * 3, labels) == pytest.approx(3.0, rel=0.1)  # 3x too confident: T = 3


@pytest.fixture(scope="module")
def run_with_val(tmp_path_factory) -> Path:
    """A CNN trained 4 epochs on 3 classes with 10 validation images each (enough to fit a temperature)."""
    root = tmp_path_factory.mktemp("calib")
    make_folder(root / "images", n=30, layout="split")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rc = main(["fit", "--config", str(CONFIGS / "cnn.yaml"), "--data.root", str(root / "images"),
                   "--model.channels_per_block", "[8, 16]", *FAST, "--trainer.max_epochs", "4",
                   "--trainer.logger", "false"])  # fmt: skip
    finally:
        os.chdir(cwd)
    assert rc == 0
    return next((root / "runs").rglob("best.ckpt"))


def test_zoo_calibrate_saves_the_temperature_and_predict_uses_it(run_with_val: Path, capsys, tmp_path):
    assert main(["calibrate", "--checkpoint", str(run_with_val)]) == 0
    err = capsys.readouterr().err
    assert "temperature" in err and "ECE" in err
    calibrated = run_with_val.with_name("best-calibrated.ckpt")
    ckpt = torch.load(calibrated, weights_only=True)
    t = ckpt["hyper_parameters"]["temperature"]
    summary = ckpt["zoo"]["calibration"]
    assert t > 0 and t != 1.0 and summary["temperature"] == t
    # T minimises the val loss, so the loss cannot rise there (ECE, a binned count, may on 30 images)
    assert summary["val_nll_after"] <= summary["val_nll_before"] + 1e-9
    assert main(["calibrate", "--checkpoint", str(run_with_val)]) == 2  # the copy exists: not overwritten

    image = next((run_with_val.parents[4] / "images" / "val" / "cat").iterdir())
    scores = []
    for path in (run_with_val, calibrated):
        out = tmp_path / f"{path.stem}.jsonl"
        assert main(["predict", str(image), "--checkpoint", str(path), "--output", str(out)]) == 0
        scores.append(json.loads(out.read_text())["topk"])
    raw, scaled = (
        torch.tensor([s["score"] for s in sorted(row, key=lambda s: s["label"])]) for row in scores
    )
    # softmax(z / T) is softmax(z) ** (1 / T), renormalised
    assert scaled == pytest.approx((raw ** (1 / t) / (raw ** (1 / t)).sum()).tolist(), abs=1e-5)

    assert main(["evaluate", "--checkpoint", str(calibrated), "--output", str(tmp_path / "ev")]) == 0
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert evaluation["temperature"] == pytest.approx(t)


def test_calibrate_refuses_a_tiny_validation_split(trained_ckpt: Path, tmp_path, capsys):
    out = tmp_path / "c.ckpt"
    assert main(["calibrate", "--checkpoint", str(trained_ckpt), "--output", str(out)]) == 2
    assert "too few" in capsys.readouterr().err and not out.exists()


def test_tta_averages_the_image_and_its_mirror(trained_ckpt: Path):
    from apps.inference import Predictor

    image = next((trained_ckpt.parents[4] / "images" / "val" / "dog").iterdir())
    plain, tta = Predictor(trained_ckpt), Predictor(trained_ckpt, tta=True)
    x = plain.prepare(image)[None]  # (1, C, H, W)
    expected = (plain.logits(x).softmax(-1) + plain.logits(x.flip(-1)).softmax(-1)) / 2
    got = {s["label"]: s["score"] for s in tta.predict([image], top_k=3)[0]["topk"]}
    assert [got[name] for name in tta.class_names] == pytest.approx(expected[0].tolist(), abs=1e-6)


def test_evaluate_with_tta_scores_each_image_with_its_mirror_and_records_it(trained_ckpt: Path, tmp_path):
    from apps.inference import Predictor

    p_true = {}
    for tta in (False, True):
        out = tmp_path / str(tta)
        args = ["evaluate", "--checkpoint", str(trained_ckpt), "--top_losses", "1000", "--output", str(out)]
        assert main([*args, "--tta"] if tta else args) == 0
        evaluation = json.loads((out / "evaluation.json").read_text())
        assert evaluation["tta"] is tta
        p_true[tta] = {row["file"]: (row["true"], row["p_true"]) for row in evaluation["top_losses"]}
    assert len(p_true[True]) == evaluation["images"] > 0
    # the scores evaluate used are the image's and its mirror image's averaged, as `zoo predict --tta` gives them
    predictor = Predictor(trained_ckpt, tta=True)
    for file, (true, score) in p_true[True].items():
        topk = predictor.predict([file], top_k=len(predictor.class_names))[0]["topk"]
        assert score == pytest.approx(next(s["score"] for s in topk if s["label"] == true), abs=1e-5)
    assert any(p_true[True][f][1] != pytest.approx(p_true[False][f][1], abs=1e-4) for f in p_true[True])
