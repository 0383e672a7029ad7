"""Pipelines: dense training, then one pruning run, each named by its complete configuration.

A run is asked for as a :class:`~dpm_lab.experiments.runspec.RunSpec` and resolved into the
configuration it will use (:func:`~dpm_lab.experiments.runspec.resolve`). Its record and checkpoints
are named by the hash of that configuration, so a finished run is reused only when every option
matches, and a run with any option changed trains afresh.

Fairness by construction: every method of a (profile, model, data split, seed) starts from the
*same* dense checkpoint (trained once, keyed by the dense recipe alone, then reused) and trains
for the *same* number of epochs; records keep the final-epoch accuracy with the best epoch
beside it, and the validation accuracy when a split was held out.

Interrupted runs lose nothing: each phase checkpoints every epoch and resumes (only into the
identical configuration); a finished phase is found by its record and reused.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from ..errors import DpmLabError
from ..hosts import entry
from ..pruning import save_pruned
from ..training import distributed
from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..training.claims import (PhaseBusy, exclusive, phases_wait, release,
                               remove_stale_temporaries, shared_phase, try_claim)
from ..training.data import (TensorLoader, imagefolder_loaders, imagenet_root, load_dataset,
                             split_validation)
from ..training.engine import Hook, cpu_model, default_device, fit
from ..training.metrics import conv_widths, macs_params
from ..training.models import get_model, input_size, pretrained_model
from ..training.paths import (results_dir as default_results_dir, runs_dir as default_runs_dir,
                              to_home)
from .identity import config_hash, dense_config
from .method import Context
from .profiles import Profile, get_profile
from .results import make_record, read_finished, write_record
from .runspec import RunSpec, resolve

__all__ = ["Loaders", "loaders", "train_dense", "run_paths", "run", "sweep", "submit"]


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
    device = torch.device(device) if device else default_device()
    config = dense_config(profile, seed)
    record_path, run = dense_paths(profile, seed, results_dir, runs_dir)
    data = loaders(profile, seed, device, data_root)
    torch.manual_seed(seed)
    model = get_model(profile.model, data.num_classes)
    with shared_phase(record_path):  # one process trains it; the others wait, then reuse it
        finished = read_finished(record_path, config)
        if finished is not None and (run / "model.pt").exists():
            model.load_state_dict(load_checkpoint(run / "model.pt"))
            return model.to(device), finished
        return _train_dense(model, profile, seed, config, data, run, record_path, device,
                            progress, recorded=finished)


def dense_paths(profile: Profile, seed: int, results_dir=None, runs_dir=None) -> tuple[Path, Path]:
    """``(record path, checkpoint folder)`` of the dense model of ``profile`` and ``seed``."""
    results, runs = _dirs(results_dir, runs_dir)
    name = f"{profile.model}_{profile.dataset}_s{seed}_{config_hash(dense_config(profile, seed))}"
    return (results / profile.name / "dense" / f"{name}.json",
            runs / profile.name / "dense" / name)


def _train_dense(model, profile, seed, config, data, run, record_path, device, progress,
                 recorded=None):
    t0 = time.time()
    history = fit(model, data.train, data.test, profile.dense, checkpoint=run / "train.ckpt",
                  resume=True, device=device, seed=seed, progress=progress, desc="dense",
                  val_loader=data.val, precision=profile.precision,
                  hooks=[RepeatsRecord(recorded, record_path)])
    if recorded is not None:
        check_same_training(recorded, history, record_path)
    save_checkpoint(model.state_dict(), run / "model.pt")
    if recorded is not None:  # the same training: its weights again, its record unchanged
        return model, recorded
    macs, params = macs_params(model, input_size(profile.model))
    record = make_record("dense", config=config, profile=profile.name, seed=seed,
                         dataset=profile.dataset, model=profile.model, history=history, macs=macs,
                         params=params, wall_time_s=time.time() - t0, device=str(device),
                         precision=profile.precision, checkpoint=to_home(run / "model.pt"))
    write_record(record, record_path)
    return model, record


def _trajectory(history: list[dict]) -> list[tuple]:
    return [(h["epoch"], h["train_loss"], h["test_acc"]) for h in history]


def check_same_training(recorded: dict, history: list[dict], record_path: Path,
                        so_far: bool = False) -> None:
    """Refuse a dense model trained again (its record was there, its weights were not: a fresh
    machine given the committed records) whose training differs from the recorded one. The
    pruning runs already recorded for that seed started from the recorded weights; runs started
    from other weights would no longer pair with them, under the same run id. Float results
    change with the CPU and thread count, so this happens on another kind of machine; the
    per-epoch losses tell, to the last bit. ``so_far``: compare the epochs trained until now
    with the record's first ones. Neither weights nor record are written then."""
    want, got = _trajectory(recorded["history"]), _trajectory(history)
    if got == (want[:len(got)] if so_far else want):
        return
    epoch = next((g[0] for g, w in zip(got, want) if g != w), min(len(got), len(want)) + 1)
    was = {f"{h.get('cpu', 'unknown')}, {h.get('threads', '?')} threads"
           for h in recorded["history"]}
    raise DpmLabError(
        f"{record_path.name}: its weights were missing, so the dense model was trained again, "
        f"and this training departs from the recorded one at epoch {epoch} (recorded on "
        f"{' + '.join(sorted(was))}; now {cpu_model()}, {torch.get_num_threads()} threads). "
        f"The pruning runs recorded for seed {recorded['seed']} started from the recorded "
        "weights: restore them "
        "(tools/carry_runs.py restore), train on the kind of machine that recorded them, or move "
        "that seed's records out of the results folder to start the seed anew")


