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
from dataclasses import replace
from pathlib import Path

import torch

from .config import Profile, get_profile
from .data import TensorLoader, load_dataset
from .engine import atomic_save, default_device, evaluate, fit
from .metrics import macs_params
from .models import get_model, input_size
from .pruning import (ChannelGroups, ChannelRatio, MacsTarget, SelfRectifying, SmoothPruning,
                      effective_macs_params, finalize, remove_channels, save_pruned,
                      single_step_prune)
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
        params_ratio=params / dense_params, device=str(device),
        checkpoint=str(run / "model.pt"), **extra)
    write_record(record, record_path)
    return record


def sweep(methods=METHODS, targets=(0.5, 0.25, 0.1), seeds=(0, 1, 2), profile=None, **kwargs):
    """Every method × MACs target × seed (dense checkpoints shared per seed); finished runs are
    skipped, so an interrupted sweep resumes. Returns the records."""
    return [run_pruning(m, profile, seed, target_macs=t, **kwargs)
            for seed in seeds for t in targets for m in methods]


# ---- host frameworks (DepGraph, OTOv2): host vs host + SP vs host + DPM ----

HOST_METHODS = ("host", "sp", "dpm")


def run_host(host: str, method: str, profile: Profile | str | None = None, seed: int = 0, *,
             sparse_learning: bool = True, speedup: float | None = None,
             target_sparsity: float | None = None, model: str | None = None,
             decay_steps: int | None = None, t_rate: float = 0.5, t_len: float = 1.0,
             rule: str = "all", window: int = 10, runs_dir=RUNS_DIR, results_dir=RESULTS_DIR,
             device=None, data_root=None, progress=None) -> dict:
    """One host run: ``host`` in ``depgraph|otov2``, ``method`` in ``host|sp|dpm``; writes and
    returns a record under ``results/<profile>/<host>/``. Finished runs are read back.

    DepGraph: dense (reused) → sparse learning (shared by the three methods; skipped with
    ``sparse_learning=False``) → host: progressive removal to ``speedup`` then fine-tuning;
    sp/dpm: fine-tuning with the pruner's rounds decaying instead of removing. OTOv2: one DHSPG
    run to ``target_sparsity`` from the dense checkpoint (mini) or from scratch (paper), the
    projection zeroing (host) or starting an N-step decay (sp/dpm).
    """
    from .hosts import HOSTS
    from .hosts.recipes import depgraph_recipe, otov2_recipe

    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r}; choose one of: {', '.join(HOSTS)}")
    if method not in HOST_METHODS:
        raise ValueError(f"unknown method {method!r} for a host; choose one of: "
                         f"{', '.join(HOST_METHODS)}")
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    if host == "depgraph":
        recipe = depgraph_recipe(profile, sparse_learning, model or profile.model)
        if speedup is not None:
            recipe = replace(recipe, speedup=speedup)
        target_tag = f"x{recipe.speedup}" + ("" if sparse_learning else "_nosl")
    else:
        recipe = otov2_recipe(profile, model or (profile.model if profile.name != "paper"
                                                      else None), target_sparsity)
        target_tag = f"gs{recipe.target_sparsity}"
    if decay_steps is not None:
        recipe = replace(recipe, decay_steps=decay_steps)
    profile = profile.with_(model=recipe.model, batch_size=getattr(recipe, "batch_size", None)
                            or profile.batch_size)
    device = torch.device(device) if device else default_device()
    name = f"{_tag(profile, seed)}_{host}_{target_tag}_{method}"
    if method != "host":
        name += f"_N{recipe.decay_steps}"
    if method == "dpm" and (t_rate, t_len, rule, window) != (0.5, 1.0, "all", 10):
        name += f"_r{t_rate}_l{t_len}_{rule}_w{window}"
    record_path = Path(results_dir) / profile.name / host / f"{name}.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    run = Path(runs_dir) / profile.name / host / name
    common = dict(runs_dir=runs_dir, results_dir=results_dir, device=device, data_root=data_root,
                  progress=progress)
    rectifier = SelfRectifying(t_rate, t_len, rule, window) if method == "dpm" else None
    t0 = time.time()
    if host == "depgraph":
        model, dense, history, extra = _depgraph(recipe, method, profile, seed, run, rectifier,
                                                 sparse_learning, **common)
    else:
        model, dense, history, extra = _otov2(recipe, method, profile, seed, run, rectifier,
                                              **common)
    size = input_size(profile.model)
    macs, params = macs_params(model, size)
    save_pruned(run / "model.pt", model, extra.pop("history_tp"), model_name=profile.model)
    record = make_record(
        "prune", config={"profile": profile.to_dict(), "host": host, "method": method,
                         "recipe": recipe.to_dict(), "t_rate": t_rate, "t_len": t_len,
                         "rule": rule, "window": window},
        profile=profile.name, seed=seed, dataset=profile.dataset, model=profile.model,
        history=history, macs=macs, params=params, wall_time_s=time.time() - t0, host=host,
        method=method, target=target_tag, dense_macs=dense["macs"], dense_params=dense["params"],
        dense_top1=dense["final_top1"], macs_ratio=macs / dense["macs"],
        params_ratio=params / dense["params"], device=str(device),
        checkpoint=str(run / "model.pt"), **extra)
    write_record(record, record_path)
    return record


