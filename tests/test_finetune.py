"""Fine-tuning: local weights, the freeze -> unfreeze schedule, and that it survives a resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from tests.conftest import FAST, only_run_dir
from zoo.errors import ZooError
from zoo.finetune import TimmClassifier

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["--model.backbone", "resnet10t", "--model.pretrained", "false", "--data.image_size", 32,
        "--trainer.logger", "false", "--data.num_workers", 0, "--trainer.enable_model_summary", "false",
        "--trainer.log_every_n_steps", 1]  # fmt: skip
CLASSES = {"class_names": ["a", "b", "c"], "image_size": 32, "channels": 3}


def probe(path: Path) -> list[str]:
    return ["--trainer.callbacks+=tests.helpers.FreezeProbe", f"--trainer.callbacks.out={path}"]


def test_freeze_then_unfreeze_and_frozen_batchnorm_stays_in_eval(run_zoo, image_folder, tmp_path):
    out = tmp_path / "probe.json"
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / "resnet18_finetune.yaml", "--data.root", image_folder, *TINY,
        "--trainer.max_epochs", 2, "--model.freeze_epochs", 1, *probe(out),
    )  # fmt: skip
    assert rc == 0
    epochs = json.loads(out.read_text())
    assert epochs[0] == {"epoch": 0, "requires_grad": False, "bn_training": False, "backbone_changed": False}
    assert epochs[1] == {"epoch": 1, "requires_grad": True, "bn_training": True, "backbone_changed": True}


@pytest.mark.parametrize(("freeze_epochs", "expect_frozen"), [(1, False), (2, True)])
def test_schedule_survives_resume(run_zoo, image_folder, tmp_path, freeze_epochs, expect_frozen):
    """Resume after epoch 0 into epoch 1: unfrozen if freeze_epochs=1, still frozen if 2."""
    common = ["--config", CONFIGS / "resnet18_finetune.yaml", "--data.root", image_folder, *TINY,
              "--model.freeze_epochs", freeze_epochs]  # fmt: skip
    assert run_zoo("fit", *common, "--trainer.max_epochs", 1)[0] == 0
    last = next(Path("runs").rglob("last.ckpt"))
    out = tmp_path / "probe.json"
    rc, runs = run_zoo("fit", *common, "--trainer.max_epochs", 3, "--ckpt_path", last, *probe(out))
    assert rc == 0
    epochs = json.loads(out.read_text())
    assert epochs[0]["epoch"] == 1  # resumed, not restarted
    assert epochs[0]["requires_grad"] is not expect_frozen
    assert epochs[0]["bn_training"] is not expect_frozen
    assert epochs[0]["backbone_changed"] is not expect_frozen
    assert epochs[-1]["requires_grad"] and epochs[-1]["epoch"] == 2  # max_epochs grew from 1 to 3


def test_backbone_learning_rate_multiplier_reaches_the_optimizer():
    from types import SimpleNamespace

    model = TimmClassifier(
        backbone="resnet10t", pretrained=False, backbone_lr_mult=0.1, lr=0.01, scheduler="constant", **CLASSES
    )
    model._trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=1)
    optimizer = model.configure_optimizers()
    head = {id(p) for p in model.net.get_classifier().parameters()}
    for group in optimizer.param_groups:
        in_head = {id(p) for p in group["params"]} <= head
        assert group["lr"] == pytest.approx(0.01 if in_head else 0.001)
        assert group["weight_decay"] == (0.0 if all(p.ndim <= 1 for p in group["params"]) else 0.01)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.net.parameters()))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_load_with_a_new_head_and_adapted_input(tmp_path, suffix, capsys):
    source = timm.create_model("resnet10t", num_classes=1000)  # like ImageNet weights: 1000-class head, RGB
    state = source.state_dict()
    path = tmp_path / f"w{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = TimmClassifier(
        backbone="resnet10t", pretrained=True, weights=str(path), **{**CLASSES, "channels": 1}
    )
    model.prepare_start(None)  # weights load when a fit starts, not in __init__
    report = capsys.readouterr().err
    assert report.split("shape mismatch (re-initialised): ")[1].splitlines()[0].strip() in (
        "fc.weight, fc.bias",
        "fc.bias, fc.weight",
    )
    assert "missing: none; unexpected: none" in report
    stem = [k for k in state if k.endswith("conv1.0.weight")][0]
    assert torch.allclose(model.net.state_dict()[stem], state[stem].sum(dim=1, keepdim=True), atol=1e-5)
    layer = "layer1.0.conv1.weight"
    assert torch.equal(model.net.state_dict()[layer], state[layer])


def test_zoo_checkpoint_as_weights_resets_a_head_for_other_classes(run_zoo, image_folder, tmp_path, capsys):
    rc, _ = run_zoo(
        "fit", "--config", CONFIGS / "resnet18_finetune.yaml", "--data.root", image_folder, *TINY,
        "--trainer.max_epochs", 1,
    )  # fmt: skip
    ckpt = next(Path("runs").rglob("best.ckpt"))
    capsys.readouterr()
    same = TimmClassifier(
        backbone="resnet10t", weights=str(ckpt), **{**CLASSES, "class_names": ["cat", "dog", "owl"]}
    )
    same.prepare_start(None)
    assert "shape mismatch (re-initialised): none" in capsys.readouterr().err
    other = TimmClassifier(
        backbone="resnet10t", weights=str(ckpt), **{**CLASSES, "class_names": ["x", "y", "z"]}
    )
    other.prepare_start(None)
    assert "re-initialised): none" not in capsys.readouterr().err
    trained = torch.load(ckpt, weights_only=True)["state_dict"]["net.fc.weight"]
    assert torch.equal(same.net.fc.weight, trained) and not torch.equal(other.net.fc.weight, trained)


def test_evaluating_a_finetuned_checkpoint_needs_neither_network_nor_the_starting_weights(
    run_zoo, image_folder, tmp_path, monkeypatch, capsys
):
    import zoo.pretrained

    weights = tmp_path / "start.safetensors"
    save_file(timm.create_model("resnet10t", num_classes=1000).state_dict(), str(weights))
    args = ["--config", CONFIGS / "resnet18_finetune.yaml", "--data.root", image_folder, *TINY]
    assert run_zoo("fit", *args, "--model.weights", weights, "--trainer.max_epochs", 1)[0] == 0
    ckpt = next(Path("runs").rglob("best.ckpt"))
    weights.unlink()  # the starting weights are gone...
    monkeypatch.setattr(zoo.pretrained, "hub_reachable", lambda *a, **k: False)  # ...and so is the network
    capsys.readouterr()
    assert run_zoo("validate", *args, "--model.pretrained", "true", "--ckpt_path", ckpt)[0] == 0
    assert "val/acc" in capsys.readouterr().out


def test_best_score_survives_a_resume(run_zoo, image_folder):
    args = [
        "--config",
        CONFIGS / "resnet18_finetune.yaml",
        "--data.root",
        image_folder,
        *TINY,
        "--trainer.logger",
        "CSVLogger",
    ]
    assert run_zoo("fit", *args, "--trainer.max_epochs", 2)[0] == 0
    first = only_run_dir(Path("runs"), "resnet18_finetune")
    best_before = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"][
        "val_acc_best.max_value"
    ]
    assert (
        run_zoo("fit", *args, "--trainer.max_epochs", 3, "--ckpt_path", first / "checkpoints" / "last.ckpt")[
            0
        ]
        == 0
    )
    resumed = only_run_dir(Path("runs"), "resnet18_finetune")
    with open(resumed / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/acc_best")]
    assert float(rows[-1]["val/acc_best"]) >= float(best_before) - 1e-6


def test_weights_path_errors_are_user_errors(run_zoo, image_folder, tmp_path, capsys):
    # the file is read when a fit starts; `zoo fit` checks the path before anything else runs
    missing = TimmClassifier(backbone="resnet10t", weights=str(tmp_path / "nope.pth"), **CLASSES)
    with pytest.raises(ZooError, match="not found"):
        missing.prepare_start(None)
    (tmp_path / "x.txt").write_text("x")
    args = ["fit", "--config", CONFIGS / "resnet18_finetune.yaml", "--data.root", image_folder, *TINY]
    assert run_zoo(*args, "--model.weights", tmp_path / "x.txt")[0] == 2
    assert "unsupported file type" in capsys.readouterr().err
    assert run_zoo(*args, "--model.weights", tmp_path / "nope.pth")[0] == 2
    assert "not found" in capsys.readouterr().err


def test_pretrained_without_network_fails_fast_with_a_pointer_to_weights(
    run_zoo, image_folder, monkeypatch, capsys
):
    import huggingface_hub.constants

    import zoo.pretrained

    # as on a machine with no network
    monkeypatch.setattr(zoo.pretrained, "hub_reachable", lambda *a, **k: False)
    # huggingface_hub reads HF_HOME once, at import: point its cache constant at an empty folder
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(Path.cwd() / "empty_hf_cache"))
    rc, _ = run_zoo("fit", "--config", CONFIGS / "resnet18_finetune.yaml", "--data.root", image_folder, *FAST)
    assert rc == 2
    err = capsys.readouterr().err
    assert "no pretrained weights for 'resnet18'" in err and "--model.weights" in err


def test_warns_when_the_data_is_not_normalised_as_the_pretrained_weights_expect():
    import warnings

    odd = TimmClassifier(backbone="resnet10t", pretrained=False, **CLASSES)  # default mean/std 0.5
    with pytest.warns(UserWarning, match=r"pretrained with mean=\[0.485, 0.456, 0.406\]"):
        odd._check_normalisation()
    imagenet = TimmClassifier(
        backbone="resnet10t",
        pretrained=False,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        **CLASSES,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imagenet._check_normalisation()


def test_last_checkpoint_is_the_last_epoch_even_without_improvement(run_zoo, image_folder):
    # lr 1e-9: val/acc (almost surely) stops improving after the first epoch
    args = ["--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST, "--trainer.logger", "false"]
    assert run_zoo("fit", *args, "--trainer.max_epochs", 3, "--model.lr", 1e-9)[0] == 0
    checkpoints = only_run_dir(Path("runs"), "cnn") / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    best = torch.load(checkpoints / "best.ckpt", weights_only=True)
    assert last["epoch"] == 2  # Lightning's save_last would leave it at the best epoch
    assert best["epoch"] == 0 or best["global_step"] <= last["global_step"]
