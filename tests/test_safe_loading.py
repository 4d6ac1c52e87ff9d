"""A file whose pickle would run code is refused, without running it, by every command that reads a model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import FAST

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class Payload:
    """Unpickling this calls open(marker, "w"): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def crafted(tmp_path: Path, trained_ckpt: Path) -> tuple[Path, Path]:
    """A real zoo checkpoint with one more entry: an object whose unpickling creates `marker`."""
    marker = tmp_path / "code-ran"
    ckpt = torch.load(trained_ckpt, weights_only=True)
    ckpt["payload"] = Payload(marker)
    path = tmp_path / "runs" / "crafted" / "version_0" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    (path.parent.parent / "config.yaml").write_text((trained_ckpt.parent.parent / "config.yaml").read_text())
    return path, marker


def fit_args(image_folder: Path) -> list:
    return [
        "fit",
        "--config",
        CONFIGS / "cnn.yaml",
        "--data.root",
        image_folder,
        *FAST,
        "--trainer.logger",
        "false",
    ]


def commands(ckpt: Path, image_folder: Path, tmp_path: Path) -> dict[str, list]:
    fit = fit_args(image_folder)
    return {
        "predict": ["predict", "--checkpoint", ckpt, image_folder],
        "app": ["app", "--checkpoint", ckpt, "--port", "7999"],
        "evaluate": ["evaluate", "--checkpoint", ckpt],
        "calibrate": ["calibrate", "--checkpoint", ckpt],
        "export": ["export", "--checkpoint", ckpt, "--format", "onnx", "--output", tmp_path / "m.onnx"],
        "fit --ckpt_path": [*fit, "--trainer.max_epochs", 9, "--ckpt_path", ckpt],
        "fit --ckpt_path last": [*fit, "--trainer.max_epochs", 9, "--experiment", "crafted", "--ckpt_path", "last"],
        "validate --ckpt_path": ["validate", "--ckpt_path", ckpt],
        "fit --model.weights": [*fit[:3], "--model.class_path", "zoo.finetune.TimmClassifier", "--model.backbone",
                                "resnet10t", "--model.weights", ckpt, *fit[3:]],
    }  # fmt: skip


@pytest.mark.parametrize(
    "command",
    ["predict", "app", "evaluate", "calibrate", "export", "fit --ckpt_path", "fit --ckpt_path last",
     "validate --ckpt_path", "fit --model.weights"],
)  # fmt: skip
def test_a_pickle_that_would_run_code_is_refused_in_one_line(
    command, crafted, run_zoo, image_folder, tmp_path, capsys
):
    ckpt, marker = crafted
    capsys.readouterr()
    rc, _ = run_zoo(*commands(ckpt, image_folder, tmp_path)[command])
    err = capsys.readouterr().err
    assert not marker.exists(), "unpickling ran the file's code"
    assert rc == 2, err
    assert "pickled Python objects" in err and str(ckpt.name) in err and "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("zoo: error:")]) == 1, err


def test_a_checkpoint_from_another_zoo_version_or_not_from_zoo_is_one_line(
    trained_ckpt, run_zoo, image_folder, tmp_path, capsys
):
    ckpt = torch.load(trained_ckpt, weights_only=True)
    ckpt["zoo"]["version"] = "9.0.0"
    ckpt["hyper_parameters"]["an_option_from_the_future"] = 1
    newer = tmp_path / "newer.ckpt"
    torch.save(ckpt, newer)
    capsys.readouterr()
    assert run_zoo("predict", "--checkpoint", newer, image_folder)[0] == 2
    err = capsys.readouterr().err
    assert (
        f"{newer} was saved by zoo 9.0.0 and does not load in zoo 0.1.0" in err
        and "an_option_from_the_future" in err
    )

    del ckpt["zoo"]  # what Lightning alone writes
    lightning_only = tmp_path / "lightning.ckpt"
    torch.save(ckpt, lightning_only)
    fit = fit_args(image_folder)
    assert run_zoo(*fit, "--trainer.max_epochs", 9, "--ckpt_path", lightning_only)[0] == 2
    assert f"--ckpt_path {lightning_only} is not a zoo checkpoint" in capsys.readouterr().err
    assert run_zoo("predict", "--checkpoint", lightning_only, image_folder)[0] == 2
    assert "is not a zoo checkpoint" in capsys.readouterr().err
