"""Course techniques that Lightning implements, reachable from `zoo fit` and applied: clipping, accumulation,
early stopping, EMA of the weights."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import FAST
from zoo.scratch import CNNClassifier

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class GradNormProbe(L.Callback):
    """Records the gradient norm and the largest gradient element of each optimiser step (after Lightning's
    clipping)."""

    norms: list[float] = []
    largest: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = [p for p in pl_module.parameters() if p.requires_grad]

        def record(*_: object) -> None:
            grads = [p.grad for p in params if p.grad is not None]
            GradNormProbe.norms.append(
                float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            )
            GradNormProbe.largest.append(max(float(g.abs().max()) for g in grads))

        trainer.optimizers[0].register_step_post_hook(
            record
        )  # grads of the step, clipped (closure runs inside)


def fit(run_zoo, folder, *extra):
    return run_zoo("fit", "--config", CONFIGS / "cnn.yaml", "--data.root", folder, "--data.batch_size", 4,
                   *FAST, "--trainer.logger", "false", *extra)  # fmt: skip


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_bounds_every_step(run_zoo, image_folder, algorithm):
    GradNormProbe.norms, GradNormProbe.largest = [], []
    rc, _ = fit(run_zoo, image_folder, "--model.lr", 0.05, "--trainer.gradient_clip_val", 0.001,
                "--trainer.gradient_clip_algorithm", algorithm, "--trainer.callbacks+=tests.test_toolbox.GradNormProbe")  # fmt: skip
    assert rc == 0 and len(GradNormProbe.norms) == 6
    if algorithm == "norm":  # the whole gradient rescaled to norm 0.001
        assert max(GradNormProbe.norms) <= 0.001 * 1.001
    else:  # each element cut to [-0.001, 0.001]; many are at the bound, so the norm is well above it
        assert max(GradNormProbe.largest) == pytest.approx(0.001) and min(GradNormProbe.norms) > 0.001 * 1.5


def test_gradient_accumulation_steps_once_per_k_batches(run_zoo, image_folder):
    rc, runs = fit(run_zoo, image_folder, "--trainer.accumulate_grad_batches", 3)
    assert rc == 0
    ckpt = torch.load(next(runs.rglob("last.ckpt")), weights_only=False)
    assert ckpt["global_step"] == 2  # 6 batches of 4 images, one optimiser step per 3


def test_early_stopping_on_val_acc_stops_the_run_and_says_so(run_zoo, image_folder, capsys):
    rc, _ = fit(run_zoo, image_folder, "--trainer.max_epochs", 5, "--trainer.callbacks+=EarlyStopping",
                "--trainer.callbacks.monitor", "val/acc", "--trainer.callbacks.mode", "max",
                "--trainer.callbacks.patience", 0, "--trainer.callbacks.min_delta", 1.0)  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0 and "epoch 2/5" in err and "epoch 3/5" not in err
    assert "stopped early" in err


class EmaProbe(L.Callback):
    """Keeps its own exponential moving average of the net's parameters, updated after every optimiser step:
    the first step's weights, then decay * average + (1 - decay) * weights."""

    average: dict[str, torch.Tensor] | None = None

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        weights = {f"net.{k}": v.detach().clone() for k, v in pl_module.net.named_parameters()}
        if EmaProbe.average is None:
            EmaProbe.average = weights
        else:
            for k, v in weights.items():
                EmaProbe.average[k].mul_(self.decay).add_(v, alpha=1 - self.decay)


def test_ema_of_the_weights_is_what_the_checkpoint_holds(run_zoo, image_folder):
    EmaProbe.average = None
    rc, runs = fit(run_zoo, image_folder, "--trainer.max_epochs", 2, "--trainer.callbacks+=EMAWeightAveraging",
                   "--trainer.callbacks.decay", 0.5, "--trainer.callbacks+=tests.test_toolbox.EmaProbe",
                   "--trainer.callbacks.decay", 0.5)  # fmt: skip
    assert rc == 0
    ckpt = torch.load(next(runs.rglob("last.ckpt")), weights_only=False)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert EmaProbe.average is not None and EmaProbe.average.keys() <= averaged.keys()
    for key, expected in EmaProbe.average.items():  # the average of 12 steps' weights, as the probe made it
        assert torch.allclose(averaged[key], expected, atol=1e-6), key
    key = next(k for k in raw if k.startswith("net.") and k.endswith("weight"))
    assert not torch.equal(averaged[key], raw[key])  # the EMA, not the last step's weights


