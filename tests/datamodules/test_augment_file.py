"""--data.augment PATH: a user's albumentations pipeline file, checked up front, seeded, resized to fit."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
import yaml
from albumentations.pytorch import ToTensorV2

from datamodules import ImageFolderDataModule
from datamodules.transforms import AUGMENTS, save_preset, train_transform
from tests.conftest import FAST, only_run_dir
from zoo.errors import ZooError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def pipeline_file(path: Path, *ops: A.BasicTransform) -> str:
    A.save(A.Compose(list(ops)), path, data_format="json" if path.suffix == ".json" else "yaml")
    return str(path)


def first_epoch(dm: ImageFolderDataModule, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)  # the shuffle order and the augmentation both follow torch's seed
    batches = list(dm.train_dataloader())
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("preset", AUGMENTS)
def test_saved_preset_replays_the_preset_draw_for_draw(tmp_path, preset, channels, suffix):
    path = save_preset(preset, tmp_path / f"start{suffix}", image_size=24, channels=channels)
    image = np.random.default_rng(1).integers(0, 256, (48, 64, channels), dtype=np.uint8)
    builtin, from_file = train_transform(24, channels, preset), train_transform(24, channels, str(path))
    builtin.set_random_seed(3)
    from_file.set_random_seed(3)
    for _ in range(4):
        assert torch.equal(builtin(image=image)["image"], from_file(image=image)["image"])


def test_the_users_transform_is_applied_to_the_training_images(tmp_path, image_folder):
    invert = pipeline_file(tmp_path / "invert.yaml", A.InvertImg(p=1))
    plain = ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0, augment="none")
    inverted = ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0, augment=invert)
    for dm in (plain, inverted):
        dm.setup("fit")
    (a, labels_a), (b, labels_b) = first_epoch(plain), first_epoch(inverted)
    assert torch.equal(labels_a, labels_b)  # same seed, same order
    assert torch.equal(b, 255 - a)  # (N, 3, 16, 16) uint8, every pixel inverted
    val_a, _ = next(iter(plain.val_dataloader()))
    val_b, _ = next(iter(inverted.val_dataloader()))
    assert torch.equal(val_a, val_b)  # validation is never augmented


@pytest.mark.parametrize("op", [A.Resize(40, 24), A.RandomCrop(10, 10), A.Rotate(limit=30, p=1)])
def test_any_size_the_file_leaves_ends_as_image_size_squares(tmp_path, image_folder, op):
    path = pipeline_file(tmp_path / "size.yml", op, A.HorizontalFlip())
    dm = ImageFolderDataModule(str(image_folder), image_size=12, num_workers=0, augment=path, hflip=True)
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 12, 12)


def test_same_seed_same_augmentation(tmp_path, image_folder):
    path = pipeline_file(
        tmp_path / "random.yaml",
        A.RandomBrightnessContrast(brightness_limit=0.4, contrast_limit=0.4, p=1),
        A.Affine(translate_percent=0.2, rotate=(-20, 20), p=1),
    )
    dm = ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0, augment=path)
    dm.setup("fit")
    first, _ = first_epoch(dm, seed=5)
    again, _ = first_epoch(dm, seed=5)
    other, _ = first_epoch(dm, seed=6)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: "ligth", "choose one of none, light, standard, or give an albumentations pipeline file"),
        (lambda d: str(d / "missing.yaml"), "no file .* exists"),
        (lambda d: write(d / "aug.txt", "x"), "a pipeline file ends in .yaml, .yml, .json"),
        (lambda d: write(d / "aug.yaml", "transform: [1, 2"), "cannot read it as YAML: .* at line 1"),
        (lambda d: write(d / "aug.json", "{'transform': 1}"), "cannot read it as JSON"),
        (lambda d: write(d / "aug.yaml", "- Rotate\n- Flip\n"), "not an albumentations pipeline"),
        (
            lambda d: write(
                d / "aug.yaml", yaml.safe_dump({"transform": {"__class_fullname__": "Invert", "p": 1}})
            ),
            "unknown albumentations transform 'Invert'",
        ),
        (
            lambda d: write(
                d / "aug.yaml", yaml.safe_dump({"transform": {"__class_fullname__": "RandomCrop", "p": 1}})
            ),
            "not a valid albumentations pipeline: .*height",
        ),
        (lambda d: pipeline_file(d / "aug.yaml", A.InvertImg(), ToTensorV2()), "remove ToTensorV2"),
        (lambda d: pipeline_file(d / "aug.json", A.Normalize()), "gives float32 images .* remove Normalize"),
        (
            lambda d: pipeline_file(d / "aug.yaml", A.RandomCrop(200, 200)),
            "the pipeline fails on a 32x42 3-channel",
        ),
    ],
)
def test_a_wrong_file_is_one_line_naming_it(tmp_path, image_folder, make, match):
    augment = make(tmp_path)
    with pytest.raises(ZooError, match=match) as err:
        ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0, augment=augment)
    message = str(err.value)
    assert message.startswith(f"--data.augment {augment}: ") and "\n" not in message


def test_a_typo_of_a_preset_suggests_it(image_folder):
    with pytest.raises(ZooError, match="did you mean standard?"):
        ImageFolderDataModule(str(image_folder), image_size=16, num_workers=0, augment="standart")


def test_save_preset_refuses_other_suffixes_and_names(tmp_path):
    with pytest.raises(ZooError, match="ends in .yaml"):
        save_preset("light", tmp_path / "aug.txt", image_size=16)
    with pytest.raises(ZooError, match="choose one of none, light, standard"):
        save_preset("heavy", tmp_path / "aug.yaml", image_size=16)  # type: ignore[arg-type]


def test_cli_trains_with_a_pipeline_file_and_saves_its_path(run_zoo, tmp_path, image_folder):
    path = pipeline_file(tmp_path / "my_aug.yaml", A.ToGray(p=1), A.RandomCrop(12, 12))
    probe = tmp_path / "loader.json"
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, "--data.image_size", 16,
        "--data.channels", 3, "--data.augment", path, "--model.channels_per_block", "[8, 16]", *FAST,
        "--trainer.logger", "false", "--trainer.callbacks+=tests.helpers.LoaderProbe", "--trainer.callbacks.out", probe,
    )  # fmt: skip
    assert rc == 0
    saved = yaml.safe_load((only_run_dir(runs, "cnn") / "config.yaml").read_text())
    assert saved["data"]["init_args"]["augment"] == path
    seen = json.loads(probe.read_text())
    # the file's transforms, then the resize and crop back to 16 px squares
    assert seen["transforms"][:2] == ["ToGray", "RandomCrop"] and seen["transforms"][-1] == "ToTensorV2"
    first = torch.tensor(seen["first_batch"])  # (B, 3, 16, 16): ToGray made the three channels equal
    assert first.shape[1:] == (3, 16, 16) and torch.equal(first[:, 0], first[:, 1])
    assert torch.equal(first[:, 1], first[:, 2])


def test_cli_reports_a_broken_file_in_one_line(run_zoo, tmp_path, image_folder, capsys):
    path = write(tmp_path / "my_aug.yaml", "transform: {__class_fullname__: Flipp, p: 1}\n")
    rc, runs = run_zoo(
        "fit", "--config", CONFIGS / "cnn.yaml", "--data.root", image_folder, "--data.augment", path
    )
    assert rc == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("zoo: error: ")]
    assert errors == [
        f"zoo: error: --data.augment {path}: unknown albumentations transform 'Flipp'; check its name in the file"
    ]
    assert not runs.exists()
