import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from dpm_lab.training.data import (DatasetNotFoundError, TensorLoader, augment, load_dataset,
                                   split_validation, synthetic_dataset)
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
    from dpm_lab.training.data import SLICE_FILE, data_roots
    src = next(r / SLICE_FILE for r in data_roots() if (r / SLICE_FILE).exists())
    bad = tmp_path / SLICE_FILE
    shutil.copy(src, bad)
    load_dataset("cifar10-slice", root=tmp_path)  # the copy passes before it is damaged
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(DatasetNotFoundError, match="corrupt.*download cifar10-slice"):
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


# ---- cifar10-jpeg: all of CIFAR-10 as JPEG q75 ----------------------------------------------

def _jpeg_file():
    from dpm_lab.training.data import JPEG_FILE, data_roots
    return next((r / JPEG_FILE for r in data_roots() if (r / JPEG_FILE).exists()), None)


needs_jpeg = pytest.mark.skipif(_jpeg_file() is None,
                                reason="cifar10_jpeg.npz not found (CI has it)")


def _fake_jpeg(folder, train_y=(0, 0, 1), train_rank=(0, 1, 0), test_y=(1, 0), test_rank=(0, 0)):
    """A tiny file laid out like cifar10_jpeg.npz, its JPEGs encoded by torchvision. Returns the
    hashes it should pass with, the decoded pixels computed by Pillow (an independent decoder),
    and the file's path."""
    import io

    import numpy as np
    from PIL import Image
    from torchvision.io import encode_jpeg
    from dpm_lab.training.data import JPEG_FILE

    g = torch.Generator().manual_seed(0)
    arrays, expected, pixels = {}, {}, {}
    for split, y, rank in (("train", train_y, train_rank), ("test", test_y, test_rank)):
        files = [encode_jpeg(torch.randint(0, 256, (3, 32, 32), generator=g, dtype=torch.uint8),
                             quality=75).numpy().tobytes() for _ in y]
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(files), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(f) for f in files]).astype(np.int64)
        arrays[f"{split}_y"] = np.array(y, dtype=np.int64)
        arrays[f"{split}_class_rank"] = np.array(rank, dtype=np.int64)
        pixels[split] = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB"))
                                  for f in files])
        expected[split] = hashlib.sha256(pixels[split]).hexdigest()
    arrays["classes"] = np.array(["airplane", "automobile"] + [f"c{i}" for i in range(2, 10)])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / JPEG_FILE
    np.savez(path, **arrays)
    expected["file"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return expected, pixels, path


def _no_decode(*_):
    raise AssertionError("decoded although a valid cache exists")


@needs_jpeg
def test_jpeg_cifar10_matches_reference_hashes_and_loads_from_cache(tmp_path, monkeypatch):
    """The real file decodes to the pixels whose sha256 the data README gives (else the load
    raises), all 60000 images with 5000 / 1000 per class; the second load reads the cache
    written beside the file and decodes nothing."""
    import dpm_lab.training.data as data
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    shutil.copy(_jpeg_file(), tmp_path / data.JPEG_FILE)
    train, test = load_dataset("cifar10-jpeg", root=tmp_path)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.classes[0] == "airplane"
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    # classes interleaved: any prefix holds them in equal shares
    assert torch.bincount(train.labels[:1000]).tolist() == [100] * 10
    assert (tmp_path / data.JPEG_CACHE).is_file()
    monkeypatch.setattr(data, "_decode_jpegs", _no_decode)
    again_train, again_test = load_dataset("cifar10-jpeg", root=tmp_path)
    assert torch.equal(again_train.images, train.images) and torch.equal(again_test.labels,
                                                                         test.labels)
    rest, val = split_validation(train, 0.1, seed=0)  # the held-out 5000 of a whole-data profile
    assert len(rest) == 45000 and torch.bincount(val.labels).tolist() == [500] * 10


def test_jpeg_decodes_checks_and_writes_the_cache_atomically(tmp_path, monkeypatch):
    """Pixels as Pillow decodes them, classes interleaved by rank; the cache is written as a
    temporary file in the same folder and renamed over, and no temporary file is left."""
    import os

    import dpm_lab.training.data as data
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    expected, pixels, path = _fake_jpeg(tmp_path / "d")
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(data.os, "replace",
                        lambda a, b: (renames.append((Path(a), Path(b))), real_replace(a, b)))
    train, test = data.load_cifar10_jpeg(tmp_path / "d", expected=expected)
    # file order: (label 0, rank 0), (0, 1), (1, 0); interleaved: rank 0 of classes 0 and 1 first
    assert train.labels.tolist() == [0, 1, 0] and test.labels.tolist() == [0, 1]
    nchw = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2)  # noqa: E731
    assert torch.equal(train.images, nchw(pixels["train"][[0, 2, 1]]))
    assert torch.equal(test.images, nchw(pixels["test"][[1, 0]]))
    cache = path.parent / data.JPEG_CACHE
    (src, dst), = renames
    assert dst == cache and src.parent == cache.parent and src.name.endswith(".tmp")
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, cache.name])
    monkeypatch.setattr(data, "_decode_jpegs", _no_decode)
    assert torch.equal(data.load_cifar10_jpeg(tmp_path / "d", expected=expected)[0].images,
                       train.images)


