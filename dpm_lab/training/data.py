"""Datasets and the fast tensor loader.

Every CIFAR-style split is held as one ``uint8`` tensor ``[N, 3, 32, 32]`` on the training device
(airbench style). Augmentation (random crop with 4-pixel zero padding, horizontal flip) and
normalisation run on whole batches, so there is no per-image PIL work and no DataLoader workers.
Batch order and augmentation draw from a generator seeded by ``(seed, epoch)``: an epoch is
reproducible on its own, which is what makes an interrupted run resume to the same weights.

Named datasets (``load_dataset``):

- ``cifar10`` / ``cifar100``: torchvision's classes (real download with checksum when
  ``download=True``), or an existing copy under the data root.
- ``cifar10-slice``: the offline 5438/1017-image slice of the official CIFAR-10 files
  (``cifar10_prefix_subset.npz``), its arrays sha256-checked; :func:`download_cifar10_slice`
  builds it from the official batches when it is missing.
- ``cifar10-jpeg``: all 50000/10000 CIFAR-10 images as JPEG quality 75 (``cifar10_jpeg.npz``):
  not the official pixels, so every number from it is labelled "CIFAR-10 (JPEG q75)"
  (:func:`dataset_label`). Decoded once and cached; see :func:`load_cifar10_jpeg`.
  :func:`whole_cifar10` names the whole-CIFAR-10 dataset to use: the official one where it exists.
- ``synthetic``: a small generated, learnable dataset for unit tests; needs no files and is only
  ever used when asked for by name.

- ``imagenet``: ImageNet-style folders ``imagenet/train/<class>/*`` and ``imagenet/val/<class>/*``
  under the data root. They do not fit in memory as tensors; ``imagefolder_loaders`` returns
  standard torchvision DataLoaders for them (DDP-aware), which the engine accepts as well.
"""
from __future__ import annotations

import hashlib
import os
import stat
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .paths import data_roots

DATASET_NAMES = ("cifar10", "cifar100", "cifar10-slice", "cifar10-jpeg", "synthetic", "imagenet")
# How tables, figures and reports name each dataset: a number from the JPEG copy must never pass
# for one on the official CIFAR-10 pixels.
DATASET_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "cifar10-slice": "CIFAR-10 slice",
                  "cifar10-jpeg": "CIFAR-10 (JPEG q75)", "synthetic": "synthetic data",
                  "imagenet": "ImageNet"}

SLICE_FILE = "cifar10_prefix_subset.npz"
# The slice is checked by the sha256 of its arrays (C-order bytes), not of the file: the .npz's
# bytes depend on numpy's zip writer and zlib (numpy 2.4's savez_compressed of these arrays, in
# this order, gives the shipped file's bytes, sha256 0e736ea7...1f337), the pixels do not.
SLICE_SHA256 = {
    "train_x": "5ecdf1bf4f04028c20fb24689f3c6af5b7dd7c8795668ffb6e1c785f12fad9ae",
    "train_y": "d56a616f7cd4723eb5d494a0f535fe2d8c7a8189d736b81bce468e7361cda9c9",
    "test_x": "48bde46fb9080c13770d6a8c4163dc24cff90c2802470aa26c4d6c392faf50f3",
    "test_y": "27d28d901527806280ef341c3ceeb4d5eb20462432b015952af5df7448e18eb9",
    "train_source_index": "89f68076ad3258ad4f5332c6d5028a14a2e1f58eec4fba48558071b976c0c323",
    "test_source_index": "d8b94f28cb9cf3d3eafd85077ca03c5bbc08d3eb3bfceb08aa5e5493c58423a6",
    "classes": "0cd4e425527caa80530bc5c762cd5a696c8e31782e3984fe3cedcf5c4e5ac572",
}
# The slice holds rows 0..K-1 of each official batch (../shared/data/README.md), in this order.
SLICE_PREFIX = {"data_batch_1": 1102, "data_batch_2": 1017, "data_batch_3": 1017,
                "data_batch_4": 1285, "data_batch_5": 1017, "test_batch": 1017}
CIFAR10_BATCH_ROWS = 10000  # images per official batch: source index = (batch - 1) * 10000 + row

