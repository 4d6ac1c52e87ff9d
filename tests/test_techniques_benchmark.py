"""benchmarks/techniques.py: its quick mode through the real `zoo fit`, and the figures it reports."""

from __future__ import annotations

import json

import pytest

from benchmarks import techniques


@pytest.mark.slow  # two real fits: 7-15 s, with the load
def test_quick_mode_trains_each_row_and_tabulates_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    out = tmp_path / "results" / "techniques.json"
    results = techniques.main(["fashion"], [0, 1, 2], ["baseline", "cutmix"], 6, quick=True, out=out)
    assert json.loads(out.read_text()) == results  # written as it went
    runs = results["runs"]["sample"]
    assert list(runs) == ["baseline", "cutmix"]
    for row in runs.values():
        assert [r["seed"] for r in row] == [0]  # quick: one seed
        assert row[0]["error"] is None
        assert 0 <= row[0]["val_acc"] <= 1
        assert row[0]["wall_s"] > 0
        assert row[0]["args"][row[0]["args"].index("--trainer.max_epochs") + 1] == "1"  # quick: one epoch
    assert (
        "--model.cutmix" in runs["cutmix"][0]["args"] and "--model.cutmix" not in runs["baseline"][0]["args"]
    )
    lines = techniques.table(results).splitlines()
    baseline = next(line for line in lines if line.startswith("| `baseline` |"))
    cutmix = next(line for line in lines if line.startswith("| `cutmix` |"))
    assert baseline.split(" | ")[3] == "+0.0"  # the baseline's own difference
    assert float(cutmix.split(" | ")[2].split()[0]) == pytest.approx(runs["cutmix"][0]["val_acc"], abs=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


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
