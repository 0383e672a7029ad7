"""The training engine: ``fit`` and ``evaluate``, with hooks, checkpoints and exact resume.

The engine knows nothing about pruning. Pruning methods are :class:`Hook` objects called at fixed
points of every iteration::

    zero_grad -> forward -> backward -> hook.before_step -> optimizer.step -> scheduler.step
              -> hook.after_step

``before_step`` sees the gradients (regularisers edit them there); ``after_step`` sees the
weights the optimiser just produced, with the gradients still in place (Smooth Pruning rescales
there and Self-Rectifying reads the gradients there).

A hook may replace the model's parameters (iterative pruning removes channels physically between
steps): it then hands the engine an optimiser for the new ones with
:meth:`TrainState.replace_optimizer`, and the learning-rate schedule goes on from the same step.

The learning-rate schedule is stepped per iteration, and each epoch's batches come from a
generator seeded by ``(seed, epoch)``. A checkpoint written after every epoch holds the model,
optimiser, scheduler, RNG and hook states, so a run interrupted at any epoch boundary resumes to
the same final weights as an uninterrupted one (tested). Checkpoints hold tensors and plain data
only and are read without unpickling code (see :mod:`dpm_lab.training.checkpoint`).
"""
from __future__ import annotations

import functools
import math
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from tqdm import tqdm

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .config import PRECISIONS, TrainConfig


class Hook:
    """Base class of everything the engine calls during training. Override what you need.

    ``state.step`` counts optimiser steps already completed before the current one: inside
    ``before_step`` and ``after_step`` it is the 0-based index of the step being taken (the
    engine increments it after ``after_step``). ``state_dict``/``load_state_dict`` let a hook
    survive an interrupted run. ``on_resume`` runs when a run resumes, after every hook's
    ``load_state_dict`` and before the checkpoint's weights, optimiser and schedule load: a hook
    that changed the model's structure rebuilds it there (and the optimiser, with
    ``state.replace_optimizer(state.build_optimizer())``), so that they fit the saved tensors.
    """

    def on_fit_start(self, state: "TrainState") -> None: ...
    def on_resume(self, state: "TrainState") -> None: ...
    def before_step(self, state: "TrainState") -> None: ...
    def after_step(self, state: "TrainState") -> None: ...
    def on_epoch_end(self, state: "TrainState") -> None: ...
    def state_dict(self) -> dict: return {}
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainState:
    """What hooks can see: the live objects and the counters (``step`` counts optimiser steps).
    ``optimizer_factory(model, config)`` built ``optimizer`` (default :func:`make_optimizer`)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    config: TrainConfig
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    optimizer_factory: Callable | None = field(default=None, repr=False)

    @property
    def total_steps(self) -> int:
        return self.config.epochs * self.steps_per_epoch

    def build_optimizer(self) -> torch.optim.Optimizer:
        """A fresh optimiser, as the run built its first, for the model's current parameters."""
        return (self.optimizer_factory or make_optimizer)(self.model, self.config)

    def replace_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Train on with ``optimizer``, built for parameters a hook replaced (Torch-Pruning
        replaces the ``Parameter`` objects of every layer it cuts, so the old optimiser would
        update tensors the model no longer holds). Its parameter groups take the old ones'
        hyperparameters, the learning rate the schedule set included, and a new schedule of the
        same factors continues from the same step. What the optimiser's per-parameter state
        holds (momentum) is the caller's choice: fresh, or carried over before calling this."""
        old = self.optimizer
        if len(optimizer.param_groups) != len(old.param_groups):
            raise ValueError(f"the new optimiser has {len(optimizer.param_groups)} parameter "
                             f"groups, the old one {len(old.param_groups)}: they must match")
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.scheduler.lr_lambdas)
        scheduler.load_state_dict(self.scheduler.state_dict())
        for new, group in zip(optimizer.param_groups, old.param_groups):
            new.update({k: v for k, v in group.items() if k != "params"})
        self.optimizer, self.scheduler = optimizer, scheduler


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)


