"""Every user mistake ends in one `zoo: error:` line naming the option or value, exit 2, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import make_folder
from zoo.cli import main
from zoo.parse_errors import ParseError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CNN = ["fit", "--config", str(CONFIGS / "cnn.yaml")]


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("zoo: error: ")]
    assert len(errors) == 1 and len(lines) <= 2, err  # at most one info line ("data: ...") before it
    return errors[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([*CNN, "--data.roots", "x"], "--data.roots is not an option of ImageFolderDataModule; did you mean --data.root?"),
        ([*CNN, "--data.batch-size", "3"], "did you mean --data.batch_size?"),
        ([*CNN, "--model", "CNNClasifier"], "did you mean CNNClassifier?"),
        ([*CNN, "--model", "cnnn"], "choose one of mlp, cnn, timm"),
        ([*CNN, "--trainer.max_epochs", "ten"], "--trainer.max_epochs ten: expected a whole number"),
        ([*CNN, "--model.optimizer", "adamm"], "--model.optimizer adamm: choose one of"),
        (["fit", "--config", "yaml:model: cnn"], "the short name works only as `--model cnn`"),
        (["fit", "--config", "yaml:model: {class_path: CNNClassifier, init_args: {optimizer: adamm}}"],
         "--model.optimizer adamm: choose one of"),
        ([*CNN, "--data.augment", "heavy"], "--data.augment heavy: choose one of none, light, standard"),
        ([*CNN, "--model.lr", "fast"], "--model.lr fast: expected a number or 'auto'"),
        ([*CNN, "--max_epochs", "3"], "unknown option --max_epochs; did you mean --trainer.max_epochs?"),
        (["fit", "--config", "nope.yaml"], "nope.yaml: no such file; the recipes are configs/cnn.yaml"),
        (["fit", str(CONFIGS / "cnn.yaml")], "a config file is passed with --config"),
        (["lr-find", "--data.rot", "x"], "did you mean --data.root?"),
        (["validate", "--data.roots", "x"], "did you mean --data.root?"),
        (["predict", "--checkpoint", "x.ckpt", "--top-k", "0", "a.png"], "--top-k: must be at least 1, got 0"),
        (["predict", "--checkpoint", "x.ckpt", "--top_k=0", "a.png"], "--top-k: must be at least 1, got 0"),  # fit's spelling
        (["batch-size-find", "--max_batch_size", "abc"], "--max_batch_size: expected a whole number, got 'abc'"),
        (["batch-size-find", "--max_batch_size=0"], "--max_batch_size: must be at least 1, got 0"),
        (["export", "--checkpoint", "x.ckpt", "--format", "tflite"], "invalid choice: 'tflite'"),
        (["fti"], "unknown verb 'fti'; did you mean fit?"),
        ([*CNN, "--lr", "0.1"], "unknown option --lr; did you mean --model.lr?"),
        ([*CNN, "--epochs", "3"], "zoo's is --trainer.max_epochs"),
        ([*CNN, "--trainer.bogus", "1"], "unknown option --trainer.bogus"),
        ([*CNN, "--model.lr", "-1"], "--model.lr must be above 0"),
        ([*CNN, "--model.dropout", "1.5"], "--model.dropout must be in [0, 1)"),
        ([*CNN, "--model.label_smoothing", "2"], "--model.label_smoothing must be in [0, 1)"),
        ([*CNN, "--data.num_workers", "-1"], "--data.num_workers must be 0 or more"),
        ([*CNN, "--trainer.accelerator", "gpuu"], "invalid accelerator name"),
        (["app", "--checkpoint", "x.ckpt", "--port", "99999"], "ports go from 1 to 65535"),
    ],
)  # fmt: skip
def test_mistake_is_one_line_with_the_closest_match(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if args[-1].startswith("yaml:"):  # the mistake inside a config file
        (tmp_path / "my.yaml").write_text(args[-1].removeprefix("yaml:") + "\n")
        args = [*args[:-1], "my.yaml"]
    rc = main(args)
    assert rc == 2
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "runs").exists()  # a failed start leaves nothing behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_accelerator_without_a_gpu(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([*CNN, "--trainer.accelerator", "gpu"]) == 2
    assert "no usable GPU" in one_error_line(capsys)
    fsdp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "fsdp"]
    assert main([*CNN, *fsdp]) == 2
    assert "The strategy `fsdp` requires a GPU accelerator" in one_error_line(capsys)


def test_debug_flag_and_variable_show_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ParseError):
        main(["--debug", *CNN, "--data.roots", "x"])
    assert "Option 'roots' is not accepted" in capsys.readouterr().err  # jsonargparse's own message
    monkeypatch.setenv("ZOO_DEBUG", "1")
    with pytest.raises(ParseError):
        main([*CNN, "--data.roots", "x"])


def test_short_model_names(capsys):
    assert main(["fit", "--model", "timm", "--print_config"]) == 0
    assert "class_path: zoo.finetune.TimmClassifier" in capsys.readouterr().out


def test_export_refuses_outputs_it_cannot_write_and_exported_files_as_checkpoints(
    trained_ckpt, tmp_path, capsys
):
    (tmp_path / "a_file").write_text("mine")
    assert main(["export", "--checkpoint", str(trained_ckpt), "--format", "onnx",
                 "--output", str(tmp_path / "a_file" / "m.onnx")]) == 2  # fmt: skip
    assert "a_file is a file, not a folder" in one_error_line(capsys)
    assert (tmp_path / "a_file").read_text() == "mine"
    onnx = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(trained_ckpt), "--format", "onnx", "--output", str(onnx)]) == 0
    capsys.readouterr()
    assert (
        main(["export", "--checkpoint", str(onnx), "--format", "onnx", "--output", str(tmp_path / "n.onnx")])
        == 2
    )
    assert "is an exported model, not a checkpoint" in one_error_line(capsys)


def test_a_pickled_whole_model_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pth")  # a whole module, not a state dict
    rc = main(["fit", "--model", "timm", "--model.backbone", "resnet10t", "--model.weights", "whole.pth",
               "--data.image_size", "32", "--trainer.logger", "false", "--trainer.max_epochs", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "holds pickled Python objects" in err and "model.state_dict()" in err
    assert not (tmp_path / "runs").exists()  # the failed start left no run folder behind
    rc = main(["export", "--checkpoint", "whole.pth", "--format", "onnx"])
    assert rc == 2 and "holds pickled Python objects" in one_error_line(capsys)


def test_app_on_a_busy_port(trained_ckpt, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["app", "--checkpoint", str(trained_ckpt), "--port", str(port)]) == 2
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in one_error_line(capsys)


def test_zoo_models_lists_the_families_in_a_fresh_process():
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "models"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    assert all(f"  {family} " in proc.stdout for family in ("mlp", "cnn", "timm"))


def test_a_finished_run_and_a_missing_test_split_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = make_folder(tmp_path / "images", n=8)
    fit = [
        "fit",
        *CNN[1:],
        "--data.root",
        str(images),
        "--trainer.max_epochs",
        "1",
        "--trainer.logger",
        "false",
    ]
    assert main(fit) == 0
    last = next(Path("runs").rglob("last.ckpt"))
    capsys.readouterr()
    assert main([*fit, "--ckpt_path", str(last)]) == 2
    assert "has already trained 1 of --trainer.max_epochs 1" in one_error_line(capsys)
    assert main(["test", "--ckpt_path", str(last)]) == 2
    assert "for a test set lay it out as train/<class>/" in one_error_line(capsys)
    assert sorted(p.name for p in Path("runs/cnn").iterdir()) == ["version_0"]  # nothing left by either
    assert not (last.parent.parent / "test").exists()