JPEG_FILE = "cifar10_jpeg.npz"
# ../shared/data/README.md: the sha256 of the file (its bytes hold the labels too) and of the
# decoded uint8 arrays [N, 32, 32, 3] in file order (the decoder's output is checked, not trusted)
JPEG_SHA256 = {"file": "2803977d49e5c207c61e5e034f205d9f29b1862e3fe38170b20b2971cd549e9a",
               "train": "bf3aabd52be912dae02a0435296c4dab5289524b57f55cd162dc4796935a611b",
               "test": "5a6aa8185204d80b65d3dfb540696dadd5f10d185ded226a96665d3e0fc6259f"}
JPEG_CACHE = "cifar10_jpeg.decoded.npz"

# Channel statistics used by Torch-Pruning's CIFAR benchmark (``benchmarks/main.py`` there).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing or corrupt; the message says where we looked and how to fix it."""


def dataset_label(name: str) -> str:
    """The name tables, figures and reports give dataset ``name`` (a ``DATASET_NAMES`` key)."""
    if name not in DATASET_LABELS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_LABELS)}")
    return DATASET_LABELS[name]


@dataclass
class TensorDataset:
    """One split: uint8 images ``[N, 3, H, W]``, int64 labels ``[N]`` and what normalises them."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, n: int | None) -> "TensorDataset":
        """The first ``n`` images (all when ``n`` is None): profiles use it to shrink a split."""
        if n is None or n >= len(self):
            return self
        return self.take(torch.arange(n))

    def take(self, index: torch.Tensor) -> "TensorDataset":
        """The images at ``index`` (a long tensor), in that order."""
        return TensorDataset(self.images[index], self.labels[index], self.classes, self.mean,
                             self.std)


def split_validation(train: TensorDataset, fraction: float, seed: int = 0):
    """Hold out a seeded, class-stratified ``fraction`` of the training split for validation.

    Returns ``(train_rest, validation)``; with ``fraction == 0`` the validation split is ``None``
    and the training split is returned unchanged. The hold-out depends only on ``seed`` and the
    labels, so every run with the same split trains on the same images. Hyperparameters and
    defaults are chosen on the validation accuracy, never on the test split.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction!r}")
    if fraction == 0:
        return train, None
    g = torch.Generator().manual_seed(seed)
    held = []
    for c in range(train.num_classes):
        idx = (train.labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[:round(fraction * len(idx))])
    held = torch.cat(held).sort().values
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held] = False
    if len(held) == 0 or not keep.any():
        raise ValueError(f"validation fraction {fraction} leaves an empty split of "
                         f"{len(train)} training images")
    return train.take(keep.nonzero().flatten()), train.take(held)