class LRFactor:
    """Learning-rate multiplier at an iteration.

    ``LambdaLR.state_dict`` saves this object's attributes in the checkpoint, which holds plain
    data only (see :mod:`dpm_lab.training.checkpoint`), so they are the plain values the schedule
    reads, not the ``TrainConfig``.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        self.schedule, self.gamma, self.milestones = cfg.schedule, cfg.gamma, list(cfg.milestones)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = cfg.epochs * steps_per_epoch

    def __call__(self, it: int) -> float:
        t = min(it / max(self.total_steps, 1), 1.0)
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "multistep":
            return self.gamma ** sum(it >= m * self.steps_per_epoch for m in self.milestones)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if self.schedule == "triangular":  # Gate Decorator's: lr/10 up to lr at mid-run, back down
            return 0.1 + 0.9 * (1 - abs(2 * t - 1))
        # one-cycle: linear warm-up over the first 30 % from lr/25, cosine down to lr/1e4.
        if t < 0.3:
            return 0.04 + 0.96 * t / 0.3
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - 0.3) / 0.7))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def evaluate(model: nn.Module, loader, device=None) -> float:
    """Top-1 accuracy in percent on ``loader`` (eval mode; one host sync at the end). Under DDP
    each rank evaluates its shard and the counts are summed, so every rank returns the accuracy
    over the whole split (every rank must call it)."""
    device = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    counts = torch.zeros(2, device=device, dtype=torch.int64)  # correct, seen
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        counts[0] += (model(_layout(x, device)).argmax(1) == y).sum()
        counts[1] += len(y)
    model.train(was_training)
    correct, seen = distributed.all_sum(counts).tolist()
    return 100.0 * correct / max(seen, 1)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse an unknown ``precision``, and ``bf16`` on a device without bfloat16 kernels (a CPU
    without oneDNN's bf16 support, which needs AVX-512, or a CUDA card before Ampere): there
    autocast would still run, emulated and slower than float32 (16x slower on a 2-core AVX2
    EPYC, results/reference/bench/cpu_speed_avx2.json), which is never what bf16 is asked for.
    An error, not a fallback to fp32: the run's identity and record say bf16, so it must train
    in bf16 or not at all."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16":
        if device.type == "cuda":
            supported = torch.cuda.is_bf16_supported(including_emulation=False)
        else:
            supported = (device.type == "cpu" and torch.backends.mkldnn.is_available()
                         and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if not supported:
            raise ValueError(f"precision 'bf16' needs bfloat16 kernels, which device {device} "
                             f"lacks (CPU: oneDNN bf16, i.e. AVX-512; CUDA: Ampere or newer); "
                             f"use precision 'fp32', which is another run with its own id and "
                             f"dense model (not paired with bf16 records), or a machine that "
                             f"has them")


def _autocast(device: torch.device, precision: str):
    # bf16: the ops autocast lists (convolutions, linear layers) run in bfloat16, the rest, the
    # parameters and the optimiser's state stay float32
    return (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
            else nullcontext())


@functools.lru_cache(maxsize=None)  # asked per batch (_layout); the answer is fixed per process
def memory_format(device) -> torch.memory_format:
    """The memory format the engine trains and evaluates in on ``device``: channels_last on CUDA
    (tensor cores) and on CPUs whose kernels are AVX-512, where it was measured ~45 % faster for
    ResNet-20 training (2 cores, torch 2.14: 920-960 vs 634-668 img/s at batch 128); NCHW on
    every other CPU. On AVX2, torch 2.14.1's oneDNN breaks in channels_last: the weight gradient
    of a 1x1 convolution of stride 2 whose input channels are not a multiple of 8 (the
    downsampling shortcut of a pruned ResNet, e.g. 5 -> 6 channels) corrupts the heap, and the
    process aborts, dies of a bus error or hangs (2-core Zen 3, 2026-12-07)::

        conv = nn.Conv2d(5, 6, 1, stride=2, bias=False).to(memory_format=torch.channels_last)
        x = torch.randn(128, 5, 32, 32).to(memory_format=torch.channels_last)
        conv(x).sum().backward()   # "free(): invalid next size"; fine in NCHW or with 8 inputs

    Dense ResNet-20 trains 1.5x faster there in channels_last (442 against 297 img/s,
    results/reference/bench/cpu_speed_avx2.json), but a rule that looked at the shapes would have
    to follow every pruning round; the whole engine runs NCHW on such a CPU instead."""
    device = torch.device(device)
    fast = device.type == "cuda" or (device.type == "cpu" and
                                     torch.backends.cpu.get_cpu_capability().startswith("AVX512"))
    return torch.channels_last if fast else torch.contiguous_format


def place_model(model: nn.Module, device) -> nn.Module:
    """Move ``model`` to ``device`` in the engine's :func:`memory_format`."""
    return model.to(torch.device(device), memory_format=memory_format(device))


