"""`zoo app` under concurrent users, in small: the benchmark's own code (benchmarks/app_load.py)."""

from __future__ import annotations

import pytest

from benchmarks.app_load import disagreement, run
from datamodules.images import list_images


@pytest.mark.slow  # a `zoo predict` and a `zoo app` process: ~25 s
def test_concurrent_users_get_no_errors_and_zoo_predicts_answers(trained_ckpt, tmp_path):
    images = list_images(trained_ckpt.parents[4] / "images" / "val")
    out = run(trained_ckpt, images, tmp_path, clients=5, requests=3)
    assert out["errors"] == [] and out["mismatches"] == []
    assert out["answered"] == 15 and out["p50_ms"] <= out["p95_ms"]
    memory = out["server_memory_mb"]
    assert 0 < memory["idle_rss"] <= memory["peak_rss_mb"]


def test_an_answer_that_differs_from_zoo_predict_is_caught():
    expected = {"label": "cat", "topk": [{"label": "cat", "score": 0.7}, {"label": "dog", "score": 0.3}]}
    same = {
        "label": "cat",
        "confidences": [{"label": "cat", "confidence": 0.7}, {"label": "dog", "confidence": 0.3}],
    }
    assert disagreement(same, expected) is None
    off = {
        "label": "cat",
        "confidences": [{"label": "cat", "confidence": 0.7}, {"label": "dog", "confidence": 0.31}],
    }
    assert "dog" in disagreement(off, expected)
    assert "label" in disagreement({**same, "label": "dog"}, expected)
