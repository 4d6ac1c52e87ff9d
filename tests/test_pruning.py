"""The lottery ticket (zoo.pruning.LotteryTicket) through `zoo fit`: sparsity, rewinding, resume, and the ticket
predicting through `zoo predict`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST
from zoo.cli import main

CNN = str(Path(__file__).resolve().parents[1] / "configs" / "cnn.yaml")


def _zero_share(state: dict) -> float:
    """The share of zeros in the conv and linear weights (4-D and 2-D) of a checkpoint's state_dict."""
    weights = [v for k, v in state.items() if k.endswith(".weight") and v.dim() in (2, 4)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def ticket(images: Path, epochs: int, logger: str) -> list[str]:
    """`zoo fit` of a small CNN with a 2-round lottery ticket to 75 % (LotteryTicket's options follow)."""
    return ["fit", "--config", CNN, "--data.root", str(images), *FAST, "--trainer.max_epochs", str(epochs),
            "--trainer.logger", logger, "--data.batch_size", "8", "--model.channels_per_block", "[8, 16]",
            "--trainer.callbacks+=zoo.pruning.LotteryTicket", "--trainer.callbacks.sparsity", "0.75",
            "--trainer.callbacks.rounds", "2"]  # fmt: skip


@pytest.mark.slow
def test_the_ticket_reaches_its_sparsity_is_rewound_resumes_and_predicts(
    image_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    probe = tmp_path / "probe.json"
    args = [
        *ticket(image_folder, 3, "CSVLogger"),
        "--trainer.callbacks+=tests.helpers.RewindProbe", "--trainer.callbacks.out", str(probe),
        "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", "<run_dir>/epochs",
        "--trainer.callbacks.filename", "{epoch}", "--trainer.callbacks.save_top_k", "-1",
        "--trainer.callbacks.monitor", "val/loss",  # another monitor than best.ckpt: Lightning keys their states by it
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().err
    assert "lottery ticket round 2/3: pruned to 50.0%" in out and "round 3/3: pruned to 75.0%" in out
    run = tmp_path / "runs/cnn/version_0"

    # Each round but the first starts from the first epoch's weights under the new mask; training moved them.
    checked = json.loads(probe.read_text())
    assert (checked["rounds_checked"], checked["mismatches"], checked["trained_differs"]) == (2, [], True)
    assert checked["optimizer_states"] == [0, 0]  # each round starts without the old weights' momentum
    # the one-cycle schedule restarts with each round: every round's first step has the first round's lr
    first, *later = checked["round_start_lrs"]
    assert len(later) == 2 and later == [first, first] and checked["second_step_lr"] != first

    # The 75 % is ranked across the whole net (use_global_unstructured): layers end up pruned unequally.
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    layers = [_zero_share({k: v}) for k, v in last.items() if k.endswith(".weight") and v.dim() in (2, 4)]
    assert len(layers) >= 4 and max(layers) - min(layers) > 0.05, layers

    rounds = json.loads((run / "pruning.json").read_text())["rounds"]
    assert [r["sparsity"] for r in rounds] == pytest.approx([0.0, 0.5, 0.75], abs=1e-3)
    assert all(0 <= r["val_acc"] <= 1 for r in rounds)

    # best.ckpt is the best epoch of the last round: 75 % zeros, no masks left, an ordinary zoo checkpoint.
    best = torch.load(run / "checkpoints/best.ckpt", weights_only=True)
    assert not any(k.endswith(("_mask", "_orig")) for k in best["state_dict"])
    assert _zero_share(best["state_dict"]) == pytest.approx(0.75, abs=1e-3)
    assert main(["predict", "--checkpoint", str(run / "checkpoints/best.ckpt"), str(image_folder)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 30 and all(len(r["topk"]) == 3 for r in rows)

    # Resumed from the end of round 2 (after its prune), the run prunes round 3 from the saved mask and rewinds
    # to the saved first-epoch weights: the same masks and rewind point as the uninterrupted run.
    resume = [str(tmp_path / "probe2.json") if a == str(probe) else a for a in args]
    assert main([*resume, "--ckpt_path", str(run / "epochs/epoch=1.ckpt")]) == 0
    whole = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "runs/cnn/version_1/checkpoints/last.ckpt", weights_only=True)
    for key in ("masks", "rewind"):
        a, b = whole["callbacks"]["LotteryTicket"][key], resumed["callbacks"]["LotteryTicket"][key]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), key
    assert _zero_share(resumed["state_dict"]) == pytest.approx(0.75, abs=1e-3)


@pytest.mark.slow
def test_a_later_rewind_point_and_pruning_each_layer_alike(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    probe = tmp_path / "probe.json"
    args = [
        *ticket(image_folder, 6, "false"), "--trainer.callbacks.rewind_epoch", "1",
        "--trainer.callbacks.use_global_unstructured", "false",
        "--trainer.callbacks+=tests.helpers.RewindProbe", "--trainer.callbacks.out", str(probe),
        "--trainer.callbacks.round_epochs", "2", "--trainer.callbacks.rewind_epoch", "1",
    ]  # fmt: skip
    assert main(args) == 0
    # rounds of 2 epochs: the prunes at epochs 2 and 4 rewind to the weights at the start of epoch 1, not 0
    checked = json.loads(probe.read_text())
    assert (checked["rounds_checked"], checked["mismatches"], checked["trained_differs"]) == (2, [], True)
    last = torch.load(tmp_path / "runs/cnn/version_0/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    layers = [_zero_share({k: v}) for k, v in last.items() if k.endswith(".weight") and v.dim() in (2, 4)]
    assert layers == pytest.approx([0.75] * len(layers), abs=0.01)  # each layer pruned alike


def test_rounds_that_do_not_split_the_epochs_are_one_line(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", CNN, "--data.root", str(image_folder), *FAST, "--trainer.max_epochs", "4",
            "--trainer.callbacks+=zoo.pruning.LotteryTicket", "--trainer.callbacks.rounds", "2"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--trainer.max_epochs 4 does not split into 3 equal rounds" in err and "e.g. 3" in err
    assert "Traceback" not in err
    bad = [
        *args[:-3],
        "--trainer.callbacks+=zoo.pruning.LotteryTicket",
        "--trainer.callbacks.sparsity",
        "1.5",
    ]
    assert main(bad) == 2
    assert "sparsity 1.5: give the share of weights to prune" in capsys.readouterr().err
