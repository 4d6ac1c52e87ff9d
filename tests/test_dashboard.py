"""The W&B dashboard of an offline run, read back with wandb's own tool, and a resume that continues it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST, only_run_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WANDB = Path(sys.executable).with_name("wandb")


def inspect_summary(offline_run: Path) -> dict:
    """`wandb leet inspect --summary --json`: wandb's own reader of a run's .wandb log."""
    out = subprocess.run([str(WANDB), "leet", "inspect", "--summary", "--json", str(offline_run)],
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not WANDB.exists(), reason="the wandb command is not installed beside python")
def test_offline_run_holds_metrics_config_media_and_a_resume_continues_it(run_zoo, image_folder, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    # no --trainer.logger: the default loggers, W&B (offline here) and CSV
    args = ["fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, *FAST[2:]]  # fmt: skip
    rc, runs = run_zoo(*args, "--trainer.max_epochs", 2)
    assert rc == 0
    first = only_run_dir(runs, "cnn")
    (offline,) = (first / "wandb").glob("offline-run-*")
    summary = inspect_summary(offline)
    assert {"val/acc", "val/loss", "train/loss_epoch"} <= set(summary["summary"])
    assert summary["config"]["zoo"]["data"]["init_args"]["image_size"] == 16  # the resolved config
    media = offline / "files" / "media"
    for name in ("per_class", "predictions", "confusion_matrix_table"):
        assert list((media / "table" / "val").glob(f"{name}_*.table.json")), name
    table = json.loads(next((media / "table" / "val").glob("predictions_*.table.json")).read_text())
    assert table["columns"] == ["image", "grad_cam", "true", "predicted", "score"] and len(table["data"]) == 6
    assert len(list((media / "images" / "val").glob("grad_cam_*.png"))) == 6  # the 6 val images, in the run
    # the table holds the model's own predictions of those images: what zoo predict gives with the last epoch's
    # weights (the table is logged at the last validation), class and score
    from apps.inference import Predictor

    predictor = Predictor(first / "checkpoints" / "last.ckpt")
    lines = (first / "splits" / "val.txt").read_text().splitlines()  # "path<TAB>class", relative to the root
    val = [image_folder / line.split("\t")[0] for line in lines]
    rows = predictor.predict(val, top_k=1)
    expected = sorted(
        (Path(f).parent.name, r["label"], round(r["score"], 3)) for f, r in zip(val, rows, strict=True)
    )
    logged = sorted((t, p, round(s, 3)) for _, _, t, p, s in table["data"])
    assert logged == expected

    last = first / "checkpoints" / "last.ckpt"
    run_id = torch.load(last, weights_only=True)["wandb_run_id"]
    assert offline.name.endswith(run_id)
    rc, _ = run_zoo("fit", "--config", first / "config.yaml", "--ckpt_path", last, "--trainer.max_epochs", 3)
    assert rc == 0
    (resumed,) = (only_run_dir(runs, "cnn") / "wandb").glob("offline-run-*")
    assert resumed.name.endswith(run_id) and inspect_summary(resumed)["run_id"] == run_id  # the same W&B run
    shutil.rmtree(runs)
