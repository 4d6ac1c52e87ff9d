"""`zoo doctor`: each planted mistake in an image folder is found, reported on stderr and in doctor.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import sample_root
from tests.conftest import FAST, make_folder
from zoo.cli import main
from zoo.doctor import brief
from zoo.doctor_duplicates import NEAR_BITS, near_groups
from zoo.doctor_labels import confident_issues
from zoo.doctor_scan import ImageRecord, read_images
from zoo.registry import get_family

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def photo(seed: int, size: int = 96) -> Image.Image:
    """A smooth random picture (a blurred 6x6 colour field): structure a perceptual hash can see."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return coarse.resize((size, size), Image.Resampling.BICUBIC)


def doctor(root: Path, out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["doctor", str(root), "--output", str(out), *extra])
    return code, json.loads((out / "doctor.json").read_text())


def checks(report: dict) -> dict[str, dict]:
    return {p["check"]: p for p in report["problems"] + report["notes"]}


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    """3 classes x (9 train, 3 val) 40 px PNGs: nothing wrong with them."""
    return make_folder(tmp_path / "images", n=9, layout="split", size=40)


def test_a_clean_folder_has_no_problems(clean, tmp_path, capsys):
    code, report = doctor(clean, tmp_path / "out", "--strict")
    assert code == 0, report["problems"]
    assert report["problems"] == [] and report["counts"] == {
        "train": {"cat": 9, "dog": 9, "owl": 9},
        "val": {"cat": 3, "dog": 3, "owl": 3},
    }
    assert (
        report["formats"] == {"PNG": 36}
        and report["modes"] == {"RGB": 36}
        and report["sizes"] == {"40x40": 36}
    )
    assert report["imbalance"] == {"train": 1.0, "val": 1.0} and report["near_duplicates"] == []
    err = capsys.readouterr().err
    assert "no problems found" in err and "3 classes, 27 images: cat 9, dog 9, owl 9" in err


