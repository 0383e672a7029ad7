import hashlib
import shutil

import pytest
import torch

from dpm_lab.data import (SLICE_SHA256, DatasetNotFoundError, TensorLoader, augment,
                          load_dataset, split_validation, synthetic_dataset)
from conftest import needs_slice


@needs_slice
def test_slice_checksum_shapes_and_labels():
    train, test = load_dataset("cifar10-slice")
    assert train.images.shape == (5438, 3, 32, 32) and test.images.shape == (1017, 3, 32, 32)
    assert train.images.dtype == torch.uint8
    assert train.classes[0] == "airplane" and train.num_classes == 10
    # first official test labels (data/README of the slice): 3, 8, 8, 0, 6, 6, 1, 6, 3, 1
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


@needs_slice
def test_corrupt_slice_is_rejected(tmp_path):
    from dpm_lab.data import SLICE_FILE, data_roots
    src = next(r / SLICE_FILE for r in data_roots() if (r / SLICE_FILE).exists())
    assert hashlib.sha256(src.read_bytes()).hexdigest() == SLICE_SHA256
    bad = tmp_path / SLICE_FILE
    shutil.copy(src, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(DatasetNotFoundError, match="corrupt"):
        load_dataset("cifar10-slice", root=tmp_path)


def test_missing_dataset_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("DPM_LAB_DATA", str(tmp_path))
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # no data/ or shared/data/ here or above
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path / "given")
    msg = str(err.value)
    assert str(tmp_path / "given") in msg and "download" in msg and "DPM_LAB_DATA" in msg
    with pytest.raises(DatasetNotFoundError, match="DPM_LAB_DATA"):
        load_dataset("cifar10-slice", root=tmp_path / "given")


def test_unknown_dataset_names_allowed_ones():
    with pytest.raises(ValueError, match="'imagenet21k'.*cifar10-slice"):
        load_dataset("imagenet21k")
    with pytest.raises(ValueError, match="imagefolder_loaders"):  # folders, not tensors
        load_dataset("imagenet")


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_is_deterministic_per_seed_and_epoch():
    train, _ = synthetic_dataset(200, 10)
    a = _batches(TensorLoader(train, 64, train=True, seed=3), epoch=1)
    b = _batches(TensorLoader(train, 64, train=True, seed=3), epoch=1)
    c = _batches(TensorLoader(train, 64, train=True, seed=3), epoch=2)
    d = _batches(TensorLoader(train, 64, train=True, seed=4), epoch=1)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0]) and not torch.equal(a[0][0], d[0][0])


def test_loader_shapes_normalisation_and_coverage():
    train, test = synthetic_dataset(200, 70)
    tl = TensorLoader(train, 64, train=True)
    assert len(tl) == 3  # drop_last for training
    xs = [x for x, _ in tl]
    assert all(x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 for x in xs)
    el = TensorLoader(test, 32, train=False)
    ys = torch.cat([y for _, y in el])
    assert len(el) == 3 and torch.equal(ys, test.labels)  # evaluation: every image, in order
    x0 = next(iter(el))[0]
    mean = torch.tensor(test.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(test.std).view(1, 3, 1, 1) * 255
    assert torch.allclose(x0, (test.images[:32].float() - mean) / std)


def test_augment_matches_pad_crop_flip_semantics():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 32, 32), generator=g, dtype=torch.uint8)
    offsets = torch.randint(0, 9, (5, 2), generator=g)
    flips = torch.tensor([True, False, True, False, True])
    out = augment(x, offsets, flips, pad=4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for b in range(5):  # reference: crop window of the zero-padded image, then mirror
        dy, dx = offsets[b].tolist()
        ref = padded[b, :, dy:dy + 32, dx:dx + 32]
        ref = ref.flip(2) if flips[b] else ref
        assert torch.equal(out[b], ref)


def test_validation_split_is_seeded_stratified_and_disjoint():
    train, _ = synthetic_dataset(1000, 10, seed=1)
    rest, val = split_validation(train, 0.1, seed=0)
    again_rest, again_val = split_validation(train, 0.1, seed=0)
    _, other = split_validation(train, 0.1, seed=1)
    assert len(rest) + len(val) == len(train) and torch.equal(val.images, again_val.images)
    assert not torch.equal(val.images, other.images)
    # every training image is in exactly one of the two parts
    key = lambda d: {tuple(x.flatten()[:64].tolist()) for x in d.images}  # noqa: E731
    assert not key(rest) & key(val) and len(key(rest) | key(val)) == len(key(train))
    for c in range(10):  # stratified: each class holds out its rounded 10 %
        n = int((train.labels == c).sum())
        assert int((val.labels == c).sum()) == round(0.1 * n)
    assert split_validation(train, 0.0)[1] is None
    with pytest.raises(ValueError, match="1.5"):
        split_validation(train, 1.5)