def _decay_extra(pruner: SmoothPruning, model, size) -> dict:
    channels = pruner.groups.split(pruner.pruned_ids())
    eff_macs, eff_params = effective_macs_params(model, channels, size)
    return dict(decay=pruner.schedule(), releases=pruner.release_log, effective_macs=eff_macs,
                effective_params=eff_params, selected=len(pruner.pruned_ids()),
                released=len(pruner.released_ids()))


def _depgraph(recipe, method, profile, seed, run, rectifier, sparse_learning, *, runs_dir,
              results_dir, device, data_root, progress):
    from .hosts import ProgressiveSelector, SparseLearning, make_pruner, progressive_prune

    model, dense = train_dense(profile, seed, runs_dir=runs_dir, results_dir=results_dir,
                               device=device, data_root=data_root, progress=progress)
    train_loader, test_loader, _ = loaders(profile, seed, device, data_root)
    size = input_size(profile.model)
    extra: dict = {}
    if sparse_learning:  # one sparse-learning run per seed, shared by host, +SP and +DPM
        sl_run = Path(runs_dir) / profile.name / "depgraph" / f"{_tag(profile, seed)}_sl"
        if (sl_run / "model.pt").exists():
            model.load_state_dict(torch.load(sl_run / "model.pt", map_location="cpu"))
            extra["sl_history"] = json.loads((sl_run / "history.json").read_text())
        else:
            pruner = make_pruner(model, size, recipe.reg, recipe.normalizer, recipe.iterative_steps)
            extra["sl_history"] = fit(model, train_loader, test_loader, recipe.sparse_learning,
                                      [SparseLearning(pruner)], checkpoint=sl_run / "train.ckpt",
                                      resume=True, device=device, seed=seed, progress=progress,
                                      desc="sparse learning")
            atomic_save(model.state_dict(), sl_run / "model.pt")
            (sl_run / "history.json").write_text(json.dumps(extra["sl_history"]))
    model.to(device)
    pruner = make_pruner(model, size, recipe.reg, recipe.normalizer, recipe.iterative_steps)
    if method == "host":
        extra["host_pruning"] = progressive_prune(pruner, model, recipe.speedup, size)
        extra["top1_after_pruning"] = evaluate(model, test_loader, device)
        history = fit(model, train_loader, test_loader, recipe.finetune,
                      checkpoint=run / "finetune.ckpt", resume=True, device=device, seed=seed,
                      progress=progress, desc="depgraph")
        extra["history_tp"] = pruner.DG.pruning_history()
        return model, dense, history, extra
    total = recipe.finetune.epochs * len(train_loader)
    rounds = selection_rounds(total, recipe.decay_steps, recipe.prune_phase)
    groups = ChannelGroups(model, torch.randn(*size, device=device))
    selector = ProgressiveSelector(pruner, groups, recipe.speedup, len(rounds), size)
    sp = SmoothPruning(groups, MacsTarget(1 / recipe.speedup), recipe.decay_steps, "l2", rounds,
                       rectifier, size, selector=selector)
    history = fit(model, train_loader, test_loader, recipe.finetune, [sp],
                  checkpoint=run / "finetune.ckpt", resume=True, device=device, seed=seed,
                  progress=progress, desc=f"depgraph+{method}")
    extra.update(_decay_extra(sp, model, size), host_rounds=selector.log)
    model, extra["history_tp"] = finalize(model, sp, size)
    extra["soft_top1"] = history[-1]["test_acc"]
    extra["top1_after_finalize"] = evaluate(model, test_loader, device)
    return model, dense, history, extra


