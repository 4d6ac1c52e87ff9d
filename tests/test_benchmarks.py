"""The benchmark scripts' own parts: the clock zoo fit runs with, the loop-overhead race, the plots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from benchmarks import loop_overhead, plots
from benchmarks.fashion_mnist_accuracy import machine_label, table
from benchmarks.fastai_time_to_accuracy import summarise, time_to
from benchmarks.machine import describe
from tests.conftest import FAST, make_folder
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_epoch_clock_records_every_validation_epoch(tmp_path, monkeypatch):
    clock = tmp_path / "clock.jsonl"
    monkeypatch.setenv("ZOO_BENCH_CLOCK", str(clock))
    monkeypatch.chdir(tmp_path)
    make_folder(tmp_path / "images", n=6, layout="split")
    args = ["fit", "--config", str(ROOT / "configs" / "cnn.yaml"), *FAST, "--trainer.max_epochs", "2"]
    args += ["--data.root", str(tmp_path / "images"), "--trainer.logger", "false"]
    assert main([*args, "--trainer.callbacks+=benchmarks.clock.EpochClock"]) == 0
    lines = [json.loads(line) for line in clock.read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1]  # the sanity check is not an epoch
    assert all(0 <= line["val_acc"] <= 1 for line in lines)
    assert lines[0]["time"] < lines[1]["time"]


def test_time_to_target_is_the_first_epoch_that_reaches_it():
    curve = [{"time": 10.0, "val_acc": 0.8}, {"time": 20.0, "val_acc": 0.91}, {"time": 30.0, "val_acc": 0.95}]
    assert time_to(curve, 0.9) == 20.0
    assert time_to(curve, 0.8) == 10.0
    assert time_to(curve, 0.99) is None


def test_summary_picks_the_highest_target_both_tools_reached_in_every_round():
    zoo = [[{"time": 10.0, "val_acc": 0.81}, {"time": 20.0, "val_acc": 0.83}]] * 3
    fastai = [[{"time": 15.0, "val_acc": 0.80}, {"time": 30.0, "val_acc": 0.825}]] * 2
    fastai.append([{"time": 15.0, "val_acc": 0.80}, {"time": 30.0, "val_acc": 0.81}])  # never reaches 0.82
    out = summarise({"target": 0.95, "curves": {"zoo": zoo, "fastai": fastai}})
    assert out["ratio_zoo_to_fastai"] is None  # 0.95: out of reach for both
    assert out["common_target"] == 0.8
    assert out["ratio_at_common_target"] == 10.0 / 15.0
    assert out["zoo"]["median_time_to_s_by_target"][0.82] == 20.0
    assert out["fastai"]["median_time_to_s_by_target"][0.82] is None


def test_loop_overhead_takes_turns_between_zoo_fit_and_the_plain_loop():
    out = loop_overhead.run_once(epochs=3, warmup=1)  # 2 processes of their own; 15 steps an epoch each
    assert len(out["zoo_epoch_s"]) == len(out["plain_epoch_s"]) == 3  # one plain epoch before each zoo epoch
    for key in ("zoo_ms_per_step", "plain_ms_per_step"):
        assert 0.1 < out[key] < 10_000, (key, out[key])
    assert out["ratio"] == pytest.approx(sum(out["plain_epoch_s"][1:]) / sum(out["zoo_epoch_s"][1:]))
    assert 0 <= out["wandb_service_cpu_share"] < 1
    assert len(out["zoo_steal_s"]) == len(out["plain_steal_s"]) == 3  # the VM's steal in each turn
    assert 0 <= out["zoo_steal_share"] < 1 and 0 <= out["plain_steal_share"] < 1


def test_machine_is_recorded_and_labelled():
    m = describe()
    assert {"cpu", "cores", "torch_cpu_capability", "bf16_cpu", "gpu", "torch"} <= set(m)
    assert machine_label(m).endswith(f"CPU, {m['cores']} cores")


def test_accuracy_table_has_zoo_rows_and_the_published_anchors():
    results = json.loads((ROOT / "benchmarks" / "results" / "fashion_mnist_accuracy.json").read_text())
    rows = table(results).splitlines()
    assert len([r for r in rows if r.startswith("| zoo ")]) == len(results["zoo"])
    assert any("published: ResNet18" in r for r in rows)


def test_plots_draw_one_png_per_committed_result(tmp_path, monkeypatch):
    committed = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert committed
    for path in committed:
        shutil.copy(path, tmp_path)
    monkeypatch.setattr(plots, "RESULTS", tmp_path)
    plots.main()
    for path in committed:
        png = tmp_path / f"{path.stem}.png"
        assert png.exists(), png
        with Image.open(png) as image:
            assert image.size[0] > 300 and image.size[1] > 200


def test_pruning_benchmark_prunes_to_the_share_asked_and_measures_the_export(tmp_path):
    from torch import nn

    from benchmarks.pruning import counts, pruned, sizes
    from zoo.scratch import CNNClassifier

    model = CNNClassifier(class_names=["a", "b"], image_size=16, channels=1, channels_per_block=[8, 16])
    sparse = pruned(model, 0.8)
    weights = [m.weight for m in sparse.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.8, abs=1e-3) and not any(
        n.endswith("_mask") for n, _ in sparse.named_buffers()
    )
    assert (
        counts(sparse)["parameters"]
        == counts(model)["parameters"]
        > counts(model)["nonzero"]
        > counts(sparse)["nonzero"]
    )
    dense, small = sizes(model, tmp_path), sizes(sparse, tmp_path)
    assert small["safetensors_mb"] == pytest.approx(
        dense["safetensors_mb"]
    )  # zeros are stored like any value
    assert small["gzip_mb"] < dense["gzip_mb"]
