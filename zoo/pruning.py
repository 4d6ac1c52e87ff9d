"""The lottery ticket: iterative magnitude pruning with rewinding, on Lightning's ModelPruning."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ModelPruning
from torch import nn
from torch.nn.utils import prune

from zoo.console import console
from zoo.errors import ZooError


class LotteryTicket(ModelPruning):
    """Iterative magnitude pruning with weight rewinding (Frankle & Carbin 2019; Frankle et al. 2020).

    The fit is cut into `rounds + 1` rounds of equal length (max_epochs / (rounds + 1) epochs). At the start of
    each round after the first, the smallest-magnitude conv and linear weights, ranked across the whole net, are
    pruned so that the sparsity climbs geometrically to `sparsity` in the last round; the surviving weights,
    and every other parameter and buffer of the net, are rewound to their values at the start of epoch
    `rewind_epoch` (0: the weights the fit started from), the optimiser's state is cleared and the lr schedule
    restarts. The last round trains the final ticket.

    Lightning's ModelPruning does the pruning (torch.nn.utils.prune) and saves checkpoints with the masks
    applied, so they load as ordinary zoo checkpoints. zoo replaces its rewinding, which resets only the
    pruned tensors to their values when fitting began: here the whole net goes back to `rewind_epoch`, and the
    masks, the rewind point and the rounds done are saved in checkpoints, so a resumed run goes on exactly.

    In each round `best.ckpt` starts over, so at the end it is the best epoch at the final sparsity; the run
    folder gets `pruning.json` with each round's sparsity and best val/acc.

    Args:
        sparsity: the share of conv and linear weights that are zero in the last round (0 < sparsity < 1).
        rounds: how many times to prune (and rewind); each prunes 1 - (1 - sparsity) ** (1 / rounds) of
            the weights left.
        rewind_epoch: rewind to the weights at the start of this epoch (0-based, earlier than the first prune).
        pruning_fn: torch's pruning method: l1_unstructured (magnitude) or random_unstructured (a control).
        use_global_unstructured: rank the weights of all layers together (True) or prune each layer alike.
    """

    def __init__(
        self,
        sparsity: float = 0.8,
        rounds: int = 3,
        rewind_epoch: int = 0,
        pruning_fn: str = "l1_unstructured",
        use_global_unstructured: bool = True,
    ) -> None:
        if not 0 < sparsity < 1:
            raise ZooError(f"LotteryTicket sparsity {sparsity}: give the share of weights to prune, e.g. 0.8")
        if rounds < 1:
            raise ZooError(f"LotteryTicket rounds {rounds}: prune at least once (rounds >= 1)")
        super().__init__(
            pruning_fn,
            parameter_names=["weight"],
            use_global_unstructured=use_global_unstructured,
            amount=self._amount,
            make_pruning_permanent=True,
            use_lottery_ticket_hypothesis=True,
        )
        self.sparsity, self.rounds, self.rewind_epoch = sparsity, rounds, rewind_epoch
        self.per_round = 1 - (1 - sparsity) ** (1 / rounds)  # of the weights still there
        self.round_epochs = 0  # set in setup from max_epochs
        self.done = 0  # rounds pruned so far
        self.rewind: dict[str, torch.Tensor] | None = None  # the net's state at rewind_epoch
        self.masks: dict[str, torch.Tensor] = {}  # restored from a checkpoint, applied when training starts
        self.history: list[dict[str, Any]] = []  # one entry a round: sparsity, best val/acc

    # --- which weights, when, how much -----------------------------------------------------------
    def filter_parameters_to_prune(self, parameters_to_prune: Any = ()) -> Any:
        """Conv and linear weights only: biases and norm weights are few, and pruning them breaks the net."""
        return [(m, n) for m, n in parameters_to_prune if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]

    def _amount(self, epoch: int) -> float:
        """Pruned at the start of epoch `epoch` (0 when it starts no new round)."""
        starts = self.round_epochs and epoch % self.round_epochs == 0
        return self.per_round if starts and self.done < epoch // self.round_epochs <= self.rounds else 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        epochs = trainer.max_epochs or 0
        if epochs <= 0 or epochs % (self.rounds + 1):
            raise ZooError(
                f"LotteryTicket: --trainer.max_epochs {epochs} does not split into {self.rounds + 1} equal rounds "
                f"(rounds {self.rounds} + the final training); use a multiple of {self.rounds + 1}, e.g. "
                f"{(self.rounds + 1) * max(1, round(epochs / (self.rounds + 1)))}"
            )
        self.round_epochs = epochs // (self.rounds + 1)
        if self.rewind_epoch >= self.round_epochs:
            raise ZooError(
                f"LotteryTicket rewind_epoch {self.rewind_epoch} must come before the first prune, at epoch "
                f"{self.round_epochs}: use 0..{self.round_epochs - 1}"
            )
        super().setup(trainer, pl_module, stage)
        self._module = pl_module
        self._original_layers = None  # Lightning's copies at setup are not used (see apply_lottery_ticket...)
        # The lr schedule restarts with each round: ImageClassifier.configure_optimizers reads this.
        pl_module.schedule_rounds = self.rounds + 1

    # --- the rounds --------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for key, module, name in self._prunable():  # a resumed run: the masks its checkpoint saved
            mask = self.masks.get(key)
            if mask is not None and not prune.is_pruned(module):
                prune.custom_from_mask(module, name, mask.to(getattr(module, name).device))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.rewind is None and epoch >= self.rewind_epoch:
            self.rewind = {k: v.detach().cpu().clone() for k, v in _plain_state(pl_module.net).items()}
        if self._amount(epoch):
            self._run_pruning(epoch)  # Lightning's: prune, then apply_lottery_ticket_hypothesis
            self.done = epoch // self.round_epochs
            for optimizer in trainer.optimizers:
                optimizer.state.clear()  # momentum of the weights before the rewind would push the rewound ones
            _restart_best(trainer, pl_module)
            console.print(
                f"lottery ticket round {self.done + 1}/{self.rounds + 1}: pruned to "
                f"{self.current_sparsity():.1%} of the conv/linear weights, rewound to epoch {self.rewind_epoch}"
            )

    def apply_pruning(self, amount: float) -> None:
        with _contiguous(self._net):  # torch's global pruning flattens weights with .view(-1)
            super().apply_pruning(amount)

    def apply_lottery_ticket_hypothesis(self) -> None:
        """Rewind the whole net (weights under their masks, biases, norms and their statistics)."""
        assert self.rewind is not None
        for name, tensor in _plain_state(self._net).items():
            with torch.no_grad():
                tensor.copy_(self.rewind[name].to(tensor.device))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("prune/sparsity", self.current_sparsity(), on_epoch=True, on_step=False)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # ModelPruning would prune here; zoo prunes when a round starts

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if trainer.sanity_checking or acc is None or not self.round_epochs:
            return
        index = trainer.current_epoch // self.round_epochs
        while len(self.history) <= index:
            self.history.append(
                {"round": len(self.history), "sparsity": None, "val_acc": None, "epoch": None}
            )
        entry = self.history[index]
        entry["sparsity"] = round(self.current_sparsity(), 4)
        if entry["val_acc"] is None or float(acc) > entry["val_acc"]:
            entry.update(val_acc=round(float(acc), 4), epoch=trainer.current_epoch + 1)
        if trainer.is_global_zero:
            _write_json(Path(trainer.default_root_dir) / "pruning.json", self.summary())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)  # the masks become zeros in the weights
        if self.history:
            console.print("[bold]lottery ticket[/] round  sparsity  best val/acc")
            for entry in self.history:
                acc = "-" if entry["val_acc"] is None else f"{entry['val_acc']:.4f}"
                console.print(
                    f"                {entry['round'] + 1:>5}  {entry['sparsity']:>8.1%}  {acc:>12}"
                )

    def current_sparsity(self) -> float:
        """The share of the prunable weights that are zero now."""
        zeros = total = 0
        for module, name in self._parameters_to_prune:
            mask = getattr(module, f"{name}_mask", None)
            weight = getattr(module, name)
            zeros += int((mask == 0).sum()) if mask is not None else int((weight == 0).sum())
            total += weight.numel()
        return zeros / max(1, total)

    @property
    def scored_from_epoch(self) -> int:
        """The first epoch (1-based) of the current round: the run summary's best epoch is one of this round's."""
        return self.done * self.round_epochs + 1

    def summary(self) -> dict[str, Any]:
        return {
            "target_sparsity": self.sparsity,
            "rounds": self.history,
            "rewind_epoch": self.rewind_epoch,
            "epochs_per_round": self.round_epochs,
        }

    # --- checkpoints ---------------------------------------------------------------------------------
    @property
    def _net(self) -> nn.Module:
        return self._module.net

    def _prunable(self) -> list[tuple[str, nn.Module, str]]:
        """(state_dict-style key, module, parameter name) of each pruned tensor; none before setup."""
        if not hasattr(self, "_module"):
            return []
        names = {id(m): name for name, m in self._module.named_modules()}
        return [(f"{names[id(m)]}.{n}", m, n) for m, n in self._parameters_to_prune]

    def state_dict(self) -> dict[str, Any]:
        masks = {
            key: getattr(m, f"{n}_mask").bool().cpu()
            for key, m, n in self._prunable()
            if prune.is_pruned(m) and hasattr(m, f"{n}_mask")
        }
        return {"done": self.done, "rewind": self.rewind, "masks": masks, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = state_dict.get("done", 0)
        self.rewind = state_dict.get("rewind")
        self.masks = state_dict.get("masks", {})
        self.history = state_dict.get("history", [])


def _plain_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The net's parameters and buffers by their unpruned names (`weight_orig` as `weight`, masks left out)."""
    state = {}
    for name, tensor in [*net.named_parameters(), *net.named_buffers()]:
        if name.endswith("_mask"):
            continue
        state[name.removesuffix("_orig")] = tensor.data
    return state


@contextmanager
def _contiguous(net: nn.Module) -> Iterator[None]:
    """The net in torch's default memory format for a while (zoo trains conv nets channels-last)."""
    channels_last = any(p.dim() == 4 and not p.is_contiguous() for p in net.parameters())
    if channels_last:
        net.to(memory_format=torch.contiguous_format)
        _apply_masks(net)
    yield
    if channels_last:
        net.to(memory_format=torch.channels_last)
        _apply_masks(net)


def _apply_masks(net: nn.Module) -> None:
    """Recompute each pruned `weight` from `weight_orig` and its mask, as torch's forward pre-hook does."""
    for module in net.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                hook(module, None)


def _restart_best(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """A new round starts its own best: the best checkpoint is replaced by the round's first epoch."""
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            # Through the callback's own state API (what a resume restores): the kept file stays, scored worst.
            worst = torch.tensor(float("inf") if callback.mode == "min" else float("-inf"))
            path = callback.best_model_path
            callback.load_state_dict({**callback.state_dict(), "best_model_score": worst, "best_k_models": {path: worst},
                                      "kth_best_model_path": path, "kth_value": worst})  # fmt: skip
    if hasattr(pl_module, "val_acc_best"):
        pl_module.val_acc_best.reset()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")