class RepeatsRecord(Hook):
    """Stop a dense model trained again at the first epoch that departs from its record
    (:func:`check_same_training`), before that epoch's checkpoint, not after all of them. Always
    among the dense training's hooks (a no-op without a record), so its checkpoints resume with
    or without one; stateless, so checkpoints written before it existed resume too."""
    optional_state = True

    def __init__(self, recorded: dict | None, record_path: Path):
        self.recorded, self.record_path = recorded, record_path

    def on_epoch_end(self, state) -> None:
        if self.recorded is not None:
            check_same_training(self.recorded, state.history, self.record_path, so_far=True)


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
    """Run ``spec`` and return its record; a run with exactly this configuration that finished
    before is read back instead.

    Every method goes the same way (:mod:`dpm_lab.experiments.method`): start model (the dense
    checkpoint, reused) → the method's ``prepare`` → ``fit`` with its hooks and optimiser → its
    ``finalize`` → one record.
    """
    res = resolve(spec)
    record_path, run_dir = run_paths(res, results_dir, runs_dir)
    finished = read_finished(record_path, res.config)
    if finished is not None:
        return finished
    device = torch.device(device) if device else default_device()
    c, profile = res.config, res.profile
    seed, size = c["seed"], input_size(profile.model)
    t0 = time.time()
    data = loaders(profile, seed, device, data_root)
    ctx = Context(res, data, size, device, run_dir, _dirs(results_dir, runs_dir)[1], progress)
    method = entry(c["host"], c["method"]).methods[c["method"]](ctx)
    t_start = time.time()
    model, dense = _start_model(method.start, profile, seed, data, results_dir=results_dir,
                                runs_dir=runs_dir, device=device, data_root=data_root,
                                progress=progress)
    # this run's wall time leaves out the start model: a dense model trained here, because it
    # was missing, has its own record and its own wall time
    start_s = time.time() - t_start
    model.to(device)
    dense_macs, dense_params = macs_params(model, size)
    dense_widths = conv_widths(model)
    method.prepare(model)
    history = fit(model, data.train, data.test, res.train, method.hooks(),
                  checkpoint=run_dir / method.checkpoint, resume=True, device=device, seed=seed,
                  progress=progress, desc=method.desc, optimizer_factory=method.optimizer(),
                  val_loader=data.val, precision=ctx.precision)
    model, extra = method.finalize(model, history)
    macs, params = macs_params(model, size)
    save_pruned(run_dir / "model.pt", model, extra.pop("history_tp"), model_name=profile.model)
    record = make_record(
        "prune", config=c, profile=profile.name, seed=seed, dataset=profile.dataset,
        model=profile.model, history=history, macs=macs, params=params,
        wall_time_s=time.time() - t0 - start_s, host=c["host"], method=c["method"],
        dense_macs=dense_macs, dense_params=dense_params, dense_top1=dense.get("final_top1"),
        dense_run_id=dense.get("run_id"), macs_ratio=macs / dense_macs,
        params_ratio=params / dense_params, dense_widths=dense_widths, widths=conv_widths(model),
        device=str(device), precision=ctx.precision,
        checkpoint=to_home(run_dir / "model.pt"), **extra)
    write_record(record, record_path)
    return record


