"""Training throughput: dpm_lab's engine data path against the conventional DataLoader path.

What is measured
    Images per second of training steps (forward, backward, SGD step) of the same model, batch
    size, optimiser and device, fed by two data paths, both over the offline CIFAR-10 slice:

    - ``engine``: :class:`dpm_lab.training.data.TensorLoader` — the uint8 split lives on the
      device; random crop (4-pixel zero padding), horizontal flip and normalisation run on the
      whole batch.
    - ``dataloader``: what ``torchvision.datasets.CIFAR10`` does per image (HWC uint8 array ->
      PIL image -> RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize), batched by
      ``torch.utils.data.DataLoader`` with ``--workers`` worker processes (default 2, this machine's
      cores). Workers are persistent, so no worker start-up is timed.

    The training step is the one ``dpm_lab.training.engine.fit`` runs (on CUDA with
    ``precision="bf16"``: bf16 autocast and channels_last; fp32 NCHW on CPU). Each path gets
    ``--warmup`` untimed steps, then ``--steps`` timed steps; this is repeated ``--repeats``
    times with the order of the two paths alternating, and the median of the repeats is
    reported. On CUDA the device is synchronised before and after each timed window.

    On CUDA the script also times one full ResNet-56 epoch of ``fit`` over 50,000 images (the
    slice tiled to CIFAR-10's training-set size), after a short warm-up ``fit``, for comparison
    with Torch-Pruning's DataLoader-bound CIFAR logs (16-54 s per epoch).

How to read the result
    ``ratio`` = engine img/s / dataloader img/s; above 1 the engine path trains faster. After the
    warm-up the DataLoader has up to ``workers * 2`` batches prefetched, which the timed window
    gets for free, so with few steps its number is if anything optimistic. Timings are only
    meaningful on an otherwise idle machine.

Usage
    python benchmarks/throughput.py [--model resnet20] [--batch 128] [--steps 40] [--json out.json]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from dpm_lab.experiments.results import benchmark_record, write_record
from dpm_lab.training.config import TrainConfig
from dpm_lab.training.data import DATASET_NAMES, TensorDataset, TensorLoader, load_dataset
from dpm_lab.training.engine import (_autocast, _layout, default_device, fit, make_optimizer,
                                     place_model)
from dpm_lab.training.models import MODEL_NAMES, get_model

CIFAR10_TRAIN_SIZE = 50_000
# the precision the CUDA measurements train in (fit's default is fp32 on every device; these
# numbers were taken when the engine ran bf16 autocast on CUDA by itself)
CUDA_PRECISION = "bf16"


class PILImageDataset(Dataset):
    """HWC uint8 images served as PIL images through torchvision transforms, exactly as
    ``torchvision.datasets.CIFAR10.__getitem__`` does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def dataloader_path(data: TensorDataset, batch: int, workers: int, device: torch.device):
    """The conventional pipeline over the same uint8 pixels as the engine path."""
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(data.mean, data.std),
    ])
    hwc = data.images.permute(0, 2, 3, 1).numpy()
    dataset = PILImageDataset(hwc, data.labels.numpy(), transform)
    return DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=True,
                      persistent_workers=workers > 0)


