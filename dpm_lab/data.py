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
  (``cifar10_prefix_subset.npz``), sha256-checked.
- ``synthetic``: a small generated, learnable dataset for unit tests; needs no files and is only
  ever used when asked for by name.

- ``imagenet``: ImageNet-style folders ``imagenet/train/<class>/*`` and ``imagenet/val/<class>/*``
  under the data root. They do not fit in memory as tensors; ``imagefolder_loaders`` returns
  standard torchvision DataLoaders for them (DDP-aware), which the engine accepts as well.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .paths import data_roots

DATASET_NAMES = ("cifar10", "cifar100", "cifar10-slice", "synthetic", "imagenet")

SLICE_FILE = "cifar10_prefix_subset.npz"
SLICE_SHA256 = "0e736ea7bc29037f1d962852dda9c26a2c09487d25af56ec61e366e3d5c1f337"

# Channel statistics used by Torch-Pruning's CIFAR benchmark (``benchmarks/main.py`` there).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing or corrupt; the message says where we looked and how to fix it."""


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
    return load_torchvision_cifar(name, root, download)


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


def load_cifar10_slice(root=None) -> tuple[TensorDataset, TensorDataset]:
    """The offline slice of real CIFAR-10 (see ``data/README.md``), after checking its sha256."""
    path = _find(SLICE_FILE, root)
    if path is None:
        raise _missing("The CIFAR-10 slice", SLICE_FILE, root,
                       "It ships beside the project in ../shared/data; copy it into data/.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SLICE_SHA256:
        raise DatasetNotFoundError(
            f"{path} is corrupt: sha256 {digest} != expected {SLICE_SHA256}. "
            f"Replace it with the original file from ../shared/data.")
    d = np.load(path)
    classes = [str(c) for c in d["classes"]]

    def split(x, y):
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        return TensorDataset(images, torch.from_numpy(y.astype(np.int64)), classes,
                             CIFAR10_MEAN, CIFAR10_STD)

    return split(d["train_x"], d["train_y"]), split(d["test_x"], d["test_y"])


def load_torchvision_cifar(name: str, root=None, download: bool = False):
    """CIFAR-10/100 through torchvision, converted once to uint8 tensors."""
    from torchvision import datasets

    cls, folder, mean, std = {
        "cifar10": (datasets.CIFAR10, "cifar-10-batches-py", CIFAR10_MEAN, CIFAR10_STD),
        "cifar100": (datasets.CIFAR100, "cifar-100-python", CIFAR100_MEAN, CIFAR100_STD),
    }[name]
    found = _find(folder, root)
    base = found.parent if found is not None else data_roots(root)[0]
    if found is None and not download:
        raise _missing(name, folder, root,
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
    """Batches of a :class:`TensorDataset` held on ``device``, augmented and normalised on the batch.

    ``train=True`` shuffles and applies random crop (zero padding ``pad``) and horizontal flip; the
    randomness comes from a CPU generator seeded with ``(seed, epoch)``. Call ``set_epoch`` before
    iterating (the engine does). Yields ``(float images [B,3,H,W], int64 labels [B])``.

    Under DDP (see :mod:`dpm_lab.distributed`) ``batch_size`` is the *global* batch: every rank
    draws the same permutation and augmentation for the whole epoch and keeps its contiguous
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
