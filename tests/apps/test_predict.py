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


def test_output_csv_and_jsonl(trained_ckpt, tmp_path):
    val = trained_ckpt.parents[4] / "images" / "val"
    out = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(trained_ckpt), str(val), "--output", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list_images(val)) and rows[0]["label"] and json.loads(rows[0]["topk"])
    jsonl = tmp_path / "preds.jsonl"
    assert main(["predict", "--checkpoint", str(trained_ckpt), str(val), "--output", str(jsonl)]) == 0
    assert len(lines(jsonl.read_text())) == len(rows)


def read_rows(out: Path) -> list[dict]:
    """Every row of a predictions file, failing on any line that does not parse."""
    if out.suffix == ".csv":
        text = out.read_text()
        assert text.count("path,label,score,topk,error") == 1 and text.endswith("\n")
        with open(out, newline="") as f:
            return [
                {k: v for k, v in row.items() if v}
                | ({"topk": json.loads(row["topk"])} if row["topk"] else {})
                for row in csv.DictReader(f)
            ]
    return [json.loads(line) for line in out.read_text().splitlines()]  # every line parses


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_killed_run_resumes_each_good_file_once_and_retries_bad_ones(
    trained_ckpt, tmp_path, suffix, capsys
):
    folder = tmp_path / "images"
    folder.mkdir()
    good = list_images(trained_ckpt.parents[4] / "images" / "val")[:8]
    for i, src in enumerate(good):
        (folder / f"{i}{src.suffix}").write_bytes(src.read_bytes())
    (folder / "broken.png").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / f"preds{suffix}"
    predict = [
        "predict",
        "--checkpoint",
        str(trained_ckpt),
        str(folder),
        "--output",
        str(out),
        "--batch-size",
        "3",
    ]

    assert main(predict) == 1  # bad files: reported, and every good file still predicted
    first = read_rows(out)
    assert sorted(Path(r["path"]).name for r in first if "error" in r) == ["broken.png", "empty.jpg"]
    assert sum("label" in r for r in first) == 8
    # The run is killed mid-write: 2 whole rows survive, then a third cut in half.
    whole = out.read_bytes().splitlines(keepends=True)
    head = 3 if suffix == ".csv" else 2
    out.write_bytes(b"".join(whole[:head]) + whole[head][: len(whole[head]) // 2])
    capsys.readouterr()

    assert main(predict) == 1  # the bad files are still bad
    assert "resuming" in (err := capsys.readouterr().err) and "2 already predicted, 8 to go" in err
    assert "half-written" in err and "retried" in err
    rows = read_rows(out)
    assert out.read_bytes().startswith(b"".join(whole[:head]))  # what was kept is untouched
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in first)  # every file exactly once
    by_path = {Path(r["path"]).name: r for r in rows}
    assert "error" in by_path["broken.png"] and "error" in by_path["empty.jpg"]
    assert all(by_path[f"{i}{src.suffix}"]["label"] in ("cat", "dog", "owl") for i, src in enumerate(good))

    # One bad file fixed, the other removed: its error row goes, the fixed one is predicted once.
    (folder / "broken.png").write_bytes(good[0].read_bytes())
    (folder / "empty.jpg").unlink()
    assert main(predict) == 0
    assert "8 already predicted, 1 to go" in capsys.readouterr().err
    rows = read_rows(out)
    assert len(rows) == 9 and not any("error" in r for r in rows)
    assert len({r["path"] for r in rows}) == 9

    assert main([*predict, "--overwrite"]) == 0  # starts over: a new file, no resume
    assert "resuming" not in capsys.readouterr().err
    assert len(read_rows(out)) == 9


ZEBRA = '{"path": "a.png", "label": "zebra", "score": 1.0, "topk": [{}]}\n'
TOP_2 = '{"path": "a.png", "label": "cat", "score": 1.0, "topk": [{}, {}]}\n'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (ZEBRA, "zebra are not this model's"),  # written by a model with other classes
        (TOP_2, "--top-k 2"),  # written with another --top-k (this run: 5, capped at 3 classes)
        ("hello\nworld\n", "line 1 is not a zoo prediction"),
    ],
)
def test_resume_refuses_a_file_it_did_not_write_with_this_model(
    trained_ckpt, tmp_path, content, message, capsys
):
    out = tmp_path / "preds.jsonl"
    out.write_text(content)
    good = list_images(trained_ckpt.parents[4] / "images" / "val")[0]
    assert main(["predict", "--checkpoint", str(trained_ckpt), str(good), "--output", str(out)]) == 2
    assert message in capsys.readouterr().err and out.read_text() == content  # left as it was


def test_resume_refuses_a_csv_with_another_header(trained_ckpt, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    out.write_text("name,class\na.png,cat\n")
    good = list_images(trained_ckpt.parents[4] / "images" / "val")[0]
    assert main(["predict", "--checkpoint", str(trained_ckpt), str(good), "--output", str(out)]) == 2
    assert "not a zoo predictions file" in capsys.readouterr().err and out.read_text().startswith("name,")


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
