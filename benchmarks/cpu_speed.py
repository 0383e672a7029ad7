"""CPU training speed: which way of running the engine's training step is fastest on this CPU.

What is measured
    Images per second of ResNet-20 training steps on the CPU, each step as
    ``dpm_lab.training.engine.fit`` runs it (batches from
    :class:`dpm_lab.training.data.TensorLoader` with its batched crop, flip and normalisation;
    zero_grad, forward, label-smoothed cross-entropy, backward, Nesterov SGD step, learning-rate
    schedule step, the running loss and accuracy sums; the mini profile's dense recipe), built from
    the engine's own pieces (``place_model``, ``_layout``, ``make_optimizer``, ``LRFactor``), under
    each variant named on ``--variants``. A variant is today's engine path (``engine``: float32,
    channels_last, eager, torch's default intra-op thread count) with changes joined by ``+``:

    - ``nchw``: contiguous (NCHW) model and batches instead of channels_last (the engine's CPU
      path before channels_last was adopted);
    - ``bf16``: the forward pass and loss under ``torch.autocast("cpu", dtype=torch.bfloat16)``;
    - ``compile``: the model wrapped in ``torch.compile`` (default mode, static shapes). The
      first step, which compiles, is timed on its own (``compile_s``, one step's work included)
      and never enters img/s. Inductor's on-disk caches make a repeated benchmark compile faster;
      ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` gives the cold time. Where compiling fails (no C++
      compiler, no Python headers) the row says why instead of ending the benchmark;
    - ``tN``: ``torch.set_num_threads(N)`` while this variant runs.

    ``dataloader+wN`` is the baseline: a plain float32 loop (contiguous model, no autocast, no
    schedule, no sums: zero_grad, forward, loss, backward, step) fed the standard way, a
    ``torchvision.datasets.CIFAR10``-like Dataset over the same uint8 images (PIL image ->
    RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) batched by
    ``torch.utils.data.DataLoader`` with N worker processes (persistent, so no start-up is timed).

    For each batch size (``--batch``, default 128 and 256) every variant gets its own model (same
    seed, same initial weights) and batch stream (same seed, same batches). One untimed first step,
    then ``--repeats`` rounds: in each, every variant trains ``--warmup`` untimed and ``--steps``
    timed steps, the order of the variants rotating from round to round. img/s is the median over
    the rounds.

How to read the result
    ``x engine`` = img/s / the ``engine`` row's img/s at the same batch (today's path: above 1 is
    faster than today). ``x dataloader`` = img/s / the fastest ``dataloader+wN`` row's at the same
    batch. ``first step`` is the first step's wall time; for ``compile`` rows it is the compile
    time (``compile_s``). The CPU flags that decide whether bf16 can be fast are printed first:
    ``avx512_bf16`` (bf16 dot products), ``amx_bf16``/``amx_tile`` (matrix units); without them
    bf16 is emulated and slower than float32. Speed says nothing about accuracy: a path is adopted
    only after its accuracy is checked against float32. Timings are only meaningful on an
    otherwise idle machine.

Usage
    python benchmarks/cpu_speed.py [--batch 128 256] [--steps 20] [--variants engine,bf16,...]
                                   [--reference | --json PATH]
    The record goes to $DPM_LAB_HOME/results/bench/cpu_speed.json, with --reference to the
    repository's results/reference/bench/cpu_speed.json. ``--quick`` (tests, a check that it runs;
    numbers meaningless): 2 timed steps, 1 warm-up, 1 round, batch 16.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from dpm_lab.experiments.profiles import get_profile
from dpm_lab.experiments.results import benchmark_record, cpu_model, write_record
from dpm_lab.training.data import (DATASET_NAMES, TensorDataset, TensorLoader, dataset_label,
                                   load_dataset)
from dpm_lab.training.engine import LRFactor, _layout, make_optimizer, place_model
from dpm_lab.training.models import get_model
from dpm_lab.training.paths import reference_dir, results_dir
from throughput import dataloader_path, endless, positive_int

MODEL = "resnet20"
RECORD = "cpu_speed.json"
ENGINE = "engine"
DEFAULT_VARIANTS = ("engine", "engine+t1", "engine+t2", "nchw", "bf16", "bf16+t1", "bf16+t2",
                    "nchw+bf16", "compile", "compile+bf16", "dataloader+w0", "dataloader+w2")
TOKENS = ("engine", "nchw", "bf16", "compile", "tN", "dataloader", "wN")
# /proc/cpuinfo flags that decide how fast CPU bf16 (and float32) can be
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8")
COMPILERS = ("cc", "gcc", "g++", "c++", "clang++")


@dataclass(frozen=True)
class Variant:
    """One way of running the training step (see the module docstring for the tokens)."""

    name: str
    channels_last: bool = True
    bf16: bool = False
    compiled: bool = False
    threads: int | None = None   # None: torch's default intra-op thread count
    workers: int | None = None   # None: the engine's TensorLoader; else a DataLoader's workers

    @property
    def baseline(self) -> bool:
        return self.workers is not None


def parse_variant(name: str) -> Variant:
    """The variant a name such as ``compile+bf16+t1`` or ``dataloader+w2`` stands for. Raises
    ``ValueError`` naming the bad token or combination and what is allowed."""
    changes, seen = {}, set()
    for token in name.split("+"):
        key = token[0] if token[:1] in ("t", "w") and token[1:].isdigit() else token
        if key not in ("engine", "nchw", "bf16", "compile", "t", "dataloader", "w"):
            raise ValueError(f"unknown variant token {token!r} in {name!r}; tokens, joined by "
                             f"'+': {', '.join(TOKENS)} (N an integer)")
        if key in seen:
            raise ValueError(f"variant {name!r} repeats {token!r}")
        seen.add(key)
        if key == "t":
            if int(token[1:]) < 1:
                raise ValueError(f"thread count {token!r} in {name!r} must be >= 1")
            changes["threads"] = int(token[1:])
        elif key == "w":
            changes["workers"] = int(token[1:])
        elif key == "nchw":
            changes["channels_last"] = False
        elif key in ("bf16", "compile"):
            changes["bf16" if key == "bf16" else "compiled"] = True
    if "dataloader" in seen:
        others = seen - {"dataloader", "w"}
        if others or "w" not in seen:
            raise ValueError(f"variant {name!r}: the DataLoader baseline is the plain float32 "
                             f"loop, written dataloader+wN (N worker processes), nothing else")
        changes["channels_last"] = False
    elif "w" in seen:
        raise ValueError(f"variant {name!r}: wN (DataLoader workers) needs the dataloader token")
    return Variant(name, **changes)


def cpu_flags() -> dict[str, bool]:
    """Which of ``CPU_FLAGS`` the CPU reports (``/proc/cpuinfo``; all False where unreadable)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    flags = next((set(line.split(":", 1)[1].split()) for line in lines
                  if line.startswith("flags")), set())
    return {f: f in flags for f in CPU_FLAGS}