def _start_model(start: str, profile: Profile, seed: int, data: Loaders, **dense_kw):
    """The model a run starts from and its reference record: the profile's dense checkpoint
    (``"dense"``), a fresh model (``"scratch"``: OTOv2 from scratch; the reference is the initial
    model) or torchvision's pretrained weights (``"torchvision"``: the ImageNet row)."""
    if start == "dense":
        return train_dense(profile, seed, **dense_kw)
    if start == "torchvision":
        if data.num_classes != 1000:
            raise ValueError(f"torchvision's pretrained {profile.model} has 1000 classes, the data "
                             f"{data.num_classes}")
        return pretrained_model(profile.model), {}
    if start == "scratch":
        torch.manual_seed(seed)
        return get_model(profile.model, data.num_classes), {}
    raise ValueError(f"unknown start {start!r}; allowed: dense, scratch, torchvision")


def sweep(specs, *, progress=None, workers: int = 1, **kwargs) -> list[dict]:
    """Run every spec (e.g. from :func:`dpm_lab.experiments.runspec.grid`), skipping finished ones,
    with a progress bar over runs; return their records. Every spec is resolved first, so a bad one
    fails before any training.

    ``workers`` > 1 runs that many processes at once (each with its share of the CPU threads),
    which claim grid points through the file system (:mod:`dpm_lab.training.claims`); shared phases
    (a dense model, a DepGraph sparse-learning run) are trained by one and reused by the others.
    Killed at any moment, a rerun finishes the grid with one record per point: records and
    checkpoints are written atomically, a dead process's claims and temporary files are taken
    over, and interrupted runs resume from their last epoch.
    """
    specs = list(specs)
    for s in specs:
        resolve(s)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if workers > 1 and distributed.world_size() > 1:
        raise ValueError(f"--workers {workers} under torchrun: the processes are already the "
                         "DDP ranks of each run; use one or the other")
    for folder in _dirs(kwargs.get("results_dir"), kwargs.get("runs_dir")):
        if folder.exists() and distributed.is_main():
            remove_stale_temporaries(folder)
    disable = (None if progress is None else not progress) if distributed.is_main() else True
    if workers == 1:
        _work(specs, progress, kwargs, bar=disable is not True)
    else:
        threads = max(1, torch.get_num_threads() // workers)
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_work, args=(specs, False, kwargs, False, threads))
                 for _ in range(workers)]
        for p in procs:
            p.start()
        paths = [run_paths(s, kwargs.get("results_dir"), kwargs.get("runs_dir"))[0]
                 for s in specs]
        done = {p for p in paths if p.exists()}
        if done and distributed.is_main():
            _say(f"{len(done)} of {len(paths)} runs already recorded, read back")
        with tqdm(total=len(specs), desc=f"runs ({workers} workers)", disable=disable) as bar:
            alive = True
            while alive:
                alive = any(p.is_alive() for p in procs)
                for path in paths:
                    if path not in done and path.exists():
                        done.add(path)
                        _say(_finished(path, len(done), len(paths)))
                bar.update(len(done) - bar.n)
                if alive:
                    time.sleep(1)
        failed = [p.exitcode for p in procs if p.exitcode]
        if failed:
            raise DpmLabError(f"{len(failed)} of {workers} sweep workers failed (exit codes "
                              f"{failed}); run the sweep again to finish the grid")
    return [run(s, progress=False, **kwargs) for s in specs]  # every one finished: read back