class EpochLrProbe(L.Callback):
    """The lr of each epoch's first step."""

    lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            EpochLrProbe.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_swa_averages_the_later_epochs_and_saves_the_average(run_zoo, image_folder):
    EpochLrProbe.lrs = []
    rc, runs = fit(run_zoo, image_folder, "--trainer.max_epochs", 4, "--trainer.callbacks+=StochasticWeightAveraging",
                   "--trainer.callbacks.swa_lrs", 0.001, "--trainer.callbacks.swa_epoch_start", 0.5,
                   "--trainer.callbacks.annealing_epochs", 1, "--model.lr", 0.02,
                   "--trainer.callbacks+=tests.test_toolbox.EpochLrProbe")  # fmt: skip
    assert rc == 0
    ckpt = torch.load(next(runs.rglob("last.ckpt")), weights_only=False)
    swa = ckpt["callbacks"]["StochasticWeightAveraging"]
    assert swa["n_averaged"] >= 2  # epochs 3 and 4 at least went into the average
    weights = [k for k in ckpt["state_dict"] if k.startswith("net.") and k.endswith("weight")]
    assert weights and all(torch.equal(ckpt["state_dict"][k], swa["average_model_state"][k]) for k in weights)
    # From epoch 3 (index 2) SWA's own schedule replaces zoo's one-cycle and holds swa_lrs. A 5th epoch is SWA's
    # pass over the training images that recomputes the averaged net's batch-norm statistics.
    assert len(EpochLrProbe.lrs) == 5 and EpochLrProbe.lrs[2:4] == pytest.approx([0.001, 0.001])
    assert (
        EpochLrProbe.lrs[0] < EpochLrProbe.lrs[1] != pytest.approx(0.001)
    )  # before: zoo's one-cycle warming up
    # the run's config.yaml (what a resume line reuses) holds SWA's device and loads again
    from zoo.lightning_cli import parse_config

    config = next(runs.rglob("config.yaml"))
    assert "Unable to serialize" not in config.read_text()
    swa_config = next(c for c in parse_config("fit", ["--config", str(config)]).trainer.callbacks
                      if c.class_path.endswith("StochasticWeightAveraging"))  # fmt: skip
    assert str(swa_config.init_args.device) == "cpu"


class OutOfMemoryAbove8(CNNClassifier):
    """The CNN, failing a training step on a batch of more than 8 images as the CPU allocator does when memory
    runs out (Lightning's finder turns callbacks off while it searches, so the model raises). Records the batch
    sizes tried."""

    tried: list[int] = []

    def training_step(self, batch, batch_idx):
        OutOfMemoryAbove8.tried.append(len(batch[1]))
        if len(batch[1]) > 8:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return super().training_step(batch, batch_idx)


def test_batch_size_finder_prints_and_saves_its_result(run_zoo, image_folder, capsys):
    args = ["batch-size-find", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder,
            "--data.batch_size", 2, "--data.num_workers", 0, "--trainer.logger", "false"]  # fmt: skip
    rc, runs = run_zoo(*args)
    assert rc == 0
    printed = int(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads(next(runs.rglob("batch_size.json")).read_text())
    # nothing runs out of memory here: doubling from 2 stops at the 24 training images
    assert printed == saved["batch_size"] == 24 and saved["start"] == 2


def test_batch_size_finder_stops_below_the_size_that_runs_out_of_memory(run_zoo, image_folder, capsys):
    OutOfMemoryAbove8.tried = []
    rc, runs = run_zoo("batch-size-find", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder,
                       "--data.batch_size", 2, "--data.num_workers", 0, "--trainer.logger", "false",
                       "--model.class_path", "tests.test_toolbox.OutOfMemoryAbove8")  # fmt: skip
    assert rc == 0
    assert int(capsys.readouterr().out.strip().splitlines()[-1]) == 8  # 2, 4, 8 fit; 16 ran out of memory
    assert json.loads(next(runs.rglob("batch_size.json")).read_text())["batch_size"] == 8
    assert {2, 4, 8, 16} <= set(OutOfMemoryAbove8.tried)


def test_a_nan_loss_stops_training_with_one_line(run_zoo, image_folder, capsys):
    rc, runs = fit(run_zoo, image_folder, "--trainer.max_epochs", 3, "--model.lr", 1e6, "--model.optimizer", "sgd",
                   "--model.scheduler", "constant")  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "the training loss became nan" in err and "lower the learning rate" in err, err[-500:]
    assert "Traceback" not in err


def test_albumentations_is_told_not_to_call_home():
    import os

    import zoo  # noqa: F401

    assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "1"
