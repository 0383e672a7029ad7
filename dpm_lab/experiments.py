"""Pipelines: dense training, then one pruning run, each named by its complete configuration.

A run is asked for as a :class:`~dpm_lab.runspec.RunSpec` and resolved into the configuration
it will use (:func:`~dpm_lab.runspec.resolve`). Its record and checkpoints are named by the hash
of that configuration, so a finished run is reused only when every option matches, and a run
with any option changed trains afresh.

Fairness by construction: every method of a (profile, model, data split, seed) starts from the
*same* dense checkpoint (trained once, keyed by the dense recipe alone, then reused) and trains
for the *same* number of epochs; records keep the final-epoch accuracy with the best epoch
beside it, and the validation accuracy when a split was held out.

Interrupted runs lose nothing: each phase checkpoints every epoch and resumes (only into the
identical configuration); a finished phase is found by its record and reused.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from . import __version__, distributed
from .config import Profile, get_profile
from .data import (TensorLoader, imagefolder_loaders, imagenet_root, load_dataset,
                   split_validation)
from .checkpoint import load_checkpoint, save_checkpoint
from .engine import default_device, evaluate, fit
from .metrics import example_input, macs_params
from .models import get_model, input_size, pretrained_model
from .paths import results_dir as default_results_dir, runs_dir as default_runs_dir
from .pruning import (ChannelGroups, ChannelRatio, MacsTarget, SelfRectifying, SmoothPruning,
                      accumulate_gradients, effective_macs_params, finalize, remove_channels,
                      save_pruned, scores, single_step_prune)
from .results import make_record, read_finished, write_record
from .runspec import RunSpec, config_hash, dense_config, resolve


class Loaders(NamedTuple):
    train: TensorLoader
    test: TensorLoader
    val: TensorLoader | None
    num_classes: int


def loaders(profile: Profile, seed: int, device, data_root=None) -> Loaders:
    """Train, test and (when ``profile.val_fraction > 0``) validation loaders, data on ``device``.
    The validation images are held out of the training split (``data.split_validation``).
    ``imagenet`` streams from its folders through DataLoaders (``data.imagefolder_loaders``)."""
    if profile.dataset == "imagenet":
        if profile.val_fraction:
            raise ValueError("a validation split held out of ImageNet's training folders is not "
                             f"supported (val_fraction {profile.val_fraction}); use 0")
        train, test = imagefolder_loaders(imagenet_root(data_root), profile.batch_size,
                                          workers=min(8, os.cpu_count() or 1), seed=seed,
                                          image_size=input_size(profile.model)[-1])
        return Loaders(train, test, None, len(train.dataset.classes))
    train, test = load_dataset(profile.dataset, root=data_root, seed=seed)
    train, val = split_validation(train.subset(profile.n_train), profile.val_fraction,
                                  profile.val_seed)
    test = test.subset(profile.n_test)
    return Loaders(TensorLoader(train, profile.batch_size, train=True, device=device, seed=seed),
                   TensorLoader(test, 512, train=False, device=device),
                   None if val is None else TensorLoader(val, 512, train=False, device=device),
                   train.num_classes)


def _dirs(results_dir, runs_dir) -> tuple[Path, Path]:
    return Path(results_dir or default_results_dir()), Path(runs_dir or default_runs_dir())


def train_dense(profile: Profile | str | None = None, seed: int = 0, *, results_dir=None,
                runs_dir=None, device=None, data_root=None, progress=None):
    """Train (or reuse) the dense model of ``profile`` and ``seed``; return ``(model, record)``.

    Its identity is the dense recipe, model and data split alone, so every pruning run of the
    same profile and seed starts from this one checkpoint whatever its own options.
    """
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    results, runs = _dirs(results_dir, runs_dir)
    device = torch.device(device) if device else default_device()
    config = dense_config(profile, seed)
    name = f"{profile.model}_{profile.dataset}_s{seed}_{config_hash(config)}"
    run, record_path = runs / profile.name / "dense" / name, results / profile.name / "dense" / f"{name}.json"
    data = loaders(profile, seed, device, data_root)
    torch.manual_seed(seed)
    model = get_model(profile.model, data.num_classes)
    finished = read_finished(record_path, config)
    if finished is not None and (run / "model.pt").exists():
        model.load_state_dict(load_checkpoint(run / "model.pt"))
        return model.to(device), finished
    t0 = time.time()
    history = fit(model, data.train, data.test, profile.dense, checkpoint=run / "train.ckpt",
                  resume=True, device=device, seed=seed, progress=progress, desc="dense",
                  val_loader=data.val)
    save_checkpoint(model.state_dict(), run / "model.pt")
    macs, params = macs_params(model, input_size(profile.model))
    record = make_record("dense", config=config, profile=profile.name, seed=seed,
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


def run_paths(spec: RunSpec | object, results_dir=None, runs_dir=None) -> tuple[Path, Path]:
    """``(record path, checkpoint folder)`` of a run (a spec or an already resolved run)."""
    res = resolve(spec) if isinstance(spec, RunSpec) else spec
    results, runs = _dirs(results_dir, runs_dir)
    c = res.config
    name = f"{c['model']}_{c['data']['dataset']}_{c['host']}_{c['method']}_s{c['seed']}_{res.run_id}"
    return (results / res.profile.name / c["host"] / f"{name}.json",
            runs / res.profile.name / c["host"] / name)


def run(spec: RunSpec, *, results_dir=None, runs_dir=None, device=None, data_root=None,
        progress=None) -> dict:
    """Run ``spec`` (dense reused → prune → train → finalize) and return its record; a run with
    exactly this configuration that finished before is read back instead."""
    res = resolve(spec)
    record_path, run_dir = run_paths(res, results_dir, runs_dir)
    finished = read_finished(record_path, res.config)
    if finished is not None:
        return finished
    device = torch.device(device) if device else default_device()
    common = dict(results_dir=results_dir, runs_dir=runs_dir, device=device, data_root=data_root,
                  progress=progress)
    t0 = time.time()
    pipeline = {"core": _core, "depgraph": _depgraph, "otov2": _otov2}[spec.host]
    model, dense, history, extra = pipeline(res, run_dir, **common)
    c, profile = res.config, res.profile
    size = input_size(profile.model)
    macs, params = macs_params(model, size)
    save_pruned(run_dir / "model.pt", model, extra.pop("history_tp"), model_name=profile.model)
    record = make_record(
        "prune", config=c, profile=profile.name, seed=c["seed"], dataset=profile.dataset,
        model=profile.model, history=history, macs=macs, params=params,
        wall_time_s=time.time() - t0, host=c["host"], method=c["method"],
        dense_macs=dense["macs"], dense_params=dense["params"], dense_top1=dense["final_top1"],
        dense_run_id=dense.get("run_id"), macs_ratio=macs / dense["macs"],
        params_ratio=params / dense["params"], device=str(device),
        checkpoint=str(run_dir / "model.pt"), **extra)
    write_record(record, record_path)
    return record


def sweep(specs, *, progress=None, **kwargs) -> list[dict]:
    """Run every spec (e.g. from :func:`dpm_lab.runspec.grid`), skipping finished ones, with a
    progress bar over runs. Every spec is resolved first, so a bad one fails before any
    training."""
    specs = list(specs)
    for s in specs:
        resolve(s)
    records = []
    disable = None if progress is None else not progress
    for s in tqdm(specs, desc="runs", disable=disable if distributed.is_main() else True):
        records.append(run(s, progress=progress, **kwargs))
    return records


def _decay_extra(pruner: SmoothPruning, model, size) -> dict:
    channels = pruner.groups.split(pruner.pruned_ids())
    eff_macs, eff_params = effective_macs_params(model, channels, size)
    summary = pruner.rectifier.signal_summary(pruner.status) if pruner.rectifier else {}
    return dict(decay=pruner.schedule(), releases=pruner.release_log, effective_macs=eff_macs,
                effective_params=eff_params, selected=len(pruner.pruned_ids()),
                released=len(pruner.released_ids()), sr_signals=summary)


def _rectifier(config: dict, total_steps: int) -> SelfRectifying | None:
    """The run's Self-Rectifying, recording its signals at about 1000 steps of the run so the
    record can summarise them (recording changes no decision)."""
    sr = config["options"].get("self_rectifying")
    every = max(1, total_steps // 1000)
    return SelfRectifying(**sr, record=True, record_every=every) if sr else None


def _finish_decay(pruner, model, history, data, device, size, extra) -> tuple:
    extra.update(_decay_extra(pruner, model, size))
    model, extra["history_tp"] = finalize(model, pruner, size)
    extra["soft_top1"] = history[-1]["test_acc"]
    extra["top1_after_finalize"] = evaluate(model, data.test, device)
    return model, extra


def _core(res, run_dir, *, results_dir, runs_dir, device, data_root, progress):
    c, o, profile = res.config, res.config["options"], res.profile
    seed = c["seed"]
    model, dense = train_dense(profile, seed, results_dir=results_dir, runs_dir=runs_dir,
                               device=device, data_root=data_root, progress=progress)
    data = loaders(profile, seed, device, data_root)
    size = input_size(profile.model)
    target = (MacsTarget(o["target"]["macs"]) if "macs" in o["target"]
              else ChannelRatio(o["target"]["channel_ratio"]))
    groups = ChannelGroups(model, example_input(model, size))
    dense_l2 = scores(groups, "l2")
    if "calibration_batches" in o:  # gradient criterion: gradients for the step-0 selection
        accumulate_gradients(model, data.train, o["calibration_batches"], device)
    extra: dict = {}
    hooks = []
    if c["method"] == "single-step":
        model, history_tp, ids = single_step_prune(model, target, o["criterion"], size, groups)
        extra["selected"] = len(ids)
    else:
        total = res.train.epochs * len(data.train)
        rounds = selection_rounds(total, o["decay_steps"], o["prune_phase"])
        pruner = SmoothPruning(groups, target, o["decay_steps"], o["criterion"], rounds,
                               _rectifier(c, total), size)
        hooks = [pruner]
    history = fit(model, data.train, data.test, res.train, hooks, checkpoint=run_dir / "finetune.ckpt",
                  resume=True, device=device, seed=seed, progress=progress, desc=c["method"],
                  val_loader=data.val)
    if c["method"] == "single-step":
        extra["history_tp"] = history_tp
    else:
        if pruner.rectifier:
            extra["importance_percentiles"] = _importance_percentiles(pruner, dense_l2)
        model, extra = _finish_decay(pruner, model, history, data, device, size, extra)
    return model, dense, history, extra


def _importance_percentiles(pruner: SmoothPruning, dense_l2: torch.Tensor) -> dict:
    """Where released and pruned structures stood in the dense model's L2 ranking (percentile,
    0 = least important): does Self-Rectifying release what a magnitude ranking would keep?"""
    rank = dense_l2.argsort().argsort().double() / max(len(dense_l2) - 1, 1) * 100
    out = {}
    for name, ids in (("released", pruner.released_ids()), ("pruned", pruner.pruned_ids())):
        out[name] = float(rank[ids].mean()) if len(ids) else None
    return out


def _sparse_learning(res, model, data, *, runs_dir, device, progress) -> list[dict]:
    """Torch-Pruning's sparse learning from the dense checkpoint; one run per (dense checkpoint,
    SL recipe), shared by host, +SP and +DPM. Returns its history."""
    from .hosts import SparseLearning, make_pruner

    recipe, profile, seed = res.recipe, res.profile, res.config["seed"]
    size = input_size(profile.model)
    config = {"version": __version__, "kind": "sparse-learning",
              "dense": dense_config(profile, seed), "train": asdict(recipe.sparse_learning),
              "reg": recipe.reg, "normalizer": recipe.normalizer,
              "iterative_steps": recipe.iterative_steps}
    sl_run = (_dirs(None, runs_dir)[1] / profile.name / "depgraph"
              / f"sl_{profile.model}_s{seed}_{config_hash(config)}")
    if (sl_run / "model.pt").exists():
        model.load_state_dict(load_checkpoint(sl_run / "model.pt"))
        return json.loads((sl_run / "history.json").read_text())
    pruner = make_pruner(model, size, recipe.reg, recipe.normalizer, recipe.iterative_steps)
    history = fit(model, data.train, data.test, recipe.sparse_learning, [SparseLearning(pruner)],
                  checkpoint=sl_run / "train.ckpt", resume=True, device=device, seed=seed,
                  progress=progress, desc="sparse learning", val_loader=data.val)
    (sl_run / "history.json").write_text(json.dumps(history))
    save_checkpoint(model.state_dict(), sl_run / "model.pt")
    return history


def _depgraph(res, run_dir, *, results_dir, runs_dir, device, data_root, progress):
    from .hosts import ProgressiveSelector, make_pruner, progressive_prune

    c, recipe, profile = res.config, res.recipe, res.profile
    seed = c["seed"]
    model, dense = train_dense(profile, seed, results_dir=results_dir, runs_dir=runs_dir,
                               device=device, data_root=data_root, progress=progress)
    data = loaders(profile, seed, device, data_root)
    size = input_size(profile.model)
    extra: dict = {}
    if recipe.sparse_learning is not None:
        extra["sl_history"] = _sparse_learning(res, model, data, runs_dir=runs_dir, device=device,
                                               progress=progress)
    model.to(device)
    pruner = make_pruner(model, size, recipe.reg, recipe.normalizer, recipe.iterative_steps)
    if c["method"] == "host":
        extra["host_pruning"] = progressive_prune(pruner, model, recipe.speedup, size)
        extra["top1_after_pruning"] = evaluate(model, data.test, device)
        history = fit(model, data.train, data.test, res.train, checkpoint=run_dir / "finetune.ckpt",
                      resume=True, device=device, seed=seed, progress=progress, desc="depgraph",
                      val_loader=data.val)
        extra["history_tp"] = pruner.DG.pruning_history()
        return model, dense, history, extra
    total = res.train.epochs * len(data.train)
    rounds = selection_rounds(total, recipe.decay_steps, recipe.prune_phase)
    groups = ChannelGroups(model, example_input(model, size))
    selector = ProgressiveSelector(pruner, groups, recipe.speedup, len(rounds), size)
    sp = SmoothPruning(groups, None, recipe.decay_steps, "l2", rounds, _rectifier(c, total), size,
                       selector=selector)
    history = fit(model, data.train, data.test, res.train, [sp], checkpoint=run_dir / "finetune.ckpt",
                  resume=True, device=device, seed=seed, progress=progress,
                  desc=f"depgraph+{c['method']}", val_loader=data.val)
    extra["host_rounds"] = selector.log
    model, extra = _finish_decay(sp, model, history, data, device, size, extra)
    return model, dense, history, extra


def _otov2(res, run_dir, *, results_dir, runs_dir, device, data_root, progress):
    from .hosts import DHSPG, SparsityLog, pruned_groups

    c, recipe, profile = res.config, res.recipe, res.profile
    seed = c["seed"]
    size = input_size(profile.model)
    data = loaders(profile, seed, device, data_root)
    if recipe.from_dense == "torchvision":  # the ImageNet row starts from pretrained weights
        if data.num_classes != 1000:
            raise ValueError(f"torchvision's pretrained {profile.model} has 1000 classes, the data "
                             f"{data.num_classes}")
        model, dense = pretrained_model(profile.model), {"final_top1": None}
    elif recipe.from_dense:
        model, dense = train_dense(profile, seed, results_dir=results_dir, runs_dir=runs_dir,
                                   device=device, data_root=data_root, progress=progress)
    else:  # OTOv2 trains from scratch: the "dense" reference is the initial model
        torch.manual_seed(seed)
        model, dense = get_model(profile.model, data.num_classes), {"final_top1": None}
    model.to(device)
    macs, params = macs_params(model, size)
    dense = {**dense, "macs": macs, "params": params}
    spe = len(data.train)
    total = res.train.epochs * spe
    groups = ChannelGroups(model, example_input(model, size), consumers=False)
    sp = None
    if c["method"] != "host":  # releases allowed while projections still run
        sp = SmoothPruning(groups, None, recipe.decay_steps, "l2", rounds=(),
                           rectifier=_rectifier(c, total), input_size=size,
                           release_until=total - 2 * recipe.decay_steps)
    # DHSPG as OTOv2 defines it for the host; with DPM the projections stop N steps before the
    # end (so every decay finishes) and the deviations the recipe names are applied
    dpm = {} if sp is None else dict(project_until=total - recipe.decay_steps, decay=sp,
                                     lasso_while_decaying=recipe.lasso_while_decaying,
                                     l_init_at=recipe.l_init_at, released=recipe.released)
    factory = DHSPG.factory(groups, target_sparsity=recipe.target_sparsity,
                            tolerance=recipe.tolerance, lmbda=recipe.lmbda,
                            lmbda_amplify=recipe.lmbda_amplify,
                            hat_lmbda_coeff=recipe.hat_lmbda_coeff, epsilon=recipe.epsilon,
                            start_step=recipe.start_epoch * spe, seed=seed, **dpm)
    box = {}

    def make_dhspg(model, cfg):
        box["opt"] = factory(model, cfg)
        return box["opt"]

    hooks = ([sp] if sp else []) + [SparsityLog(groups, sp)]
    history = fit(model, data.train, data.test, res.train, hooks, checkpoint=run_dir / "train.ckpt",
                  resume=True, device=device, seed=seed, progress=progress,
                  desc=f"otov2+{c['method']}" if sp else "otov2", optimizer_factory=make_dhspg,
                  val_loader=data.val)
    zero = pruned_groups(box["opt"])
    extra = {"group_sparsity": len(zero) / groups.num_structures,
             "target_sparsity": recipe.target_sparsity, "num_groups": groups.num_structures}
    if sp is not None:
        model, extra = _finish_decay(sp, model, history, data, device, size, extra)
        return model, dense, history, extra
    channels = groups.split(zero)
    extra["effective_macs"], extra["effective_params"] = effective_macs_params(model, channels, size)
    extra["history_tp"] = remove_channels(model, channels, size)
    extra["soft_top1"] = history[-1]["test_acc"]
    extra["top1_after_finalize"] = evaluate(model, data.test, device)
    return model, dense, history, extra