def load_dataset(name: str, root=None, download: bool = False, seed: int = 0,
                 synthetic_size: tuple[int, int] = (512, 256)) -> tuple[TensorDataset, TensorDataset]:
    """Return ``(train, test)`` for a named dataset.

    ``root`` (or ``$DPM_LAB_DATA``) points at a local copy; ``download=True`` lets torchvision fetch
    CIFAR into the first root. A missing dataset raises :class:`DatasetNotFoundError`; nothing falls
    back to generated data unless ``name == "synthetic"``.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if name == "synthetic":
        return synthetic_dataset(*synthetic_size, seed=seed)
    if name == "imagenet":
        raise ValueError("imagenet is read from image folders, not loaded as tensors: use "
                         "imagefolder_loaders(imagenet_root(root), ...)")
    if name == "cifar10-slice":
        return load_cifar10_slice(root)
    if name == "cifar10-jpeg":
        return load_cifar10_jpeg(root)
    return load_torchvision_cifar(name, root, download)


def whole_cifar10(root=None) -> str:
    """The dataset name for "all of CIFAR-10": ``cifar10`` (the official pixels) when a complete
    copy is found, else ``cifar10-jpeg`` when its file is found. Resolved to a concrete name, so a
    record's ``dataset`` always says which pixels its numbers come from. Neither found: a
    :class:`DatasetNotFoundError` saying where each was looked for and how to get it."""
    from torchvision import datasets

    if _official_cifar_dir(datasets.CIFAR10, "cifar-10-batches-py", root) is not None:
        return "cifar10"
    if _find(JPEG_FILE, root) is not None:
        return "cifar10-jpeg"
    official = ", ".join(str(r / "cifar-10-batches-py") for r in data_roots(root))
    jpeg = ", ".join(str(r / JPEG_FILE) for r in data_roots(root))
    raise DatasetNotFoundError(
        f"Neither CIFAR-10 (official, dataset cifar10) nor CIFAR-10 (JPEG q75) (dataset "
        f"cifar10-jpeg) was found. Official: looked for a complete cifar-10-batches-py in "
        f"{official}; get it with `python -m dpm_lab download cifar10`. JPEG: looked for "
        f"{jpeg}; it ships beside the project in ../shared/data, copy it into data/. To use a "
        f"local copy, pass --data-root DIR (Python: root=DIR) or set DPM_LAB_DATA=DIR.")


def _find(relative: str, root) -> Path | None:
    for r in data_roots(root):
        if (r / relative).exists():
            return r / relative
    return None


def _missing(what: str, relative: str, root, how: str) -> DatasetNotFoundError:
    looked = ", ".join(str(r / relative) for r in data_roots(root))
    return DatasetNotFoundError(
        f"{what} not found. Looked in: {looked}. {how} "
        f"To use a local copy, pass --data-root DIR (Python: root=DIR) or set DPM_LAB_DATA=DIR.")


def imagenet_root(root=None) -> Path:
    """The ``imagenet`` folder (holding ``train/`` and ``val/``) under the first data root that
    has one."""
    path = _find("imagenet", root)
    if path is None:
        raise _missing("ImageNet", "imagenet", root,
                       "Place it as imagenet/train/<class>/*.JPEG and imagenet/val/<class>/*.JPEG "
                       "(val sorted into class folders).")
    return path


_SLICE_HOW = ("Build it with `python -m dpm_lab download cifar10-slice` (downloads the official "
              "CIFAR-10 python batches, about 170 MB, and keeps each batch's documented prefix), or "
              "copy it from ../shared/data into data/.")


def load_cifar10_slice(root=None) -> tuple[TensorDataset, TensorDataset]:
    """The offline slice of real CIFAR-10 (see ``data/README.md``), after checking the sha256 of
    its arrays."""
    path = _find(SLICE_FILE, root)
    if path is None:
        raise _missing("The CIFAR-10 slice", SLICE_FILE, root, _SLICE_HOW)
    d = read_cifar10_slice(path)
    classes = [str(c) for c in d["classes"]]

    def split(x, y):
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        return TensorDataset(images, torch.from_numpy(y.astype(np.int64)), classes,
                             CIFAR10_MEAN, CIFAR10_STD)

    return split(d["train_x"], d["train_y"]), split(d["test_x"], d["test_y"])


def read_cifar10_slice(path) -> dict[str, np.ndarray]:
    """The arrays of the slice file ``path``, each checked against ``SLICE_SHA256``: a damaged or
    different file raises :class:`DatasetNotFoundError` naming it and how to get a good one."""
    try:
        with np.load(path) as f:
            arrays = {name: f[name] for name in SLICE_SHA256}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DatasetNotFoundError(f"{path} is corrupt ({type(err).__name__}: {err}). "
                                   f"{_SLICE_HOW}") from err
    _check_slice(arrays, str(path))
    return arrays


def _check_slice(arrays: dict, what: str) -> None:
    got = {name: _sha256(np.ascontiguousarray(x).tobytes()) for name, x in arrays.items()}
    bad = [f"{name} has sha256 {got[name]}, expected {SLICE_SHA256[name]}"
           for name in SLICE_SHA256 if got[name] != SLICE_SHA256[name]]
    if bad:
        raise DatasetNotFoundError(f"{what} is corrupt: {'; '.join(bad)}. {_SLICE_HOW}")


def build_cifar10_slice(batches) -> dict[str, np.ndarray]:
    """The slice's arrays from an official ``cifar-10-batches-py`` folder ``batches``: rows
    0..K-1 of each batch (``SLICE_PREFIX``), pixels HWC uint8 as torchvision's ``CIFAR10.data``.

    The arrays are checked against ``SLICE_SHA256`` before they are returned, so only the
    official bytes become a slice (a torchvision download is also checked by its MD5s).
    """
    import pickle

    batches, parts = Path(batches), {}
    for name, k in SLICE_PREFIX.items():
        try:
            with open(batches / name, "rb") as f:  # Python 2 pickles, read as torchvision does
                entry = pickle.load(f, encoding="latin1")
            data, labels = np.asarray(entry["data"]), entry["labels"]
        except (OSError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as err:
            raise DatasetNotFoundError(f"{batches / name} is not an official CIFAR-10 batch "
                                       f"({type(err).__name__}: {err}). {_SLICE_HOW}") from err
        if data.dtype != np.uint8 or data.shape != (CIFAR10_BATCH_ROWS, 3072) or \
                len(labels) != CIFAR10_BATCH_ROWS:
            raise DatasetNotFoundError(
                f"{batches / name} is not an official CIFAR-10 batch: data {data.dtype} "
                f"{list(data.shape)} with {len(labels)} labels, expected uint8 "
                f"[{CIFAR10_BATCH_ROWS}, 3072] with {CIFAR10_BATCH_ROWS} labels. {_SLICE_HOW}")
        parts[name] = (data[:k].reshape(k, 3, 32, 32).transpose(0, 2, 3, 1),
                       np.asarray(labels[:k], dtype=np.int64))
    with open(batches / "batches.meta", "rb") as f:
        classes = np.array(pickle.load(f, encoding="latin1")["label_names"], dtype="<U10")
    train = [name for name in SLICE_PREFIX if name != "test_batch"]
    arrays = {
        "train_x": np.concatenate([parts[n][0] for n in train]),
        "train_y": np.concatenate([parts[n][1] for n in train]),
        "test_x": np.ascontiguousarray(parts["test_batch"][0]),
        "test_y": parts["test_batch"][1],
        "train_source_index": np.concatenate([
            (int(n.rsplit("_", 1)[1]) - 1) * CIFAR10_BATCH_ROWS
            + np.arange(SLICE_PREFIX[n], dtype=np.int64) for n in train]),
        "test_source_index": np.arange(SLICE_PREFIX["test_batch"], dtype=np.int64),
        "classes": classes,
    }
    _check_slice(arrays, f"the slice built from {batches}")
    return arrays


def write_cifar10_slice(arrays: dict, path) -> Path:
    """Write the slice atomically (a temporary file in the same folder, then ``os.replace``), its
    arrays in ``SLICE_SHA256``'s order: with numpy 2.4 the bytes are the shipped file's."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{name: arrays[name] for name in SLICE_SHA256})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def download_cifar10_slice(root=None) -> Path:
    """The path of a checked CIFAR-10 slice, built when none is found (``python -m dpm_lab
    download cifar10-slice``, and ``make train`` before it trains).

    A slice found in the data roots is checked and returned. Otherwise the slice is built from a
    complete official ``cifar-10-batches-py`` found there, or from one that torchvision
    downloads (checking its MD5s) into the first data root, and written there. A download that
    fails (no network) raises :class:`DatasetNotFoundError` saying what is missing, where it was
    looked for, why the download failed and how to get the data by hand.
    """
    from torchvision import datasets

    found = _find(SLICE_FILE, root)
    if found is not None:
        try:
            read_cifar10_slice(found)
            return found
        except DatasetNotFoundError as err:
            print(f"dpm_lab: {err} Building it again.", file=sys.stderr)
    target = data_roots(root)[0]
    batches = _official_cifar_dir(datasets.CIFAR10, "cifar-10-batches-py", root)
    if batches is None:
        try:
            datasets.CIFAR10(str(target), train=False, download=True)
        except (OSError, RuntimeError) as err:  # no network (URLError), or a bad download
            looked = ", ".join(str(r / SLICE_FILE) for r in data_roots(root))
            raise DatasetNotFoundError(
                f"The CIFAR-10 slice ({SLICE_FILE}) is missing (looked in: {looked}) and could "
                f"not be built: downloading the official CIFAR-10 python batches from "
                f"{datasets.CIFAR10.url} into {target} failed ({type(err).__name__}: {err}). "
                f"With network access, run `python -m dpm_lab download cifar10-slice`; without "
                f"it, copy {SLICE_FILE} (it ships in ../shared/data) or a complete "
                f"cifar-10-batches-py/ into one of those folders, or pass --data-root DIR "
                f"(Python: root=DIR) or set DPM_LAB_DATA=DIR.") from err
        batches = target / "cifar-10-batches-py"
    return write_cifar10_slice(build_cifar10_slice(batches), target / SLICE_FILE)