def _layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    # the model's memory format (place_model), so that no convolution changes layout per step
    return x.contiguous(memory_format=memory_format(device))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``, which is often
    empty on Linux), ``"unknown"`` when neither says; then its family and model numbers and the
    vector instructions torch's kernels use. A virtual machine's name alone can hide the chip:
    "AMD EPYC" has named both a Zen 3 (family 25 model 1, AVX2: no bf16 kernels) and a Zen 4
    (AVX512) here, whose floats and speeds differ."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "cpu family", "model") and key.strip() not in fields:
                fields[key.strip()] = value.strip()
            if not line.strip() and fields:
                break  # the first processor's block is enough
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown"
    numbers = (f"family {fields['cpu family']} model {fields['model']}, "
               if "cpu family" in fields and "model" in fields else "")
    return f"{name} ({numbers}{torch.backends.cpu.get_cpu_capability()})"


def machines(history: list[dict]) -> list[dict]:
    """The machines a history was trained on, in epoch order: ``{"from_epoch", "cpu",
    "threads"}`` each time the CPU model or thread count changes. Every epoch of ``fit`` records
    both, because a run resumed elsewhere (another CPU model, another thread count) computes
    other floats from there on; epochs written before they were recorded are skipped."""
    out = []
    for h in history:
        if "cpu" in h and (not out or (out[-1]["cpu"], out[-1]["threads"]) != (h["cpu"], h["threads"])):
            out.append({"from_epoch": h["epoch"], "cpu": h["cpu"], "threads": h["threads"]})
    return out