def _finished(record_path: Path, done: int, total: int) -> str:
    """The line a sweep prints when a grid point's record appears, so that a sweep whose bar is
    hidden (its output sent to a log file, a batch job) still says what it has finished."""
    r = json.loads(record_path.read_text())
    val = "" if r.get("final_val") is None else f", validation {r['final_val']:.2f}"
    t = r.get("wall_time_s")
    took = "" if t is None else f" in {t:.0f} s" if t < 120 else f" in {t / 60:.0f} min"
    return (f"[{done}/{total}] {record_path.stem}: final top-1 {r['final_top1']:.2f}{val}"
            f"{took}")


def _say(line: str) -> None:
    """Print ``line`` above any progress bar, flushed at once (a log file gets it now)."""
    tqdm.write(line)
    sys.stdout.flush()


def _work(specs, progress, kwargs, bar: bool, threads: int | None = None) -> None:
    """One sweep process: run every spec whose claim it gets; leave those a live process holds
    and come back to them until each has a record."""
    if threads:
        torch.set_num_threads(threads)
    if distributed.world_size() > 1:  # DDP: every rank runs every spec together, no claims
        for s in tqdm(specs, desc="runs", disable=not bar):
            run(s, progress=progress, **kwargs)
        return
    record = {id(s): run_paths(s, kwargs.get("results_dir"), kwargs.get("runs_dir"))[0]
              for s in specs}
    # a grid point whose dense model (or other shared phase) another worker is training is left
    # for later while other points can run; a pass that ran nothing waits on that phase instead
    pending, wait = list(specs), False
    with tqdm(total=len(specs), desc="runs", disable=not bar) as t:
        while pending:
            held, ran = [], False
            for s in pending:
                if not try_claim(record[id(s)]):
                    held.append(s)
                    continue
                fresh = not record[id(s)].exists()
                try:
                    with phases_wait(wait):
                        run(s, progress=progress, **kwargs)
                except PhaseBusy:
                    held.append(s)
                    continue
                finally:
                    release(record[id(s)])
                ran, wait = True, False
                t.update()
                if bar and fresh:  # a single-process sweep; the workers' parent says it for them
                    _say(_finished(record[id(s)], t.n, len(specs)))
            pending = [s for s in held if not record[id(s)].exists()]
            t.update(len(held) - len(pending))
            if pending:
                wait = not ran
                time.sleep(1)


def submit(specs, executor, **kwargs) -> list:
    """Submit every spec that has no record yet as one job of a submitit ``executor``
    (``submitit.AutoExecutor`` for SLURM; ``submitit.LocalExecutor`` runs them as local
    processes), in one array; returns the jobs (``job.result()`` is the record). Each job runs
    under the grid point's claim (:mod:`dpm_lab.training.claims`), so a point submitted twice runs
    once and the second job reads its record back; shared phases are trained once."""
    specs = list(specs)
    for s in specs:
        resolve(s)
    todo = [s for s in specs
            if not run_paths(s, kwargs.get("results_dir"), kwargs.get("runs_dir"))[0].exists()]
    if not todo:
        return []
    with executor.batch():
        jobs = [executor.submit(_claimed_run, s, kwargs) for s in todo]
    return jobs


def _claimed_run(spec: RunSpec, kwargs: dict) -> dict:
    with exclusive(run_paths(spec, kwargs.get("results_dir"), kwargs.get("runs_dir"))[0]):
        return run(spec, progress=False, **kwargs)