def test_a_damaged_or_unwritable_cache_costs_a_decode_not_a_wrong_answer(tmp_path, monkeypatch,
                                                                       capsys):
    import numpy as np

    import dpm_lab.training.data as data
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    expected, pixels, path = _fake_jpeg(tmp_path / "d")
    cache = path.parent / data.JPEG_CACHE
    decodes = []
    real_decode = data._decode_jpegs
    monkeypatch.setattr(data, "_decode_jpegs", lambda *a: (decodes.append(1), real_decode(*a))[1])
    good = data.load_cifar10_jpeg(path.parent, expected=expected)[0].images
    # a cache whose pixels were altered: refused by its hash, decoded again and rewritten
    wrong = pixels["train"].copy()
    wrong[0, 0, 0, 0] ^= 1
    np.savez(cache, source_sha256=np.array(expected["file"]), train_x=wrong, test_x=pixels["test"])
    assert torch.equal(data.load_cifar10_jpeg(path.parent, expected=expected)[0].images, good)
    assert len(decodes) == 4 and "train pixels differ" in capsys.readouterr().err
    with np.load(cache) as c:
        assert np.array_equal(c["train_x"], pixels["train"])
    # a write that fails half-way leaves neither a cache nor a temporary file behind
    cache.unlink()

    def half_write(f, **_):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(data.np, "savez", half_write)
    assert torch.equal(data.load_cifar10_jpeg(path.parent, expected=expected)[0].images, good)
    assert "disk full" in capsys.readouterr().err
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_jpeg_cache_goes_to_the_user_cache_when_the_data_folder_is_read_only(tmp_path,
                                                                            monkeypatch):
    """A folder marked read-only (as the shared data is) is not written, even by root."""
    import dpm_lab.training.data as data
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    expected, _, path = _fake_jpeg(tmp_path / "ro")
    path.parent.chmod(0o555)
    try:
        data.load_cifar10_jpeg(path.parent, expected=expected)
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
        assert (tmp_path / "home" / ".cache" / data.JPEG_CACHE).is_file()
        monkeypatch.setattr(data, "_decode_jpegs", _no_decode)
        data.load_cifar10_jpeg(path.parent, expected=expected)
    finally:
        path.parent.chmod(0o755)


def test_jpeg_mismatch_names_the_file_and_both_hashes(tmp_path, monkeypatch):
    import dpm_lab.training.data as data
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    expected, _, path = _fake_jpeg(tmp_path / "d")
    other = "0" * 64
    with pytest.raises(DatasetNotFoundError) as err:  # the decoded pixels are not the reference
        data.load_cifar10_jpeg(path.parent, expected={**expected, "test": other})
    msg = str(err.value)
    assert str(path) in msg and expected["test"] in msg and other in msg and "test images" in msg
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # nothing cached
    with pytest.raises(DatasetNotFoundError) as err:  # the file's bytes are not the original's
        data.load_cifar10_jpeg(path.parent, expected={**expected, "file": other})
    msg = str(err.value)
    assert str(path) in msg and expected["file"] in msg and other in msg and "corrupt" in msg