def fit(model: nn.Module, train_loader, test_loader, cfg: TrainConfig, hooks=(), *,
        checkpoint: str | os.PathLike | None = None, resume: bool = False, device=None,
        seed: int = 0, progress: bool | None = None, desc: str = "train",
        optimizer_factory=None, val_loader=None, precision: str = "fp32") -> list[dict]:
    """Train ``model`` for ``cfg.epochs`` and return the per-epoch history.

    ``checkpoint``: a file rewritten (atomically) after every epoch. ``resume=True`` continues
    from it when it exists. ``progress=None`` shows a tqdm bar only on a terminal and one line per
    epoch everywhere; ``progress=False`` is silent.
    The model runs in channels_last where that is fast and sound (:func:`memory_format`).
    ``precision``: ``"fp32"`` (the default, on every device), or ``"bf16"``: the forward pass and
    the loss of each training step under ``torch.autocast(dtype=torch.bfloat16)``, so
    convolutions compute in bfloat16 while the parameters, their gradients, the optimiser's
    state and what hooks do to them (Smooth Pruning's decay, its exact zeros) stay float32.
    Measured 1.64x the fp32 engine's throughput on a 2-core AVX-512-BF16 CPU
    (results/reference/bench/cpu_speed.json); against fp32, paired over 3 seeds of the full
    profile's dense ResNet-20, validation top-1 moved by +0.13 [−0.81, +1.07] points
    (docs/results.md, "bf16 against fp32"). Evaluation always runs in float32, whatever
    ``precision``: the reported accuracies then measure the trained weights alone, comparable
    between the two. A device without bfloat16 kernels refuses ``bf16`` (:func:`check_precision`).
    ``optimizer_factory(model, cfg) -> Optimizer`` replaces the default SGD (a host's own
    optimiser, e.g. OTOv2's DHSPG); it is called after the model is on ``device``.
    ``val_loader``: a held-out validation split, evaluated after every epoch into ``val_acc``
    (the number to choose hyperparameters on; ``test_acc`` is reported, never tuned on).

    Launched by ``torchrun`` (see :mod:`dpm_lab.training.distributed`), the forward pass runs
    through DistributedDataParallel, the loaders give each rank its shard of the global batch, hooks
    see the plain model (whose gradients DDP has already averaged), the history sums over ranks and
    only rank 0 writes the checkpoint and prints.
    """
    device = torch.device(device) if device else default_device()
    check_precision(precision, device)
    place_model(model, device)
    torch.manual_seed(seed)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError("the training loader yields no batch (dataset smaller than one batch?)")
    factory = optimizer_factory or make_optimizer
    optimizer = factory(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(cfg, steps_per_epoch))
    state = TrainState(model, optimizer, scheduler, cfg, steps_per_epoch,
                       optimizer_factory=factory)
    main = distributed.is_main()
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    if resume and checkpoint and Path(checkpoint).exists():
        _load_train_state(checkpoint, state, hooks)
    else:
        for h in hooks:
            h.on_fit_start(state)
    # the forward pass (DDP under torchrun); hooks and checkpoints use ``model``. Wrapped again
    # whenever a hook replaced the optimiser, i.e. the parameters
    net, wrapped_for = distributed.wrap(model), state.optimizer

    model.train()
    for epoch in range(state.epoch, cfg.epochs):
        state.epoch = epoch
        for epochs in (train_loader, getattr(train_loader, "sampler", None)):
            if hasattr(epochs, "set_epoch"):  # TensorLoader, or a DataLoader's DistributedSampler
                epochs.set_epoch(epoch)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{cfg.epochs}",
                   disable=(None if progress is None else not progress) if main else True,
                   leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            state.optimizer.zero_grad(set_to_none=True)
            with _autocast(device, precision):
                out = net(_layout(x, device))
                loss = criterion(out, y)
            loss.backward()
            for h in hooks:
                h.before_step(state)
            state.optimizer.step()
            state.scheduler.step()
            for h in hooks:
                h.after_step(state)
            if state.optimizer is not wrapped_for:
                net, wrapped_for = distributed.wrap(model), state.optimizer
            state.step += 1
            loss_sum += loss.detach() * len(y)
            correct += (out.detach().argmax(1) == y).sum()
            seen += len(y)
        train_time = time.perf_counter() - t0
        test_acc = evaluate(model, test_loader, device)
        totals = torch.stack([loss_sum.double(), correct.double(),
                              torch.tensor(float(seen), device=device, dtype=torch.float64)])
        loss_sum, correct, seen = distributed.all_sum(totals).tolist()  # over ranks
        state.history.append({
            "epoch": epoch + 1, "step": state.step, "lr": state.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
            "test_acc": test_acc, "epoch_time_s": train_time,
            "images_per_s": seen / train_time, "cpu": cpu_model(), "threads": torch.get_num_threads(),
        })
        if val_loader is not None:
            state.history[-1]["val_acc"] = evaluate(model, val_loader, device)
        if progress is not False and main:   # a tuning run (val_loader) shows what it tunes on
            shown = (f"val top-1 {state.history[-1]['val_acc']:.2f}%" if val_loader is not None
                     else f"test top-1 {test_acc:.2f}%")
            tqdm.write(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss "
                       f"{state.history[-1]['train_loss']:.3f} {shown}")
        state.epoch = epoch + 1
        for h in hooks:  # before the checkpoint, so what a hook adds to the history is kept
            h.on_epoch_end(state)
        if checkpoint:
            _save_train_state(checkpoint, state, hooks)
    return state.history


def _save_train_state(path, state: TrainState, hooks) -> None:
    save_checkpoint({
        "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(), "epoch": state.epoch, "step": state.step,
        "history": state.history, "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "hooks": [h.state_dict() for h in hooks],
    }, path)


def _load_train_state(path, state: TrainState, hooks) -> None:
    ck = load_checkpoint(path)
    # hooks added after the checkpoint was written may start fresh if they say their state is
    # optional (a recording hook such as pruning.NormSample); any other mismatch is refused
    extra = hooks[len(ck["hooks"]):]
    if len(ck["hooks"]) > len(hooks) or not all(getattr(h, "optional_state", False)
                                                for h in extra):
        raise ValueError(f"checkpoint {path} was written with {len(ck['hooks'])} hooks, "
                         f"this run has {len(hooks)}")
    # hooks first: one that changed the model's structure rebuilds it (on_resume) before the
    # weights load; the RNG last, since rebuilding may draw from it (tracing inputs)
    for h, s in zip(hooks, ck["hooks"]):
        h.load_state_dict(s)
    state.epoch, state.step, state.history = ck["epoch"], ck["step"], ck["history"]
    for h in hooks:
        h.on_resume(state)
    state.model.load_state_dict(ck["model"])
    state.optimizer.load_state_dict(ck["optimizer"])
    state.scheduler.load_state_dict(ck["scheduler"])
    torch.set_rng_state(ck["rng_cpu"])
    if ck["rng_cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ck["rng_cuda"])