def endless(loader):
    """Batches of ``loader``, epoch after epoch (``set_epoch`` called when the loader has it)."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def train_step(model, optimizer, criterion, x, y, device: torch.device) -> None:
    """One step as ``fit`` runs it, without hooks or the scheduler."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with _autocast(device, CUDA_PRECISION if device.type == "cuda" else "fp32"):
        loss = criterion(model(_layout(x, device)), y)
    loss.backward()
    optimizer.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(batches, model, optimizer, criterion, device, warmup: int, steps: int,
                 batch: int) -> float:
    """Train ``warmup`` untimed steps, then return the throughput of the next ``steps``."""
    for _ in range(warmup):
        train_step(model, optimizer, criterion, *next(batches), device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, criterion, *next(batches), device)
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def resnet56_epoch_s(data: TensorDataset, test: TensorDataset, batch: int,
                     device: torch.device) -> dict:
    """Wall time of one ``fit`` epoch of ResNet-56 over the slice tiled to 50,000 images.

    The time includes fit's test pass over the slice's test split (1,017 images). fit's own
    train-loop timer (``epoch_time_s``) is returned beside it.
    """
    reps = -(-CIFAR10_TRAIN_SIZE // len(data))
    tiled = TensorDataset(data.images.repeat(reps, 1, 1, 1)[:CIFAR10_TRAIN_SIZE],
                          data.labels.repeat(reps)[:CIFAR10_TRAIN_SIZE],
                          data.classes, data.mean, data.std)
    model = get_model("resnet56", data.num_classes)
    test_loader = TensorLoader(test, 1000, train=False, device=device)
    warm_loader = TensorLoader(data.subset(20 * batch), batch, train=True, device=device)
    fit(model, warm_loader, test_loader, TrainConfig(epochs=1), device=device, progress=False,
        precision=CUDA_PRECISION)
    train_loader = TensorLoader(tiled, batch, train=True, device=device)
    sync(device)
    t0 = time.perf_counter()
    history = fit(model, train_loader, test_loader, TrainConfig(epochs=1), device=device,
                  progress=False, precision=CUDA_PRECISION)
    sync(device)
    return {"wall_s": time.perf_counter() - t0, "fit_epoch_time_s": history[0]["epoch_time_s"],
            "images": len(tiled), "steps": len(train_loader)}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default="resnet20", help="default resnet20")
    p.add_argument("--batch", type=positive_int, default=128, help="batch size (default 128)")
    p.add_argument("--steps", type=positive_int, default=40,
                   help="timed steps per path and repeat (default 40)")
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed steps before each timing (default 5)")
    p.add_argument("--repeats", type=positive_int, default=2,
                   help="timings per path, order alternating; the median is reported (default 2)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--dataset", choices=DATASET_NAMES, default="cifar10-slice",
                   help="default cifar10-slice (the offline CIFAR-10 slice)")
    p.add_argument("--data-root", default=None, help="folder holding the dataset")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and batches (default 0)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)

    device = torch.device(args.device) if args.device else default_device()
    torch.manual_seed(args.seed)
    train, test = load_dataset(args.dataset, args.data_root)
    if len(train) < args.batch:
        p.error(f"--batch {args.batch} is larger than the dataset ({len(train)} images)")
    model = place_model(get_model(args.model, train.num_classes), device)
    model.train()
    criterion = nn.CrossEntropyLoss()
    optimizer = make_optimizer(model, TrainConfig(epochs=1))
    paths = {
        "engine": endless(TensorLoader(train, args.batch, train=True, device=device,
                                       seed=args.seed)),
        "dataloader": endless(dataloader_path(train, args.batch, args.workers, device)),
    }
    print(f"device: {device}  model: {args.model}  batch: {args.batch}  dataset: {args.dataset} "
          f"({len(train)} images)  torch: {torch.__version__}  threads: {torch.get_num_threads()}  "
          f"workers: {args.workers}  steps: {args.steps} (+{args.warmup} warm-up) x {args.repeats}")

    runs = {name: [] for name in paths}
    for r in range(args.repeats):
        order = list(paths) if r % 2 == 0 else list(reversed(paths))
        for name in order:
            ips = images_per_s(paths[name], model, optimizer, criterion, device, args.warmup,
                               args.steps, args.batch)
            runs[name].append(ips)
            print(f"  repeat {r + 1} {name}: {ips:.1f} img/s")
    engine, loader = statistics.median(runs["engine"]), statistics.median(runs["dataloader"])
    print(f"engine: {engine:.1f} img/s")
    print(f"dataloader: {loader:.1f} img/s")
    print(f"ratio: {engine / loader:.2f}x")

    result = benchmark_record("throughput", device, **{
        "model": args.model, "batch": args.batch,
        "dataset": args.dataset, "images": len(train), "steps": args.steps, "warmup": args.warmup,
        "repeats": args.repeats, "workers": args.workers,
        "engine_img_s": engine, "dataloader_img_s": loader, "ratio": engine / loader,
        "runs_img_s": runs,
    })
    if device.type == "cuda":
        epoch = resnet56_epoch_s(train, test, args.batch, device)
        print(f"resnet56 epoch: {epoch['wall_s']:.1f} s  ({epoch['images']} images, "
              f"{epoch['steps']} steps; fit's train-loop timer: {epoch['fit_epoch_time_s']:.1f} s; "
              f"Torch-Pruning's DataLoader-bound logs: 16-54 s)")
        result["resnet56_epoch"] = epoch
    if args.json:
        print(f"wrote {write_record(result, args.json)}")
    return result


if __name__ == "__main__":
    main()