def compilers() -> dict[str, str | None]:
    """The C/C++ compilers on PATH (inductor, torch.compile's CPU backend, builds C++ with one)
    and ``$CXX``, which inductor tries first."""
    found = {c: shutil.which(c) for c in COMPILERS}
    found["CXX"] = os.environ.get("CXX")
    return found


@dataclass
class Run:
    """A variant's live training state at one batch size."""

    variant: Variant
    batch: int
    step: Callable[[], None]
    first_step_s: float | None = None
    runs_img_s: list = field(default_factory=list)
    error: str | None = None


def build_run(variant: Variant, data: TensorDataset, batch: int, seed: int) -> Run:
    """The variant's model, optimiser and batch stream, and its step function."""
    device = torch.device("cpu")
    torch.manual_seed(seed)
    model = get_model(MODEL, data.num_classes)
    model = place_model(model, device) if variant.channels_last else model.to(device)
    model.train()
    recipe = get_profile("mini").dense
    optimizer = make_optimizer(model, recipe)
    if variant.baseline:
        batches = endless(dataloader_path(data, batch, variant.workers, device))
        criterion = nn.CrossEntropyLoss()

        def plain_step():
            x, y = next(batches)
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()

        return Run(variant, batch, plain_step)

    loader = TensorLoader(data, batch, train=True, device=device, seed=seed)
    batches = endless(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(recipe, len(loader)))
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    # dynamic=False: fit's training batches all have one shape (drop_last); without it dynamo
    # would make the batch dimension dynamic on meeting the second batch size of this process
    net = torch.compile(model, dynamic=False) if variant.compiled else model
    layout = (lambda x: _layout(x, device)) if variant.channels_last else torch.Tensor.contiguous
    autocast = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if variant.bf16
                else nullcontext)
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.int64)

    def engine_step():  # fit's inner loop on the CPU, without hooks
        x, y = next(batches)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            out = net(layout(x))
            loss = criterion(out, y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum.add_(loss.detach() * len(y))
        correct.add_((out.detach().argmax(1) == y).sum())

    return Run(variant, batch, engine_step)


def attempt(run: Run, fn):
    """``fn()`` with the variant's thread count set. A compiled variant that fails gets its
    ``error`` set (the row says why) instead of ending the benchmark; other failures are bugs and
    raise."""
    default = torch.get_num_threads()
    torch.set_num_threads(run.variant.threads or default)
    try:
        return fn()
    except Exception as err:
        if not run.variant.compiled:
            raise
        first = (str(err).strip().splitlines() or [""])[0]
        run.error = f"torch.compile failed: {type(err).__name__}: {first[:300]}"
        print(f"  {run.variant.name} (batch {run.batch}): {run.error}")
    finally:
        torch.set_num_threads(default)


def first_step(run: Run) -> None:
    t0 = time.perf_counter()
    run.step()
    run.first_step_s = time.perf_counter() - t0


def timed(run: Run, warmup: int, steps: int) -> None:
    for _ in range(warmup):
        run.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        run.step()
    run.runs_img_s.append(steps * run.batch / (time.perf_counter() - t0))


def measure(variants: list[Variant], data: TensorDataset, batch: int, steps: int, warmup: int,
            repeats: int, seed: int) -> list[Run]:
    """Every variant's runs at ``batch``: a first step each, then ``repeats`` rounds of
    ``warmup`` + ``steps`` steps, the order rotating by one variant per round."""
    runs = [build_run(v, data, batch, seed) for v in variants]
    for run in runs:
        attempt(run, lambda: first_step(run))
    for r in range(repeats):
        for run in runs[r % len(runs):] + runs[:r % len(runs)]:
            if run.error is None:
                attempt(run, lambda: timed(run, warmup, steps))
    return runs


def rows(runs: list[Run]) -> list[dict]:
    """The record's rows of one batch size, with the ratios to the engine and to the fastest
    DataLoader baseline (``None`` where that row was not run or failed)."""
    median = {r.variant.name: statistics.median(r.runs_img_s) if r.error is None else None
              for r in runs}
    engine = median.get(ENGINE)
    baselines = {r.variant.name: median[r.variant.name] for r in runs
                 if r.variant.baseline and median[r.variant.name] is not None}
    reference = max(baselines, key=baselines.get) if baselines else None
    out = []
    for run in runs:
        v, ips = run.variant, median[run.variant.name]
        out.append({
            "variant": v.name, "batch": run.batch,
            "loader": "dataloader" if v.baseline else "tensorloader", "workers": v.workers,
            "memory_format": "channels_last" if v.channels_last else "contiguous",
            "precision": "bf16 autocast" if v.bf16 else "fp32", "compiled": v.compiled,
            "threads": v.threads or torch.get_num_threads(),
            "img_s": ips, "runs_img_s": run.runs_img_s, "first_step_s": run.first_step_s,
            "compile_s": run.first_step_s if v.compiled and run.error is None else None,
            "ratio_engine": ips / engine if ips is not None and engine else None,
            "ratio_dataloader": (ips / baselines[reference]
                                 if ips is not None and reference else None),
            "dataloader_reference": reference, "error": run.error,
        })
    return out


def table(result_rows: list[dict]) -> str:
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [f"{'batch':>5}  {'variant':<16} {'threads':>7} {'img/s':>8} {'x engine':>9} "
             f"{'x dataloader':>12} {'first step s':>12}"]
    for r in result_rows:
        lines.append(f"{r['batch']:>5}  {r['variant']:<16} {r['threads']:>7} "
                     f"{num(r['img_s'], '.1f'):>8} {num(r['ratio_engine'], '.2f'):>9} "
                     f"{num(r['ratio_dataloader'], '.2f'):>12} "
                     f"{num(r['first_step_s'], '.2f'):>12}"
                     + (f"  {r['error']}" if r["error"] else ""))
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=positive_int, nargs="+", default=None,
                   help="batch sizes (default 128 256; --quick: 16)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="timed steps per variant and round (default 20; --quick: 2)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps before each timing (default 5; --quick: 1)")
    p.add_argument("--repeats", type=positive_int, default=None,
                   help="rounds; img/s is their median (default 3; --quick: 1)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated (default {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--quick", action="store_true",
                   help="a check that the script runs (numbers meaningless)")
    p.add_argument("--dataset", choices=DATASET_NAMES, default="cifar10-slice",
                   help="default cifar10-slice (the offline CIFAR-10 slice)")
    p.add_argument("--data-root", default=None, help="folder holding the dataset")
    p.add_argument("--seed", type=int, default=0, help="seed of the models and batches (default 0)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--reference", action="store_true",
                     help=f"write the record to the repository's results/reference/bench/{RECORD}")
    out.add_argument("--json", type=Path, default=None, help="write the record to this file")
    args = p.parse_args(argv)
    quick = args.quick
    batches = args.batch or ([16] if quick else [128, 256])
    steps = args.steps or (2 if quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 5)
    repeats = args.repeats or (1 if quick else 3)
    if warmup < 0:
        p.error(f"--warmup must be >= 0, got {warmup}")
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    try:
        variants = [parse_variant(n) for n in names]
    except ValueError as err:
        p.error(str(err))
    if not variants or len(set(names)) != len(names):
        p.error(f"--variants must name distinct variants, got {args.variants!r}")
    if args.json:
        path = args.json
    elif args.reference:
        ref = reference_dir("results")
        if ref is None:
            p.error("--reference: no results/reference folder found above the working directory "
                    "(run from the repository)")
        path = ref / "bench" / RECORD
    else:
        path = results_dir() / "bench" / RECORD

    train, _ = load_dataset(args.dataset, args.data_root)
    if len(train) < max(batches):
        p.error(f"--batch {max(batches)} is larger than the dataset ({len(train)} images)")
    flags, found = cpu_flags(), compilers()
    bf16_kernels = torch.backends.mkldnn.is_available() and \
        torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"cpu: {cpu_model()}  torch: {torch.__version__}  "
          f"kernels: {torch.backends.cpu.get_cpu_capability()}  default threads: "
          f"{torch.get_num_threads()}  OMP_NUM_THREADS: {os.environ.get('OMP_NUM_THREADS')}")
    print("cpu flags: " + "  ".join(f"{f} {'yes' if on else 'no'}" for f, on in flags.items()))
    print(f"oneDNN bf16 kernels: {'yes' if bf16_kernels else 'no'}  C/C++ compilers: "
          + (", ".join(f"{c} {w}" for c, w in found.items() if w) or "none"))
    print(f"model: {MODEL}  dataset: {dataset_label(args.dataset)} ({len(train)} images)  batches: {batches}  "
          f"steps: {steps} (+{warmup} warm-up) x {repeats} rounds")

    result_rows = []
    for batch in batches:
        result_rows += rows(measure(variants, train, batch, steps, warmup, repeats, args.seed))
    print(table(result_rows))
    result = benchmark_record("cpu_speed", "cpu", **{
        "model": MODEL, "dataset": args.dataset, "dataset_label": dataset_label(args.dataset),
        "images": len(train), "batches": batches,
        "steps": steps, "warmup": warmup, "repeats": repeats, "quick": quick,
        "variants": names, "default_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_flags": flags,
        "onednn_bf16": bf16_kernels, "compilers": found, "rows": result_rows,
    })
    print(f"wrote {write_record(result, path)}")
    return result


if __name__ == "__main__":
    main()
