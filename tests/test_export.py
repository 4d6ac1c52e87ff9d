"""`zoo export`: three formats, each self-describing, ONNX checked against PyTorch."""

from __future__ import annotations

import json
import warnings

import onnx
import onnxruntime as ort
import pytest
import torch

from zoo.checkpoint import load_checkpoint
from zoo.cli import main
from zoo.export import InferenceModule, check_images


def test_onnx_export_has_metadata_a_dynamic_batch_and_matches_pytorch(trained_ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(trained_ckpt), "--format", "onnx", "--output", str(out)]) == 0
    assert "max |diff|" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]  # one self-contained file
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    card = json.loads(meta["zoo"])
    assert card["class_names"] == ["cat", "dog", "owl"] and card["image_size"] == 16 and card["channels"] == 3
    assert len(card["mean"]) == 3 and card["max_abs_diff"] <= 1e-4
    assert json.loads((tmp_path / "m.onnx.json").read_text())["class_names"] == card["class_names"]
    model = load_checkpoint(trained_ckpt)
    session = ort.InferenceSession(str(out))
    for batch in (1, 3, 11):
        x = torch.rand(batch, 3, 16, 16)
        with torch.no_grad():
            expected = model(x).numpy()
        assert abs(session.run(None, {"image": x.numpy()})[0] - expected).max() <= 1e-4


def test_torchscript_export_round_trips_with_one_deprecation_note(trained_ckpt, tmp_path, capsys):
    out = tmp_path / "m.pt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert (
            main(
                ["export", "--checkpoint", str(trained_ckpt), "--format", "torchscript", "--output", str(out)]
            )
            == 0
        )
    err = capsys.readouterr().err
    assert err.count("PyTorch deprecates TorchScript") == 1 and "--format onnx" in err
    assert not [w for w in caught if "torch.jit" in str(w.message)]  # the note replaces torch's own warnings
    files = {"zoo.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=files)
    assert json.loads(files["zoo.json"])["class_names"] == ["cat", "dog", "owl"]
    model = load_checkpoint(trained_ckpt)
    x = check_images(model)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)


def test_safetensors_export_round_trips_through_load_checkpoint(trained_ckpt, tmp_path):
    out = tmp_path / "m.safetensors"
    assert (
        main(["export", "--checkpoint", str(trained_ckpt), "--format", "safetensors", "--output", str(out)])
        == 0
    )
    original, restored = load_checkpoint(trained_ckpt), load_checkpoint(out)
    assert restored.data_config == original.data_config
    x = check_images(original)
    with torch.no_grad():
        assert torch.equal(restored(x), original(x))


def test_default_output_path_and_no_overwrite(trained_ckpt, capsys):
    target = trained_ckpt.with_suffix(".safetensors")
    target.unlink(missing_ok=True)
    assert main(["export", "--checkpoint", str(trained_ckpt), "--format", "safetensors"]) == 0
    assert target.is_file()
    assert main(["export", "--checkpoint", str(trained_ckpt), "--format", "safetensors"]) == 2
    assert "already exists" in capsys.readouterr().err
    target.unlink()


def test_inference_module_is_plain_pytorch(trained_ckpt):
    module = InferenceModule(load_checkpoint(trained_ckpt))
    assert not any("lightning" in type(m).__module__ for m in module.modules())


@pytest.mark.parametrize("fmt", ["tflite"])
def test_unknown_format_is_rejected(trained_ckpt, fmt, capsys):
    assert main(["export", "--checkpoint", str(trained_ckpt), "--format", fmt]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_calibrated_model_exports_calibrated_in_every_format(trained_ckpt, tmp_path):
    """`zoo calibrate`'s temperature divides the logits in ONNX, TorchScript and safetensors as in the .ckpt."""
    from apps.inference import Predictor

    ckpt = torch.load(trained_ckpt, weights_only=False)
    ckpt["hyper_parameters"]["temperature"] = 2.0  # what `zoo calibrate` changes in its copy
    calibrated = tmp_path / "calibrated.ckpt"
    torch.save(ckpt, calibrated)
    model = load_checkpoint(calibrated)
    x = check_images(model)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(expected * 2, load_checkpoint(trained_ckpt)(x), atol=1e-5)  # T really is 2
    outputs = {}
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt"), ("safetensors", ".safetensors")):
        out = tmp_path / f"m{suffix}"
        assert main(["export", "--checkpoint", str(calibrated), "--format", fmt, "--output", str(out)]) == 0
        outputs[fmt] = out
    onnx_logits = ort.InferenceSession(str(outputs["onnx"])).run(None, {"image": x.numpy()})[0]
    assert abs(onnx_logits - expected.numpy()).max() <= 1e-4
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(outputs["torchscript"]))(x), expected, atol=1e-5)
        assert torch.allclose(load_checkpoint(outputs["safetensors"])(x), expected, atol=1e-6)
    image = next((trained_ckpt.parents[4] / "images" / "val" / "cat").iterdir())
    scores = [
        {s["label"]: s["score"] for s in Predictor(path).predict([image], top_k=3)[0]["topk"]}
        for path in (calibrated, outputs["onnx"], outputs["safetensors"])
    ]
    assert scores[1] == pytest.approx(scores[0], abs=1e-5) and scores[2] == pytest.approx(scores[0], abs=1e-6)
