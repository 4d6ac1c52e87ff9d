"""Every optimiser of the course, reachable from the CLI, built with the right class, groups and settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import FAST
from zoo.scratch import CNNClassifier

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPECTED = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "nadam": torch.optim.NAdam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_optimizer_class_groups_and_decay(name):
    model = CNNClassifier(class_names=["a", "b"], image_size=16, channels=1, channels_per_block=(4,),
                          optimizer=name, scheduler="constant", lr=0.02, weight_decay=0.05, momentum=0.8)  # fmt: skip
    opt = model.configure_optimizers()
    assert type(opt) is EXPECTED[name]
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, 0.05]
    names = {id(p): n for n, p in model.named_parameters()}
    undecayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert undecayed | decayed == set(names.values()) and not undecayed & decayed
    # no decay on biases and norm weights; decay on conv and linear weights
    assert {n for n in undecayed if n.endswith(".bias")} and all(
        model.get_parameter(n).ndim <= 1 for n in undecayed
    )
    norm_layers = (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d, torch.nn.LayerNorm, torch.nn.GroupNorm)
    norms = {f"{m}.weight" for m, mod in model.named_modules() if isinstance(mod, norm_layers)}
    assert norms and norms <= undecayed
    assert decayed and all(model.get_parameter(n).ndim > 1 for n in decayed)
    assert all(g["lr"] == pytest.approx(0.02) for g in opt.param_groups)
    if name in ("sgd", "rmsprop"):
        assert opt.defaults["momentum"] == 0.8
    if name == "sgd":
        assert opt.defaults["nesterov"] is True
        model.hparams.nesterov = False
        assert model.configure_optimizers().defaults["nesterov"] is False


def test_optimizer_from_the_cli(run_zoo, image_folder):
    rc, runs = run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, "--model.optimizer",
                       "rmsprop", "--model.lr", "0.001", *FAST, "--trainer.logger", "false")  # fmt: skip
    assert rc == 0
    ckpt = torch.load(next(runs.rglob("last.ckpt")), weights_only=True)
    assert ckpt["hyper_parameters"]["optimizer"] == "rmsprop"
    state = ckpt["optimizer_states"][0]["state"]
    assert any("square_avg" in s for s in state.values())  # RMSprop's own state, not Adam's exp_avg_sq
