"""Pipelines: dense training, then pruning + fine-tuning with one method, each writing a record.

Fairness by construction: every method of a (profile, model, dataset, seed) starts from the *same*
dense checkpoint (trained once, then reused) and trains for the *same* number of fine-tune epochs;
records keep the final-epoch accuracy with the best epoch beside it.

Interrupted runs lose nothing: each phase checkpoints every epoch and resumes; a finished phase is
detected by its record and reused.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .config import Profile, get_profile
from .data import TensorLoader, load_dataset
from .engine import atomic_save, default_device, evaluate, fit
from .metrics import macs_params
from .models import get_model, input_size
from .pruning import (ChannelGroups, ChannelRatio, MacsTarget, SelfRectifying, SmoothPruning,
                      effective_macs_params, finalize, save_pruned, single_step_prune)
from .results import RESULTS_DIR, make_record, write_record

METHODS = ("single-step", "sp", "dpm")
RUNS_DIR = RESULTS_DIR.parent / "runs"


def loaders(profile: Profile, seed: int, device, data_root=None):
    """Train and test :class:`TensorLoader` for a profile (data held on ``device``)."""
    train, test = load_dataset(profile.dataset, root=data_root, seed=seed)
    train, test = train.subset(profile.n_train), test.subset(profile.n_test)
    return (TensorLoader(train, profile.batch_size, train=True, device=device, seed=seed),
            TensorLoader(test, 512, train=False, device=device), train.num_classes)


def _tag(profile: Profile, seed: int) -> str:
    return f"{profile.model}_{profile.dataset}_s{seed}"


def train_dense(profile: Profile | str | None = None, seed: int = 0, *, runs_dir=RUNS_DIR,
                results_dir=RESULTS_DIR, device=None, data_root=None, progress=None):
    """Train (or reuse) the dense model of ``profile`` and ``seed``; return ``(model, record)``."""
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    device = torch.device(device) if device else default_device()
    run = Path(runs_dir) / profile.name / "dense" / _tag(profile, seed)
    record_path = Path(results_dir) / profile.name / "dense" / f"{_tag(profile, seed)}.json"
    train_loader, test_loader, num_classes = loaders(profile, seed, device, data_root)
    torch.manual_seed(seed)
    model = get_model(profile.model, num_classes)
    if (run / "model.pt").exists() and record_path.exists():
        model.load_state_dict(torch.load(run / "model.pt", map_location="cpu"))
        return model.to(device), json.loads(record_path.read_text())
    t0 = time.time()
    history = fit(model, train_loader, test_loader, profile.dense, checkpoint=run / "train.ckpt",
                  resume=True, device=device, seed=seed, progress=progress, desc="dense")
    atomic_save(model.state_dict(), run / "model.pt")
    macs, params = macs_params(model, input_size(profile.model))
    record = make_record("dense", config=profile.to_dict(), profile=profile.name, seed=seed,
                         dataset=profile.dataset, model=profile.model, history=history, macs=macs,
                         params=params, wall_time_s=time.time() - t0, device=str(device),
                         checkpoint=str(run / "model.pt"))
    write_record(record, record_path)
    return model, record


def selection_rounds(total_steps: int, decay_steps: int, prune_phase: float) -> list[int]:
    """Selection rounds every N steps over the first ``prune_phase`` of fine-tuning, the last one
    early enough that its structures reach zero before training ends."""
    last = min(int(prune_phase * total_steps), total_steps - decay_steps)
    return list(range(0, max(last, 0) + 1, decay_steps))


def run_pruning(method: str, profile: Profile | str | None = None, seed: int = 0, *,
                target_macs: float | None = 0.5, channel_ratio: float | None = None,
                criterion: str = "l2", decay_steps: int | None = None, prune_phase: float = 0.5,
                t_rate: float = 0.5, t_len: float = 1.0, rule: str = "all", window: int = 10,
                runs_dir=RUNS_DIR, results_dir=RESULTS_DIR, device=None, data_root=None,
                progress=None) -> dict:
    """Dense (reused) → prune with ``method`` → fine-tune → finalize; write and return a record.

    ``method``: ``single-step`` (remove at once, then fine-tune), ``sp`` (Smooth Pruning during
    fine-tuning) or ``dpm`` (SP + Self-Rectifying). Exactly one of ``target_macs`` (fraction of
    dense MACs kept) and ``channel_ratio`` (fraction of each group removed) sets the target.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if (target_macs is None) == (channel_ratio is None):
        raise ValueError("give exactly one of target_macs and channel_ratio")
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    device = torch.device(device) if device else default_device()
    target = MacsTarget(target_macs) if target_macs is not None else ChannelRatio(channel_ratio)
    target_tag = f"m{target_macs}" if target_macs is not None else f"c{channel_ratio}"
    N = decay_steps or profile.decay_steps
    name = f"{_tag(profile, seed)}_{method}_{target_tag}_{criterion}"
    if method != "single-step":
        name += f"_N{N}"
    run = Path(runs_dir) / profile.name / "prune" / name
    record_path = Path(results_dir) / profile.name / "prune" / f"{name}.json"
    if record_path.exists():  # finished before: a sweep resumes where it stopped
        return json.loads(record_path.read_text())

    model, dense = train_dense(profile, seed, runs_dir=runs_dir, results_dir=results_dir,
                               device=device, data_root=data_root, progress=progress)
    train_loader, test_loader, _ = loaders(profile, seed, device, data_root)
    size = input_size(profile.model)
    dense_macs, dense_params = macs_params(model, size)
    t0 = time.time()
    extra = {}
    if method == "single-step":
        model, history_tp, ids = single_step_prune(model, target, criterion, size)
        hooks = []
        extra["selected"] = len(ids)
    else:
        total = profile.finetune.epochs * len(train_loader)
        rounds = selection_rounds(total, N, prune_phase)
        rectifier = SelfRectifying(t_rate, t_len, rule, window) if method == "dpm" else None
        groups = ChannelGroups(model, torch.randn(*size, device=device))
        pruner = SmoothPruning(groups, target, N, criterion, rounds, rectifier, size)
        hooks = [pruner]
    history = fit(model, train_loader, test_loader, profile.finetune, hooks,
                  checkpoint=run / "finetune.ckpt", resume=True, device=device, seed=seed,
                  progress=progress, desc=method)
    if method != "single-step":
        channels = groups.split(pruner.pruned_ids())
        eff_macs, eff_params = effective_macs_params(model, channels, size)
        soft_top1 = history[-1]["test_acc"]
        extra.update(decay=pruner.schedule(), releases=pruner.release_log,
                     selected=len(pruner.pruned_ids()), effective_macs=eff_macs,
                     effective_params=eff_params, released=len(pruner.released_ids()))
        model, history_tp = finalize(model, pruner, size)
        extra["top1_after_finalize"] = evaluate(model, test_loader, device)
        extra["soft_top1"] = soft_top1
    macs, params = macs_params(model, size)
    save_pruned(run / "model.pt", model, history_tp, model_name=profile.model)
    record = make_record(
        "prune", config={"profile": profile.to_dict(), "method": method, "target_macs": target_macs,
                         "channel_ratio": channel_ratio, "criterion": criterion, "decay_steps": N,
                         "prune_phase": prune_phase, "t_rate": t_rate, "t_len": t_len, "rule": rule,
                         "window": window},
        profile=profile.name, seed=seed, dataset=profile.dataset, model=profile.model,
        history=history, macs=macs, params=params, wall_time_s=time.time() - t0, method=method,
        target_macs=target_macs, channel_ratio=channel_ratio, dense_macs=dense_macs,
        dense_params=dense_params, dense_top1=dense["final_top1"], macs_ratio=macs / dense_macs,
        params_ratio=params / dense_params, device=str(device), **extra)
    write_record(record, record_path)
    return record


def sweep(methods=METHODS, targets=(0.5, 0.25, 0.1), seeds=(0, 1, 2), profile=None, **kwargs):
    """Every method × MACs target × seed (dense checkpoints shared per seed); finished runs are
    skipped, so an interrupted sweep resumes. Returns the records."""
    return [run_pruning(m, profile, seed, target_macs=t, **kwargs)
            for seed in seeds for t in targets for m in methods]
