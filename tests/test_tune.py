"""`zoo tune`: Optuna search through the CLI, pruning, resuming from its storage, and the best config it writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST
from zoo.cli import main

CNN = str(Path(__file__).resolve().parents[1] / "configs" / "cnn.yaml")


def _trials(study: Path) -> list[dict]:
    with open(study / "trials.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tune_prunes_resumes_from_its_storage_and_its_best_config_trains(
    image_folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    space = tmp_path / "space.yaml"
    # 1e-4 with no dot: YAML reads it as a string; zoo tune takes it as the number it means
    space.write_text("model.lr: {low: 1e-5, high: 0.3, log: true}\nmodel.optimizer: [adamw, sgd]\n")
    fit = ["--config", CNN, "--data.root", str(image_folder), *FAST, "--trainer.max_epochs", "3",
           "--data.batch_size", "8", "--model.channels_per_block", "[8, 16]", "--doctor", "false"]  # fmt: skip
    tune = ["tune", "--search", str(space), "--sampler", "random", "--pruner", "successive_halving", *fit]
    assert main([*tune, "--trials", "4"]) == 0
    study = tmp_path / "runs" / "tune"
    trials = _trials(study)
    assert len(trials) == 4
    states = [t["state"] for t in trials]
    assert states.count("pruned") >= 1 and states.count("complete") >= 1
    for t in trials:  # each trial is a run folder of its own, with the sampled options in its config
        model = yaml.safe_load((tmp_path / t["run_dir"] / "config.yaml").read_text())["model"]["init_args"]
        assert (model["lr"], model["optimizer"]) == (float(t["model.lr"]), t["model.optimizer"])
        assert 1e-5 <= float(t["model.lr"]) <= 0.3 and t["model.optimizer"] in ("adamw", "sgd")
    pruned = next(t for t in trials if t["state"] == "pruned")
    assert int(pruned["epochs"]) < 3 or pruned["val/acc"]  # stopped after an epoch's report
    summary = json.loads((study / "summary.json").read_text())
    complete = [float(t["val/acc"]) for t in trials if t["state"] == "complete"]
    assert summary["best_value"] == pytest.approx(max(complete))
    err = capsys.readouterr().err
    assert "train it: zoo fit --config runs/tune/best.yaml" in err

    # The same command with a larger budget resumes the study from its SQLite file: only the new trials run.
    assert main([*tune, "--trials", "5"]) == 0
    assert "4 trial(s) done, 1 to go" in capsys.readouterr().err
    trials = _trials(study)
    assert [t["trial"] for t in trials] == ["0", "1", "2", "3", "4"]
    assert trials[4]["model.lr"] not in {t["model.lr"] for t in trials[:4]}  # not the first draws again

    # best.yaml is the best trial's whole config: `zoo fit --config` trains it again, with its options.
    best = study / "best.yaml"
    assert main(["fit", "--config", str(best), "--trainer.max_epochs", "1", "--experiment", "again"]) == 0
    summary = json.loads((study / "summary.json").read_text())
    again = (tmp_path / "runs/again/version_0/config.yaml").read_text()
    assert f"optimizer: {summary['best_params']['model.optimizer']}" in again


@pytest.mark.slow
def test_every_trial_is_a_wandb_run_in_the_study_group(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_RUN_GROUP", raising=False)
    (tmp_path / "space.yaml").write_text("model.dropout: {low: 0.0, high: 0.5}\n")
    probe = tmp_path / "groups.txt"
    args = ["tune", "--search", "space.yaml", "--trials", "2", "--study", "mine", "--config", CNN,
            "--data.root", str(image_folder), *FAST, "--doctor", "false", "--trainer.limit_train_batches", "1",
            "--trainer.callbacks+=tests.helpers.WandbGroupProbe", "--trainer.callbacks.out", str(probe)]  # fmt: skip
    assert main([*args, "--runs_dir", "elsewhere"]) == 0
    assert (tmp_path / "elsewhere/mine/trials.csv").is_file() and not (tmp_path / "runs").exists()
    runs = probe.read_text().split()
    assert len(runs) == 2 and {r.split(":")[0] for r in runs} == {"mine"} and len(set(runs)) == 2


def test_a_bad_search_file_is_one_line(image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    for text, message in [
        ("model.lr: {low: 0.1, high: 0.01}", "model.lr: need low < high"),
        ("model.lr: {low: 0, high: 0.1, log: true}", "low > 0 for log"),
        ("model.lr: 0.1", "give a list of choices or {low: L, high: H}"),
        ("model.lr: {low: a, high: 0.1}", "'a' is not a number"),
        ("[1, 2", "is not valid YAML"),
    ]:
        space.write_text(text)
        assert main(["tune", "--search", str(space), "--trials", "2", "--config", CNN]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert main(["tune", "--search", "missing.yaml", "--trials", "2"]) == 2
    assert "--search missing.yaml: no such file" in capsys.readouterr().err
    # A fit option that does not exist stops the search before its first trial: one line, no study folder
    space.write_text("model.lr: [0.01]")
    assert main(["tune", "--search", str(space), "--trials", "2", "--config", CNN, "--model.lrr", "3"]) == 2
    err = capsys.readouterr().err
    assert "--model.lrr is not an option of CNNClassifier; did you mean --model.lr?" in err
    assert "Traceback" not in err and "trial" not in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "fit_args, epochs",
    [
        (["--config=" + CNN], 15),  # configs/cnn.yaml's max_epochs
        (["-c", CNN, "--trainer.max_epochs=3"], 3),
        (["--trainer.max_epochs", "3", "--config", CNN], 15),  # as in `zoo fit`, the later one wins
        ([], 10),  # zoo's default
        (["--trainer.max_epochs", "-1", "--trainer.max_steps", "100"], "auto"),  # no epoch bound
    ],
)
def test_hyperband_resource_is_max_epochs_as_zoo_fit_reads_it(fit_args, epochs, tmp_path, monkeypatch):
    from zoo.tune import _max_epochs

    monkeypatch.chdir(tmp_path)
    assert _max_epochs(fit_args) == epochs
    assert not (tmp_path / "runs").exists()  # parsed only: no run folder


def test_the_example_search_space_reads_as_documented():
    from zoo.tune import read_space

    space = {d.key: d for d in read_space(Path(CNN).parent / "search" / "cnn.yaml")}
    assert space["model.lr"].log and space["model.lr"].low == 1e-4 and not space["model.lr"].integer
    assert space["model.optimizer"].choices == ["adamw", "sgd"]
    assert space["data.batch_size"].choices == [32, 64, 128]
