"""ShardDataModule: shards written from a folder, every sample once an epoch, disjoint ranks, and `zoo fit`."""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

pytest.importorskip("webdataset")

from datamodules.images import list_images, load_image  # noqa: E402
from datamodules.shards import ShardDataModule, split_by_rank, write_shards  # noqa: E402
from tests.conftest import FAST, make_folder  # noqa: E402
from zoo.errors import ZooError  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _digest(image: torch.Tensor) -> str:
    return hashlib.sha1(image.contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """24 training and 6 val images (3 classes, zoo's split) in shards of 5."""
    write_shards(make_folder(tmp_path / "images"), tmp_path / "shards", shard_size=5)
    return tmp_path / "shards"


def _folder_digests(folder: Path) -> set[str]:
    """Every image as zoo's decoder reads it from the folder, (C, H, W) like the loader's."""
    return {_digest(torch.from_numpy(load_image(p, 3)).permute(2, 0, 1)) for p in list_images(folder)}


def test_write_shards_gives_an_index_and_each_training_image_once_an_epoch(tmp_path, shards):
    index = json.loads((shards / "dataset.json").read_text())
    assert index["class_names"] == ["cat", "dog", "owl"]
    assert (index["image_size"], index["channels"]) == (16, 3)
    assert list(index["splits"]["train"].values()) == [5, 5, 5, 5, 4]
    # augment none at the images' own size: the loader's tensors are the decoded files, bit for bit
    dm = ShardDataModule(str(shards) + "/", augment="none", batch_size=4, num_workers=0)
    assert dm.data_config["class_names"] == ["cat", "dog", "owl"] and dm.image_size == 16
    val = {_digest(x) for images, _ in dm.val_dataloader() for x in images}
    train = _folder_digests(tmp_path / "images") - val
    assert len(val) == 6 and len(train) == 24
    loader = dm.train_dataloader()
    assert len(loader) == 6  # 24 samples in batches of 4
    epochs = []
    for _ in range(2):
        seen = [
            (_digest(x), int(y)) for images, labels in loader for x, y in zip(images, labels, strict=True)
        ]
        assert len(seen) == 24 and {d for d, _ in seen} == train  # each training image once
        epochs.append([d for d, _ in seen])
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    labels = torch.cat([y for _, y in dm.val_dataloader()])
    assert torch.bincount(labels).tolist() == [2, 2, 2]


def test_two_ranks_with_two_workers_read_disjoint_shards_covering_all(shards, monkeypatch):
    wds = pytest.importorskip("webdataset")
    urls = [str(shards / f"train-{i:06d}.tar") for i in range(5)]
    for rank in range(2):  # the module's own deal is webdataset's split_by_node's
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert split_by_rank(urls, rank, 2) == list(wds.split_by_node(iter(urls)))
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")

    dm = ShardDataModule(urls, augment="none", batch_size=2, num_workers=2)
    readers = {}
    for rank in range(2):
        with pytest.warns(UserWarning, match="each stops at 6") if rank == 0 else nullcontext():
            loader = dm.shard_loader("train", True, rank, 2)
        assert len(loader) == 6  # rank 0: 9 + 5 samples, 5 + 3 batches; rank 1: 5 + 5, 3 + 3; both stop at 6
        dataset = loader.pipeline[0].dataset  # the pipeline each loader worker runs
        for worker in range(2):  # webdataset's split_by_worker reads these when no DataLoader is running
            monkeypatch.setenv("WORKER", str(worker))
            monkeypatch.setenv("NUM_WORKERS", "2")
            readers[rank, worker] = [_digest(x) for images, _ in dataset for x in images]
    assert [len(r) for r in readers.values()] == [9, 5, 5, 5]  # shards 0 and 4, 2 | 1 | 3
    every = [d for r in readers.values() for d in r]
    assert len(every) == len(set(every)) == 24


def test_bad_arguments_are_one_line(shards):
    with pytest.raises(ZooError, match="no shard index"):
        ShardDataModule(str(shards / "nowhere") + "/")
    with pytest.raises(ZooError, match="balanced"):
        ShardDataModule(str(shards) + "/", sampler="balanced")
    with pytest.raises(ZooError, match="not in"):
        ShardDataModule(str(shards / "train-{000000..000001}.tar"), val_urls=str(shards / "other.tar"))
    dm = ShardDataModule(str(shards / "train-{000000..000001}.tar"), num_workers=0)
    with pytest.raises(ZooError, match="2 train shard"):
        dm.shard_loader("train", True, 0, 3)


def test_zoo_fit_trains_from_file_urls_and_predict_uses_the_checkpoint(run_zoo, shards, tmp_path):
    urls = f"file://{shards}/train-{{000000..000004}}.tar"  # object storage cannot be reached here
    rc, runs = run_zoo(
        "fit", "--config", Path(__file__).resolve().parents[2] / "configs" / "cnn.yaml",
        "--data.class_path", "datamodules.ShardDataModule", "--data.init_args.urls", urls,
        "--model.channels_per_block", "[8, 16]", "--data.batch_size", "8", "--trainer.logger", "false",
        "--doctor", "false", *FAST,
    )  # fmt: skip
    assert rc == 0
    ckpt = next(runs.rglob("best.ckpt"))
    hparams = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert hparams["class_names"] == ["cat", "dog", "owl"] and hparams["image_size"] == 16
    out = tmp_path / "p.jsonl"
    rc, _ = run_zoo("predict", tmp_path / "images" / "owl", "--checkpoint", ckpt, "--output", out)
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10 and all(row["topk"][0]["label"] in hparams["class_names"] for row in rows)


def test_balanced_class_weights_with_shards_is_one_line(tmp_path, run_zoo, capsys):
    make_folder(tmp_path / "imgs", n=10)
    write_shards(tmp_path / "imgs", tmp_path / "shards", shard_size=5)
    args = ["fit", "--config", CONFIGS / "cnn.yaml", "--data.class_path", "datamodules.ShardDataModule",
            "--data.init_args.urls", f"{tmp_path / 'shards'}/", "--model.class_weights", "balanced", *FAST,
            "--trainer.logger", "false"]  # fmt: skip
    capsys.readouterr()
    assert run_zoo(*args)[0] == 2
    assert "--model.class_weights balanced needs the training labels up front" in capsys.readouterr().err
