"""benchmarks/techniques.py: its quick mode through the real `zoo fit`, and the figures it reports."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks import techniques


@pytest.mark.slow  # two real fits: 7-15 s, with the load
def test_quick_mode_trains_each_row_and_tabulates_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    out = tmp_path / "results" / "techniques.json"
    # The run folders live in a temporary directory that main() removes: keep each run's metrics.csv as it is read.
    metrics: dict[str, str] = {}
    read_result = techniques.read_result

    def keeping_metrics(row, runs_dir):
        (path,) = runs_dir.rglob("metrics.csv")
        metrics[row.name] = path.read_text()
        return read_result(row, runs_dir)

    monkeypatch.setattr(techniques, "read_result", keeping_metrics)
    results = techniques.main(["fashion"], [0, 1, 2], ["baseline", "cutmix"], 6, quick=True, out=out)
    assert json.loads(out.read_text()) == results  # written as it went
    runs = results["runs"]["sample"]
    assert list(runs) == ["baseline", "cutmix"]
    for name, row in runs.items():
        assert [r["seed"] for r in row] == [0]  # quick: one seed
        assert row[0]["error"] is None
        assert row[0]["val_acc"] == best_val_acc(metrics[name])
        assert row[0]["wall_s"] > 0
        assert row[0]["args"][row[0]["args"].index("--trainer.max_epochs") + 1] == "1"  # quick: one epoch
    assert (
        "--model.cutmix" in runs["cutmix"][0]["args"] and "--model.cutmix" not in runs["baseline"][0]["args"]
    )
    lines = techniques.table(results).splitlines()
    baseline = next(line for line in lines if line.startswith("| `baseline` |"))
    cutmix = next(line for line in lines if line.startswith("| `cutmix` |"))
    base_acc, cutmix_acc = runs["baseline"][0]["val_acc"], runs["cutmix"][0]["val_acc"]
    assert float(baseline.split(" | ")[2].split()[0]) == pytest.approx(base_acc, abs=1e-3)
    assert float(cutmix.split(" | ")[2].split()[0]) == pytest.approx(cutmix_acc, abs=1e-3)
    assert float(cutmix.split(" | ")[3]) == pytest.approx(100 * (cutmix_acc - base_acc), abs=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def best_val_acc(metrics_csv: str) -> float:
    return max(float(r["val/acc"]) for r in csv.DictReader(metrics_csv.splitlines()) if r["val/acc"])


def test_a_fit_rows_val_acc_is_the_best_val_acc_of_its_metrics_csv(tmp_path):
    run = tmp_path / "baseline" / "version_0"  # wherever the logger put it below the row's runs_dir
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text(
        "epoch,step,train/loss,val/acc,val/loss\n"
        "0,9,2.1,,\n"
        "0,9,,0.625,1.2\n"
        "1,19,1.4,,\n"
        "1,19,,0.75,0.9\n"  # the best epoch, not the last
        "2,29,,0.6875,1.1\n"
    )
    assert techniques.read_result(techniques.BY_NAME["baseline"], tmp_path) == {"val_acc": 0.75}
    (tmp_path / "stray" / "metrics.csv").parent.mkdir()
    (tmp_path / "stray" / "metrics.csv").write_text("epoch,val/acc\n0,0.9\n")
    with pytest.raises(RuntimeError, match="expected one file, found 2"):  # two runs in one folder: ambiguous
        techniques.read_result(techniques.BY_NAME["baseline"], tmp_path)


def test_summary_takes_medians_spreads_and_differences_in_points():
    runs = {
        "baseline": [{"val_acc": 0.80, "wall_s": 10.0}, {"val_acc": 0.84, "wall_s": 12.0},
                     {"val_acc": 0.82, "wall_s": 30.0}],
        "sgd": [{"val_acc": 0.79, "wall_s": 9.0}, {"val_acc": None, "wall_s": 1.0},
                {"val_acc": 0.75, "wall_s": 11.0}],
        "broken": [{"val_acc": None, "wall_s": 2.0}],
    }  # fmt: skip
    s = techniques.summarise(runs)
    assert s["baseline"] == {"median_val_acc": 0.82, "min_val_acc": 0.80, "max_val_acc": 0.84,
                             "median_wall_s": 12.0, "failed": 0, "diff_points": 0.0}  # fmt: skip
    # the median of the seeds that finished (0.77); the wall time of every seed, the failed one included
    assert s["sgd"]["median_val_acc"] == pytest.approx(0.77)
    assert (s["sgd"]["min_val_acc"], s["sgd"]["max_val_acc"], s["sgd"]["failed"]) == (0.75, 0.79, 1)
    assert s["sgd"]["median_wall_s"] == 9.0
    assert s["sgd"]["diff_points"] == pytest.approx(-5.0)
    assert s["broken"]["median_val_acc"] is None and s["broken"]["diff_points"] is None
    assert techniques.summarise({"sgd": runs["sgd"]})["sgd"]["diff_points"] is None  # no baseline to compare


def test_the_table_replaces_only_what_lies_between_the_docs_markers(tmp_path):
    start, end = techniques.MARKERS
    assert start in techniques.DOCS.read_text() and end in techniques.DOCS.read_text()
    doc = tmp_path / "techniques.md"
    doc.write_text(f"intro\n{start}\nold table\n{end}\nrows\n")
    techniques.write_docs("| new | table |", doc)
    techniques.write_docs("| newer | table |", doc)
    assert doc.read_text() == f"intro\n{start}\n| newer | table |\n{end}\nrows\n"