def test_whole_cifar10_prefers_the_official_copy_and_names_both_when_neither_is_found(
        tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    from dpm_lab.training.data import JPEG_FILE, whole_cifar10
    monkeypatch.setenv("DPM_LAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # no data/ or shared/data/ here or above
    given = tmp_path / "given"
    with pytest.raises(DatasetNotFoundError) as err:
        whole_cifar10(given)
    msg = str(err.value)
    assert str(given / "cifar-10-batches-py") in msg and str(given / JPEG_FILE) in msg
    assert "download cifar10" in msg and "cifar10-jpeg" in msg and "DPM_LAB_DATA" in msg
    with pytest.raises(DatasetNotFoundError, match="cifar10_jpeg.npz.*download cifar10"):
        load_dataset("cifar10-jpeg", root=given)
    given.mkdir()
    (given / JPEG_FILE).touch()
    assert whole_cifar10(given) == "cifar10-jpeg"
    official = given / "cifar-10-batches-py"
    official.mkdir()
    (official / "batches.meta").touch()  # an incomplete copy is not the official dataset
    assert whole_cifar10(given) == "cifar10-jpeg"
    with pytest.raises(DatasetNotFoundError, match="A complete cifar10 not found"):
        load_dataset("cifar10", root=given)
    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        (official / name).touch()
    assert whole_cifar10(given) == "cifar10"


def test_every_dataset_has_a_label_and_the_jpeg_copy_says_so():
    from dpm_lab.training.data import DATASET_LABELS, DATASET_NAMES, dataset_label
    assert set(DATASET_LABELS) == set(DATASET_NAMES)
    assert dataset_label("cifar10-jpeg") == "CIFAR-10 (JPEG q75)"
    assert dataset_label("cifar10") == "CIFAR-10"
    with pytest.raises(ValueError, match="'cifar10-png'.*cifar10-jpeg"):
        dataset_label("cifar10-png")


def test_a_run_on_the_jpeg_copy_is_labelled_so_in_its_figure(tmp_path):
    import matplotlib.pyplot as plt

    from dpm_lab.reporting.figures import training_curve
    record = {"kind": "dense", "model": "resnet20", "dataset": "cifar10-jpeg", "profile": "full",
              "seed": 0, "run_id": "r0", "git": "abc", "final_top1": 50.0,
              "history": [{"epoch": 1, "train_loss": 1.0, "test_acc": 50.0}]}
    training_curve(record, out=tmp_path / "curve.png", show=True)
    assert "resnet20 / CIFAR-10 (JPEG q75) (full" in plt.gcf()._suptitle.get_text()
    plt.close("all")


def _shipped_slice():
    from dpm_lab.training.data import SLICE_FILE, data_roots
    return next(r / SLICE_FILE for r in data_roots() if (r / SLICE_FILE).exists())


def _fake_official_batches(folder, slice_path):
    """A ``cifar-10-batches-py`` folder in the official format (protocol-2 pickles of dicts with
    ``data`` uint8 [10000, 3072], rows in CHW order, and 10000 ``labels``), holding the shipped
    slice's images and labels at their official rows (``*_source_index``) and zeros elsewhere."""
    import pickle

    import numpy as np
    d = np.load(slice_path)
    folder.mkdir(parents=True)
    batches = {f"data_batch_{b}": (b - 1) * 10000 for b in range(1, 6)}
    for name, first in [*batches.items(), ("test_batch", 0)]:
        split = "test" if name == "test_batch" else "train"
        index = d[f"{split}_source_index"]
        rows = (index >= first) & (index < first + 10000)
        data = np.zeros((10000, 3072), dtype=np.uint8)
        data[index[rows] - first] = d[f"{split}_x"][rows].transpose(0, 3, 1, 2).reshape(-1, 3072)
        labels = np.zeros(10000, dtype=np.int64)
        labels[index[rows] - first] = d[f"{split}_y"][rows]
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels.tolist(), "data": data}, f,
                        protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": 10000, "num_vis": 3072,
                     "label_names": [str(c) for c in d["classes"]]}, f, protocol=2)
    return d


def _refuse_download(*args, **kwargs):
    raise AssertionError("downloaded although the official batches are there")


@needs_slice
def test_slice_built_from_official_batches_has_the_shipped_arrays(tmp_path, monkeypatch):
    """The builder keeps each batch's documented prefix: from batches in the official format it
    writes exactly the shipped arrays (the batches hold zeros beyond the prefixes, so a wrong
    row would show), reads a slice found again instead of rebuilding it, and refuses batches
    whose prefix differs from the official bytes by one bit."""
    import pickle

    import numpy as np
    import torchvision.datasets.cifar

    import dpm_lab.training.data as data
    shipped = _shipped_slice()
    given = tmp_path / "given"
    expected = _fake_official_batches(given / "cifar-10-batches-py", shipped)
    monkeypatch.setenv("DPM_LAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("DPM_LAB_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # no other slice here or above
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive",
                        _refuse_download)
    path = data.download_cifar10_slice(given)
    assert path == given / data.SLICE_FILE
    with np.load(path) as built:
        assert built.files == expected.files
        for name in expected.files:
            assert built[name].dtype == expected[name].dtype
            assert np.array_equal(built[name], expected[name]), name
    assert not list(given.glob("*.tmp"))
    train, test = load_dataset("cifar10-slice", root=given)
    assert len(train) == 5438 and len(test) == 1017

    def no_build(*_):
        raise AssertionError("rebuilt although a checked slice exists")
    monkeypatch.setattr(data, "build_cifar10_slice", no_build)
    assert data.download_cifar10_slice(given) == path
    monkeypatch.undo()

    batch4 = given / "cifar-10-batches-py" / "data_batch_4"
    entry = pickle.loads(batch4.read_bytes(), encoding="latin1")
    entry["data"][1284, 0] ^= 1  # row 1284: the last row of data_batch_4's prefix
    batch4.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DatasetNotFoundError, match="train_x has sha256") as err:
        data.build_cifar10_slice(batch4.parent)
    assert "train_y" not in str(err.value) and "test_x" not in str(err.value)


def test_missing_slice_whose_download_fails_says_what_where_and_how(tmp_path, offline):
    """No slice anywhere and no network: one error naming the file, every folder searched, the
    failed download and its cause, and the command to run once online."""
    from dpm_lab.training.data import SLICE_FILE, download_cifar10_slice

    given = tmp_path / "given"
    with pytest.raises(DatasetNotFoundError) as err:
        download_cifar10_slice(given)
    msg = str(err.value)
    for where in (given, tmp_path / "env", tmp_path / "home" / "data"):
        assert str(where / SLICE_FILE) in msg
    assert "Temporary failure in name resolution" in msg and "cs.toronto.edu" in msg
    assert "python -m dpm_lab download cifar10-slice" in msg and "\n" not in msg
    assert not (given / SLICE_FILE).exists()