def test_broken_ignored_and_tiny_files(clean, tmp_path, capsys):
    cat = clean / "train" / "cat"
    (cat / "garbage.png").write_bytes(b"not an image at all")
    whole = (cat / "img_000.png").read_bytes()
    (cat / "truncated.png").write_bytes(whole[: len(whole) // 2])  # a valid header, half the pixels
    (cat / "notes.txt").write_text("shot on a phone")
    (cat / ".DS_Store").write_bytes(b"\0" * 8)
    Image.fromarray(np.full((10, 12, 3), 128, np.uint8)).save(cat / "tiny.png")
    Image.new("L", (4100, 40)).save(cat / "panorama.png")  # a few hundred bytes on disk
    (clean / "holdout" / "cat").mkdir(parents=True)  # not a split zoo reads
    code, report = doctor(clean, tmp_path / "out", "--strict")
    assert code == 1
    found = checks(report)
    assert {u["file"] for u in report["unreadable"]} == {"train/cat/garbage.png", "train/cat/truncated.png"}
    assert found["unreadable"]["severity"] == "error" and found["unreadable"]["count"] == 2
    assert report["ignored"] == [
        {"file": "holdout/", "reason": "not a split folder: zoo reads train/, val/ and test/"},
        {"file": "train/cat/.DS_Store", "reason": "hidden"},
        {"file": "train/cat/notes.txt", "reason": "not an image extension zoo reads: .txt"},
    ]
    assert found["ignored"]["count"] == 2 and found["hidden"]["severity"] == "note"
    assert report["tiny"] == [{"file": "train/cat/tiny.png", "width": 12, "height": 10}]
    assert report["huge"] == [{"file": "train/cat/panorama.png", "width": 4100, "height": 40}]
    assert found["modes"]["message"].startswith("images of 2 modes (RGB 38, L 1)")
    err = capsys.readouterr().err
    assert "2 unreadable image files" in err and "train/cat/truncated.png" in err
    assert "1 tiny image" in err and "1 huge image" in err and "notes.txt" in err


def test_exact_duplicates_conflicts_and_leakage(clean, tmp_path, capsys):
    train = clean / "train"
    shutil.copy(train / "cat" / "img_001.png", train / "cat" / "copy_of_001.png")  # within a class
    shutil.copy(train / "cat" / "img_002.png", train / "dog" / "stray.png")  # one image, two labels
    shutil.copy(train / "owl" / "img_003.png", clean / "val" / "owl" / "img_003.png")  # train -> val
    code, report = doctor(clean, tmp_path / "out", "--strict")
    assert code == 1
    dup = report["duplicates"]
    assert [g["files"] for g in dup["within_class"]] == [
        ["train/cat/copy_of_001.png", "train/cat/img_001.png"]
    ]
    assert [g["classes"] for g in dup["label_conflict"]] == [["cat", "dog"]]
    assert [g["files"] for g in dup["leakage"]] == [["train/owl/img_003.png", "val/owl/img_003.png"]]
    found = checks(report)
    assert (found["label_conflict"]["severity"], found["leakage"]["severity"]) == ("error", "error")
    assert found["within_class"]["severity"] == "warning"
    assert report["near_duplicates"] == []  # exact copies are reported once, as exact
    err = capsys.readouterr().err
    assert (
        "label conflict" in err and "leakage" in err and "train/owl/img_003.png = val/owl/img_003.png" in err
    )


def test_near_duplicates_resized_and_reencoded(clean, tmp_path):
    photo(1).save(clean / "train" / "cat" / "photo.png")
    photo(1).resize((64, 64), Image.Resampling.LANCZOS).save(clean / "train" / "cat" / "photo_small.png")
    photo(1).save(clean / "val" / "cat" / "photo.jpg", quality=80)  # re-encoded, and in another split
    for seed in range(2, 8):  # unrelated pictures of the same kind must stay apart
        photo(seed).save(clean / "train" / "dog" / f"photo_{seed}.png")
    code, report = doctor(clean, tmp_path / "out")
    assert code == 0  # without --strict, problems do not change the exit status
    groups = report["near_duplicates"]
    assert [sorted(g["files"]) for g in groups] == [
        ["train/cat/photo.png", "train/cat/photo_small.png", "val/cat/photo.jpg"]
    ]
    assert groups[0]["splits"] == ["train", "val"]
    assert "some across splits" in checks(report)["near_duplicate"]["message"]


def test_imbalance_missing_class_and_strict_exit(clean, tmp_path, capsys):
    for path in sorted((clean / "train" / "owl").iterdir())[2:]:
        path.unlink()  # owl keeps 2 training images: 9:2
    shutil.rmtree(clean / "val" / "dog")
    code, report = doctor(clean, tmp_path / "out", "--strict")
    assert code == 1 and report["imbalance"]["train"] == 4.5
    found = checks(report)
    assert "imbalance 4.5:1 in train (cat 9, owl 2)" in found["imbalance"]["message"]
    assert (
        found["classes_differ"]["severity"] == "error"
        and "missing: ['dog']" in found["classes_differ"]["message"]
    )
    assert main(["doctor", str(clean), "--output", str(tmp_path / "out")]) == 0  # the same, without --strict
    assert "imbalance 4.5:1" in capsys.readouterr().err


def test_json_on_stdout_and_where_the_report_goes(clean, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["doctor", "images", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "doctor" / "doctor.json").read_text())
    assert printed["root"] == str(clean.resolve()) and printed["layout"] == {"train": "train", "val": "val"}
    monkeypatch.chdir(clean)  # ./doctor would be inside the image folder: it goes beside it instead
    before = sorted(clean.rglob("*"))
    assert main(["doctor", "."]) == 0
    assert (tmp_path / "images_doctor" / "doctor.json").is_file() and sorted(clean.rglob("*")) == before
    assert main(["doctor", ".", "--output", "train/report"]) == 2
    assert "inside the image folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("missing", "does not exist"), ("file", "is a file"), ("flat", "no class sub-folders")],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, kind, expected):
    root = tmp_path / kind
    if kind == "file":
        Image.new("RGB", (40, 40)).save(tmp_path / "file", format="PNG")
    elif kind == "flat":  # images, but no class folders
        root.mkdir()
        Image.new("RGB", (40, 40)).save(root / "x.png")
    assert main(["doctor", str(root), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("zoo: error:") == 1 and expected in err and "Traceback" not in err, err


def test_brief_warns_from_hashes_and_headers_only(clean, tmp_path):
    assert brief(clean) == []
    shutil.copy(clean / "train" / "cat" / "img_001.png", clean / "val" / "cat" / "leaked.png")
    (clean / "train" / "dog" / "garbage.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    for path in sorted((clean / "train" / "owl").iterdir())[1:]:
        path.unlink()
    lines = brief(clean)
    assert any("leakage" in line for line in lines), lines
    assert any(line.startswith("1 unreadable image file") for line in lines), lines
    assert any(line.startswith("imbalance 9:1 in train") for line in lines), lines
    assert all(line.endswith(f"see `zoo doctor {clean}`") for line in lines)
    assert brief(tmp_path / "nowhere") == []  # not an image folder: `zoo fit` says why


def test_near_duplicates_need_close_hashes_and_close_thumbnails(tmp_path):
    pictures = {
        "a.png": photo(1),
        "a_small.png": photo(1).resize((40, 40), Image.Resampling.LANCZOS),
        "a.jpg": photo(1),
        "other.png": photo(2),
        "blank.png": Image.new("RGB", (50, 50), "white"),
        "blank_big.png": Image.new("RGB", (70, 90), "white"),
        # the same left-to-right ramp at two contrasts: one difference hash, thumbnails far apart
        "ramp.png": Image.fromarray(np.tile(np.linspace(0, 100, 64), (64, 1)).astype(np.uint8)),
        "ramp_steep.png": Image.fromarray(np.tile(np.linspace(0, 250, 64), (64, 1)).astype(np.uint8)),
    }
    records = []
    for name, picture in pictures.items():
        picture.save(tmp_path / name, quality=75)
        records.append(ImageRecord(tmp_path / name, name, "train", "a"))
    read_images(records)
    by_name = {r.rel: r for r in records}
    assert by_name["ramp.png"].dhash == by_name["ramp_steep.png"].dhash
    assert bin(by_name["a.png"].dhash ^ by_name["other.png"].dhash).count("1") > NEAR_BITS
    groups = sorted(sorted(r.rel for r in g) for g in near_groups(records))
    assert groups == [["a.jpg", "a.png", "a_small.png"], ["blank.png", "blank_big.png"]]


def test_the_bundled_sample_raises_no_false_alarm(tmp_path):
    # 1,200 distinct 28 px Fashion-MNIST images: 1 % have a twin within 0 hash bits, none within NEAR_MAD
    assert main(["doctor", str(sample_root()), "--strict", "--output", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "doctor.json").read_text())
    assert report["images"] == 1200 and report["near_duplicates"] == [] and report["problems"] == []
    assert [n["check"] for n in report["notes"]] == ["tiny"]  # all 28 px: said once, not a problem


def test_confident_issues_on_known_scores():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.15, 0.85], [0.7, 0.3], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1, 1, 1])  # the last two look like class 0
    thresholds, issues = confident_issues(probs, labels)
    assert thresholds == pytest.approx([0.85, (0.9 + 0.85 + 0.3 + 0.4) / 4])
    assert issues == []  # their p(class 0), 0.7 and 0.6, stay under class 0's threshold: not confident enough
    probs[4] = [0.95, 0.05]
    thresholds, issues = confident_issues(probs, labels)
    assert issues == [(4, 0)]


def test_label_errors_found_out_of_sample(trained_ckpt, tmp_path, capsys):
    root = make_folder(tmp_path / "images", n=30, size=16)  # brightness classes the checkpoint learnt
    names = ["cat", "dog", "owl"]
    flipped = set()
    for c, name in enumerate(names):  # 3 of each 30 moved to the next class: 10 % wrong labels
        for i in (4, 14, 24):
            wrong = names[(c + 1) % 3]
            (root / name / f"img_{i:03d}.png").rename(root / wrong / f"from_{name}_{i:03d}.png")
            flipped.add(f"{wrong}/from_{name}_{i:03d}.png")
    code, report = doctor(root, tmp_path / "out", "--checkpoint", str(trained_ckpt))
    assert code == 0
    section = report["label_errors"]
    flagged = {issue["file"] for issue in section["issues"]}
    recall = len(flagged & flipped) / len(flipped)
    precision = len(flagged & flipped) / max(1, len(flagged))
    assert recall >= 0.8 and precision >= 0.5, f"recall {recall:.2f}, precision {precision:.2f}"
    worst = section["issues"][0]
    assert worst["file"] in flipped and worst["suggested"] == worst["file"].split("_")[1]
    p_given = [issue["p_given"] for issue in section["issues"]]
    assert p_given == sorted(p_given)
    assert Path(section["figure"]).stat().st_size > 5000
    assert "likely label error" in capsys.readouterr().err


def test_speed_benchmark_runs_both_passes():
    from benchmarks import doctor_speed

    out = doctor_speed.main(n=40, photos=4, rounds=1)
    assert out["images"] == 40 and out["machine"]["cores"] >= 1
    assert len(out["median_images_per_s"]) == 10 and min(out["median_images_per_s"].values()) > 0


@pytest.mark.parametrize(
    ("family", "args"),
    [("cnn", {"channels_per_block": [8, 16]}), ("mlp", {"hidden_sizes": [32]}),
     ("timm", {"backbone": "resnet18", "pretrained": False})],
)  # fmt: skip
def test_pre_logits_are_what_the_final_linear_reads(family, args):
    model = get_family(family)(class_names=["a", "b", "c"], image_size=32, channels=3, **args).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        feats = model.features(images)
        head = model.net.get_classifier() if family == "timm" else model.net.head
        logits = model(images.float() / 255)
    assert feats.shape == (4, model.net.num_features)
    torch.testing.assert_close(head(feats), logits)


def test_zoo_fit_prints_the_quick_pass_and_can_skip_it(run_zoo, tmp_path, capsys):
    root = make_folder(tmp_path / "leaky", layout="split")
    shutil.copy(root / "train" / "cat" / "img_000.png", root / "val" / "cat" / "leaked.png")
    base = ["fit", "--config", CONFIGS / "cnn.yaml", "--data.root", root, *FAST, "--trainer.logger", "false"]
    assert run_zoo(*base)[0] == 0
    assert "doctor:" in (err := capsys.readouterr().err) and "leakage" in err
    assert run_zoo(*base, "--doctor", "false")[0] == 0
    assert "doctor:" not in capsys.readouterr().err