def _otov2(recipe, method, profile, seed, run, rectifier, *, runs_dir, results_dir, device,
           data_root, progress):
    from .hosts import DHSPG, SparsityLog, pruned_groups

    size = input_size(profile.model)
    train_loader, test_loader, num_classes = loaders(profile, seed, device, data_root)
    if recipe.from_dense:
        model, dense = train_dense(profile, seed, runs_dir=runs_dir, results_dir=results_dir,
                                   device=device, data_root=data_root, progress=progress)
    else:  # OTOv2 trains from scratch: the "dense" reference is the initial model
        torch.manual_seed(seed)
        model, dense = get_model(profile.model, num_classes), {"final_top1": None}
    model.to(device)
    macs, params = macs_params(model, size)
    dense = {**dense, "macs": macs, "params": params}
    spe = len(train_loader)
    total = recipe.train.epochs * spe
    groups = ChannelGroups(model, torch.randn(*size, device=device), consumers=False)
    sp = None
    if method != "host":  # releases allowed while projections still run
        sp = SmoothPruning(groups, None, recipe.decay_steps, "l2", rounds=(), rectifier=rectifier,
                           input_size=size, release_until=total - 2 * recipe.decay_steps)
    box = {}

    def make_dhspg(model, cfg):
        groups.to(next(model.parameters()).device)
        box["opt"] = DHSPG(model.parameters(), groups, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, nesterov=cfg.nesterov,
                           target_sparsity=recipe.target_sparsity, tolerance=recipe.tolerance,
                           lmbda=recipe.lmbda, lmbda_amplify=recipe.lmbda_amplify,
                           hat_lmbda_coeff=recipe.hat_lmbda_coeff, epsilon=recipe.epsilon,
                           start_step=recipe.start_epoch * spe,
                           project_until=total - recipe.decay_steps, seed=seed, decay=sp)
        return box["opt"]

    hooks = ([sp] if sp else []) + [SparsityLog(groups, sp)]
    history = fit(model, train_loader, test_loader, recipe.train, hooks,
                  checkpoint=run / "train.ckpt", resume=True, device=device, seed=seed,
                  progress=progress, desc=f"otov2+{method}" if sp else "otov2",
                  optimizer_factory=make_dhspg)
    opt = box["opt"]
    zero = pruned_groups(opt)
    extra = {"group_sparsity": len(zero) / groups.num_structures,
             "target_sparsity": recipe.target_sparsity, "num_groups": groups.num_structures}
    if sp is not None:
        extra.update(_decay_extra(sp, model, size))
        model, extra["history_tp"] = finalize(model, sp, size)
    else:
        channels = groups.split(zero)
        extra["effective_macs"], extra["effective_params"] = effective_macs_params(model, channels, size)
        extra["history_tp"] = remove_channels(model, channels, size)
    extra["soft_top1"] = history[-1]["test_acc"]
    extra["top1_after_finalize"] = evaluate(model, test_loader, device)
    return model, dense, history, extra


def host_sweep(host: str, methods=HOST_METHODS, seeds=(0, 1, 2), profile=None, **kwargs):
    """Every method × seed for one host (resumable: finished runs are read back)."""
    return [run_host(host, m, profile, seed, **kwargs) for seed in seeds for m in methods]
