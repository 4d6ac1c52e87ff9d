"""`zoo predict` as a user runs it: files, folders, JSON lines, CSV, errors, exit codes, ONNX."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from apps.inference import Predictor
from datamodules.images import list_images
from zoo.checkpoint import load_checkpoint
from zoo.cli import main


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_predict_files_and_folders_prints_json_lines(trained_ckpt, capsys):
    images = trained_ckpt.parents[4] / "images"
    files = list_images(images / "val")
    rc = main(
        ["predict", "--checkpoint", str(trained_ckpt), "--top-k", "2", str(images / "val"), str(files[0])]
    )
    assert rc == 0
    rows = lines(capsys.readouterr().out)
    assert len(rows) == len(files) + 1
    for row in rows:
        assert set(row) == {"path", "label", "score", "topk"}
        assert row["label"] in ("cat", "dog", "owl") and len(row["topk"]) == 2
        assert row["topk"][0] == {"label": row["label"], "score": row["score"]}
        assert row["topk"][0]["score"] >= row["topk"][1]["score"]
    assert (
        sum(r["label"] == Path(r["path"]).parent.name for r in rows) / len(rows) > 0.6
    )  # it learned something


def test_predictions_match_the_model_on_validation_preprocessing(trained_ckpt):
    """zoo predict uses exactly the eval transform of the validation loader."""
    from datamodules import ImageFolderDataModule

    images = trained_ckpt.parents[4] / "images"
    dm = ImageFolderDataModule(str(images), image_size=16, channels=3, num_workers=0, batch_size=100)
    dm.setup("validate")
    batch, _ = next(iter(dm.val_dataloader()))
    model = load_checkpoint(trained_ckpt)
    expected = model(batch.float() / 255).softmax(-1).max(-1).values
    got = [row["score"] for row in Predictor(trained_ckpt).predict_files(dm.splits["val"].items)]
    assert torch.allclose(torch.tensor(got), expected, atol=1e-5)


def test_unreadable_files_get_error_lines_and_exit_1(trained_ckpt, tmp_path, capsys):
    good = list_images(trained_ckpt.parents[4] / "images" / "val")[0]
    (tmp_path / "notes.jpg").write_text("not an image")
    rc = main(
        [
            "predict",
            "--checkpoint",
            str(trained_ckpt),
            str(good),
            str(tmp_path / "notes.jpg"),
            str(tmp_path / "gone.png"),
        ]
    )
    assert rc == 1
    rows = lines(capsys.readouterr().out)
    assert [("error" in r) for r in rows] == [False, True, True]
    assert "UnidentifiedImageError" in rows[1]["error"] and "No such file" in rows[2]["error"]


def test_output_csv_and_jsonl_never_overwrite(trained_ckpt, tmp_path, capsys):
    val = trained_ckpt.parents[4] / "images" / "val"
    out = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(trained_ckpt), str(val), "--output", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list_images(val)) and rows[0]["label"] and json.loads(rows[0]["topk"])
    before = out.read_text()
    assert main(["predict", "--checkpoint", str(trained_ckpt), str(val), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == before
    assert (
        main(["predict", "--checkpoint", str(trained_ckpt), str(val), "--output", str(out), "--overwrite"])
        == 0
    )
    jsonl = tmp_path / "preds.jsonl"
    assert main(["predict", "--checkpoint", str(trained_ckpt), str(val), "--output", str(jsonl)]) == 0
    assert len(lines(jsonl.read_text())) == len(rows)


def test_predict_with_an_onnx_export_agrees_with_the_checkpoint(trained_ckpt, tmp_path, capsys):
    onnx = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(trained_ckpt), "--format", "onnx", "--output", str(onnx)]) == 0
    val = str(trained_ckpt.parents[4] / "images" / "val")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(trained_ckpt), val]) == 0
    from_ckpt = lines(capsys.readouterr().out)
    assert main(["predict", "--checkpoint", str(onnx), val]) == 0
    from_onnx = lines(capsys.readouterr().out)
    assert [r["label"] for r in from_ckpt] == [r["label"] for r in from_onnx]
    assert [r["score"] for r in from_ckpt] == pytest.approx([r["score"] for r in from_onnx], abs=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "missing.ckpt", "x.png"], "not found"),
        (["--checkpoint", "model.h5", "x.png"], "expected one of .ckpt"),
        (["--checkpoint", "m.ckpt", "--output", "out.txt", "x.png"], "use a .jsonl or .csv"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    assert main(["predict", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
