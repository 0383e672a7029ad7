"""The one shape every pruning method has in the pipeline (:func:`dpm_lab.experiments.runner.run`).

A run is always: start model (the dense checkpoint, reused) → :meth:`Method.prepare` (work
before training: sparse learning, a one-shot removal) → ``fit`` with the method's
:meth:`~Method.hooks` and :meth:`~Method.optimizer` → :meth:`Method.finalize` (physical removal
and the method's own record fields) → one record. A method is a small class that fills in those
four steps; the pipeline does data, dense reuse, checkpoints, resume and records the same way
for all of them, so adding a method touches no other method's file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ..pruning import SelfRectifying, SmoothPruning, effective_macs_params, finalize
from ..training.engine import evaluate


@dataclass
class Context:
    """What the pipeline hands a method: the resolved run (``res.config``, ``res.train``,
    ``res.recipe``, ``res.profile``), its data, the model's input size, the device, where its
    checkpoints go (``run_dir``) and where shared phases are cached (``runs_dir``)."""

    res: Any
    data: Any                 # experiments.Loaders
    size: tuple
    device: torch.device
    run_dir: Path
    runs_dir: Path
    progress: bool | None = None

    @property
    def seed(self) -> int:
        return self.res.config["seed"]

    @property
    def precision(self) -> str:
        """What every training phase of the run computes in (``fit``'s ``precision``): a
        method's own phases (sparse learning, TPP's regularisation, Tick-Tock) pass it on."""
        return self.res.profile.precision

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the run's training phase."""
        return self.res.train.epochs * len(self.data.train)


class Method:
    """One pruning method. Subclasses set ``start`` and override what they need.

    ``start``: the model training begins from: ``"dense"`` (the profile's dense checkpoint,
    trained once per seed and reused by every method), ``"scratch"`` (a freshly initialised
    model) or ``"torchvision"`` (torchvision's pretrained weights).
    ``checkpoint``: file name of the training checkpoint inside the run folder.
    """

    start = "dense"
    checkpoint = "finetune.ckpt"

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.config = ctx.res.config

    @property
    def desc(self) -> str:
        """Progress-bar label: the method, or ``host+method`` inside a host."""
        host, method = self.config["host"], self.config["method"]
        if host == "core":
            return method
        return host if method == "host" else f"{host}+{method}"

    def prepare(self, model: nn.Module) -> None:
        """Work before training (default: none)."""

    def hooks(self) -> list:
        """Training hooks ``fit`` calls (default: none)."""
        return []

    def optimizer(self) -> Callable | None:
        """``optimizer_factory(model, cfg)`` for ``fit``, or ``None`` for the recipe's SGD."""
        return None

    def finalize(self, model: nn.Module, history: list[dict]) -> tuple[nn.Module, dict]:
        """Remove what the method pruned; return the model and the record's extra fields,
        with ``history_tp`` (Torch-Pruning's pruning history, saved with the model)."""
        raise NotImplementedError


SR_METHODS = ("dpm", "tpp+dpm")          # the methods with Self-Rectifying
DECAY_METHODS = ("sp", "dpm", "tpp+dpm")  # the methods with Smooth Pruning
# the part of fine-tuning over which selection rounds run unless a run says otherwise (core, and
# TPP × DPM's replacing rounds)
DEFAULT_PRUNE_PHASE = 0.5


def selection_rounds(total_steps: int, decay_steps: int, prune_phase: float) -> list[int]:
    """Selection rounds every N steps over the first ``prune_phase`` of fine-tuning, the last one
    early enough that its structures reach zero before training ends."""
    last = min(int(prune_phase * total_steps), total_steps - decay_steps)
    return list(range(0, max(last, 0) + 1, decay_steps))


def rectifier(config: dict, total_steps: int) -> SelfRectifying | None:
    """The run's Self-Rectifying, recording its signals at about 1000 steps of the run so the
    record can summarise them (recording changes no decision)."""
    sr = config["options"].get("self_rectifying")
    every = max(1, total_steps // 1000)
    return SelfRectifying(**sr, record=True, record_every=every) if sr else None


def finish_decay(pruner: SmoothPruning, model: nn.Module, history: list[dict], ctx: Context,
                 extra: dict) -> tuple[nn.Module, dict]:
    """Record what Smooth Pruning did (schedule, releases, effective cost, SR signals), remove the
    zeroed structures, and evaluate the removed network."""
    channels = pruner.groups.split(pruner.pruned_ids())
    eff_macs, eff_params = effective_macs_params(model, channels, ctx.size)
    summary = pruner.rectifier.signal_summary(pruner.status) if pruner.rectifier else {}
    extra.update(decay=pruner.schedule(), releases=pruner.release_log, effective_macs=eff_macs,
                 effective_params=eff_params, selected=len(pruner.pruned_ids()),
                 released=len(pruner.released_ids()), sr_signals=summary)
    model, extra["history_tp"] = finalize(model, pruner, ctx.size)
    extra["soft_top1"] = history[-1]["test_acc"]
    extra["top1_after_finalize"] = evaluate(model, ctx.data.test, ctx.device)
    return model, extra