def cache_dir() -> Path:
    """Where decoded datasets are cached when their own folder is read-only:
    ``$DPM_LAB_HOME/.cache`` when that is set, else ``~/.cache/dpm_lab``."""
    home = os.environ.get("DPM_LAB_HOME")
    return Path(home) / ".cache" if home else Path.home() / ".cache" / "dpm_lab"


def _writable(folder: Path) -> bool:
    """We may write in ``folder`` and its mode lets someone write: root may write anywhere, but
    a folder marked read-only (the shared data) is left as it is."""
    return (folder.is_dir() and os.access(folder, os.W_OK)
            and bool(folder.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)))


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _decode_jpegs(jpeg: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The concatenated JPEG files ``jpeg[offsets[i]:offsets[i + 1]]`` as uint8 ``[N, H, W, 3]``,
    decoded in one batched ``decode_jpeg`` call (about 2 s for all 60000 on one core)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    buf = torch.from_numpy(jpeg)
    ends = offsets.tolist()
    images = decode_jpeg([buf[a:b] for a, b in zip(ends[:-1], ends[1:])], mode=ImageReadMode.RGB)
    return torch.stack(images).permute(0, 2, 3, 1).contiguous().numpy()


def _read_jpeg_cache(source_sha256: str, caches: list[Path], expected: dict) -> dict | None:
    """The decoded arrays from the first cache that was made from this very file and still hashes
    to the reference pixels (re-hashing 184 MB takes about 0.1 s); ``None`` when there is none.
    A stale or damaged cache is reported and passed over, to be written again."""
    for path in caches:
        if not path.is_file():
            continue
        try:
            with np.load(path) as c:
                made_from = str(c["source_sha256"])
                pixels = {s: c[f"{s}_x"] for s in ("train", "test")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            print(f"dpm_lab: ignoring unreadable cache {path} ({err}); decoding again",
                  file=sys.stderr)
            continue
        bad = [s for s, x in pixels.items() if _sha256(x) != expected[s]]
        if made_from != source_sha256 or bad:
            why = f"{', '.join(bad)} pixels differ" if bad else "made from another file"
            print(f"dpm_lab: ignoring cache {path} ({why}); decoding again", file=sys.stderr)
            continue
        return pixels
    return None


def _write_jpeg_cache(path: Path, source_sha256: str, pixels: dict) -> None:
    """Write the cache atomically: a temporary file in the same folder, then ``os.replace``, so a
    reader never sees half a file. A cache that cannot be written only costs the next load a
    decode, which is said on stderr."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, source_sha256=np.array(source_sha256),
                     **{f"{s}_x": x for s, x in pixels.items()})
        os.replace(tmp, path)
    except OSError as err:
        print(f"dpm_lab: could not write the decoded cache {path} ({err}); the next load decodes "
              "again", file=sys.stderr)
    finally:
        tmp.unlink(missing_ok=True)


def load_cifar10_jpeg(root=None,
                      expected: dict | None = None) -> tuple[TensorDataset, TensorDataset]:
    """All of CIFAR-10 as JPEG quality 75 (``cifar10_jpeg.npz``, ``data/README.md``): not the
    official pixels, label its numbers with ``dataset_label("cifar10-jpeg")``.

    The file's sha256 is checked (it covers the labels); the JPEGs are decoded once and the
    decoded arrays checked against the reference sha256s, so a decoder that gives other pixels is
    refused rather than trained on. The decoded arrays are cached (``JPEG_CACHE``) beside the
    file where its folder is writable, else under :func:`cache_dir`; a later load reads and
    re-verifies the cache instead of decoding. ``expected`` replaces ``JPEG_SHA256`` (keys
    ``file``, ``train``, ``test``) for tests.

    The file is sorted by class; the splits returned interleave the classes (every class's first
    image, then every class's second, ...), so that a prefix (``subset(n)``, a profile's
    ``n_train``) holds the classes in equal shares.
    """
    expected = expected or JPEG_SHA256
    path = _find(JPEG_FILE, root)
    if path is None:
        raise _missing("CIFAR-10 (JPEG q75)", JPEG_FILE, root,
                       "It ships beside the project in ../shared/data; copy it into data/. (The "
                       "official pixels are dataset cifar10: "
                       "`python -m dpm_lab download cifar10`.)")
    digest = _sha256(path.read_bytes())
    if digest != expected["file"]:
        raise DatasetNotFoundError(
            f"{path} is corrupt: sha256 {digest} != expected {expected['file']}. "
            f"Replace it with the original file from ../shared/data.")
    caches = [path.parent / JPEG_CACHE, cache_dir() / JPEG_CACHE]
    d = np.load(path)
    pixels = _read_jpeg_cache(digest, caches, expected)
    if pixels is None:
        pixels = {s: _decode_jpegs(d[f"{s}_jpeg"], d[f"{s}_offsets"]) for s in ("train", "test")}
        for s, x in pixels.items():
            got = _sha256(x)
            if got != expected[s]:
                import torchvision
                raise DatasetNotFoundError(
                    f"{path}: the decoded {s} images have sha256 {got}, expected {expected[s]} "
                    f"(the reference pixels of ../shared/data/README.md). This torchvision "
                    f"({torchvision.__version__}) decodes them differently, or the file is not "
                    f"the original; replace it with the file from ../shared/data.")
        _write_jpeg_cache(caches[0] if _writable(path.parent) else caches[1], digest, pixels)
    classes = [str(c) for c in d["classes"]]

    def split(s):
        y = d[f"{s}_y"]
        order = np.lexsort((y, d[f"{s}_class_rank"]))  # by rank within the class, then class
        images = torch.from_numpy(np.ascontiguousarray(pixels[s][order].transpose(0, 3, 1, 2)))
        return TensorDataset(images, torch.from_numpy(y[order].astype(np.int64)), classes,
                             CIFAR10_MEAN, CIFAR10_STD)

    return split("train"), split("test")


def _official_cifar_dir(cls, folder: str, root) -> Path | None:
    """The first ``folder`` under the data roots holding every file of torchvision's ``cls``
    (their checksums are torchvision's to check): an incomplete folder is passed over."""
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    for r in data_roots(root):
        if all((r / folder / f).is_file() for f in files):
            return r / folder
    return None


def load_torchvision_cifar(name: str, root=None, download: bool = False):
    """CIFAR-10/100 through torchvision, converted once to uint8 tensors."""
    from torchvision import datasets

    cls, folder, mean, std = {
        "cifar10": (datasets.CIFAR10, "cifar-10-batches-py", CIFAR10_MEAN, CIFAR10_STD),
        "cifar100": (datasets.CIFAR100, "cifar-100-python", CIFAR100_MEAN, CIFAR100_STD),
    }[name]
    found = _official_cifar_dir(cls, folder, root)
    base = found.parent if found is not None else data_roots(root)[0]
    if found is None and not download:
        raise _missing(f"A complete {name}", folder, root,
                       f"Download it with `python -m dpm_lab download {name}` "
                       f"(Python: load_dataset({name!r}, download=True)).")
    try:
        train = cls(str(base), train=True, download=download)
        test = cls(str(base), train=False, download=download)
    except RuntimeError as err:  # torchvision's integrity check failed
        raise DatasetNotFoundError(f"{name} under {base} is incomplete or corrupt ({err}). "
                                   f"Delete {base / folder} and download again.") from err

    def split(ds):
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        return TensorDataset(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes),
                             mean, std)

    return split(train), split(test)


def synthetic_dataset(n_train: int = 512, n_test: int = 256, num_classes: int = 10,
                      seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """Generated CIFAR-shaped data for unit tests: each class is a fixed random colour template,
    each image its class template plus noise, so a small CNN can learn it in one epoch."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, 3, 32, 32, generator=g) * 255

    def split(n):
        labels = torch.randint(0, num_classes, (n,), generator=g)
        noise = torch.randn(n, 3, 32, 32, generator=g) * 40
        images = (templates[labels] + noise).clamp(0, 255).to(torch.uint8)
        return TensorDataset(images, labels, [f"class{i}" for i in range(num_classes)],
                             (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    return split(n_train), split(n_test)


class TensorLoader:
    """Batches of a :class:`TensorDataset` held on ``device``, augmented and normalised on the
    batch.

    ``train=True`` shuffles and applies random crop (zero padding ``pad``) and horizontal flip; the
    randomness comes from a CPU generator seeded with ``(seed, epoch)``. Call ``set_epoch`` before
    iterating (the engine does). Yields ``(float images [B,3,H,W], int64 labels [B])``.

    Under DDP (see :mod:`dpm_lab.training.distributed`) ``batch_size`` is the *global* batch: every
    rank draws the same permutation and augmentation for the whole epoch and keeps its contiguous
    ``1/world_size`` of each batch, so the ranks together see exactly what one process would.
    Training batches must split evenly (``ValueError`` otherwise); an evaluation batch is split as
    evenly as it goes, and a rank whose share of the last one is empty skips it.
    """

    def __init__(self, dataset: TensorDataset, batch_size: int, train: bool, device="cpu",
                 seed: int = 0, pad: int = 4, drop_last: bool | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.mean = torch.tensor(dataset.mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(dataset.std, device=self.device).view(1, 3, 1, 1) * 255
        self.batch_size, self.train, self.seed, self.pad = batch_size, train, seed, pad
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if train:
            distributed.shard(batch_size, "training batch size")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Global batches per epoch (the same on every rank)."""
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        if self.train:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g).to(self.device)
            offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=g).to(self.device)
            flips = (torch.rand(n, generator=g) < 0.5).to(self.device)
        for i in range(len(self)):
            if self.train:
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            else:
                idx = torch.arange(i * self.batch_size, min((i + 1) * self.batch_size, n),
                                   device=self.device)
            if self.world > 1:
                idx = idx.tensor_split(self.world)[self.rank]
                if len(idx) == 0:
                    continue
            if self.train:
                x = augment(self.images[idx], offsets[idx], flips[idx], self.pad)
            else:
                x = self.images[idx]
            yield (x.float() - self.mean) / self.std, self.labels[idx]


def augment(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Batched RandomCrop(size, padding=pad) + RandomHorizontalFlip on uint8 ``[B,C,H,W]``.

    ``offsets[b] = (dy, dx)`` in ``[0, 2*pad]`` picks the crop window of image b in the zero-padded
    image; ``flips[b]`` mirrors it. One gather for the whole batch.
    """
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)          # [B, H]
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)          # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


def imagefolder_loaders(root, batch_size: int = 256, workers: int = 8, seed: int = 0,
                        image_size: int = 224):
    """ImageNet-style ``train/`` and ``val/`` folders as torchvision DataLoaders (ResNet-50 users):
    RandomResizedCrop + flip for training, Resize(256/224 of the size) + CenterCrop to evaluate.

    ``batch_size`` is the global batch. Under DDP the training loader draws through a
    ``DistributedSampler`` (seeded, reshuffled by the engine's ``set_epoch``, each rank
    ``batch_size / world_size`` images per step) and the validation loader gives rank ``r`` the
    images ``r, r + K, ...`` with no padding, so the accuracy summed over ranks counts every
    image exactly once.
    """
    from torch.utils.data import DataLoader, DistributedSampler
    from torchvision import datasets, transforms

    root = Path(root)
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise DatasetNotFoundError(f"ImageFolder split {root / sub} not found; expected "
                                       f"{root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG.")
    norm = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train_tf = transforms.Compose([transforms.RandomResizedCrop(image_size),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    val_tf = transforms.Compose([transforms.Resize(image_size * 256 // 224),
                                 transforms.CenterCrop(image_size), transforms.ToTensor(), norm])
    train = datasets.ImageFolder(str(root / "train"), train_tf)
    val = datasets.ImageFolder(str(root / "val"), val_tf)
    local = distributed.shard(batch_size, "training batch size")
    rank, world = distributed.rank(), distributed.world_size()
    sampler = DistributedSampler(train, world, rank, shuffle=True, seed=seed, drop_last=True)
    pin = torch.cuda.is_available()
    return (DataLoader(train, local, sampler=sampler, num_workers=workers, pin_memory=pin,
                       drop_last=True),
            DataLoader(val, max(local, 1), sampler=list(range(rank, len(val), world)),
                       num_workers=workers, pin_memory=pin))
