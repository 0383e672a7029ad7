"""ImageNet readiness: the ResNet-50 pipeline end to end on a tiny generated ImageFolder.

The test writes a handful of JPEGs as ``imagenet/{train,val}/<class>/``, then runs OTOv2 + DPM
with ResNet-50 at 224x224 through ``runner.run``, as the paper's ImageNet row does (smoke
sizes: one dense epoch, the smoke OTOv2 recipe's DHSPG epochs). Numbers are meaningless; the code
path is the point.
"""
import numpy as np
import pytest
from PIL import Image

from dpm_lab.experiments import runner
from dpm_lab.experiments.profiles import get_profile
from dpm_lab.experiments.runspec import RunSpec
from dpm_lab.hosts.otov2.recipe import otov2_recipe
from dpm_lab.training.data import DatasetNotFoundError, imagefolder_loaders, imagenet_root


def _image_folder(root, per_class: dict, classes=("n01", "n02"), size=48):
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c in classes:
            folder = root / "imagenet" / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{c}_{i}.JPEG")


def test_resnet50_otov2_dpm_runs_end_to_end_on_an_image_folder(tmp_path):
    _image_folder(tmp_path, {"train": 8, "val": 2})
    profile = get_profile("smoke").with_(dataset="imagenet", model="resnet50", batch_size=4)
    record = runner.run(RunSpec(profile=profile, host="otov2", method="dpm", seed=0),
                             data_root=tmp_path, results_dir=tmp_path / "results",
                             runs_dir=tmp_path / "runs", device="cpu", progress=False)
    assert record["model"] == "resnet50" and record["dataset"] == "imagenet"
    epochs = otov2_recipe(profile, "resnet50").train.epochs  # 16 images / batch 4: 4 steps each
    assert len(record["history"]) == epochs and record["history"][-1]["step"] == 4 * epochs
    assert record["macs"] < record["dense_macs"]  # DHSPG's zero groups were removed
    assert any((tmp_path / "runs").rglob("model.pt"))


def test_image_folder_errors_name_what_is_missing(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="imagenet"):
        imagenet_root(tmp_path)
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="val"):
        imagefolder_loaders(tmp_path / "imagenet")


def test_image_folder_loaders_shard_over_ranks(tmp_path, monkeypatch):
    """Under DDP (rank and world size faked here): each rank trains on its own part of the epoch,
    local batch = global / world, and the validation shards hold every image exactly once."""
    from dpm_lab.training import distributed

    _image_folder(tmp_path, {"train": 6, "val": 3})
    train_parts, val_parts = [], []
    for r in range(2):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        train, val = imagefolder_loaders(tmp_path / "imagenet", batch_size=4, workers=0,
                                         image_size=32)
        train.sampler.set_epoch(0)
        assert train.batch_size == 2
        train_parts.append(set(train.sampler))
        val_parts.append(list(val.sampler))
    assert not train_parts[0] & train_parts[1] and len(train_parts[0] | train_parts[1]) == 12
    assert sorted(val_parts[0] + val_parts[1]) == list(range(6))
    with pytest.raises(ValueError, match="training batch size 5 does not split over 2"):
        imagefolder_loaders(tmp_path / "imagenet", batch_size=5, workers=0)
