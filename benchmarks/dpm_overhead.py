"""Per-step cost of DPM's training hook relative to a plain training step.

What is measured
    (a) ``plain step``: one training step as ``dpm_lab.training.engine.fit`` runs it —
        zero_grad, forward, cross-entropy, backward, SGD step, scheduler step — on a random batch.
    (b) ``dpm after_step``: :meth:`SmoothPruning.after_step` with :class:`SelfRectifying`, i.e.
        everything DPM adds to every step: the structures' weight and gradient norms, C_rate and
        C_len with their moving averages, the release test, and the vectorised rescale of the
        weights and momentum buffers.

    The hook is set up so that its per-step work is at full size: ``MacsTarget(0.5)`` is selected
    at step 0 (the structures whose removal halves the MACs start decaying; for ResNet-56 about a
    third of all structures), the decay is long
    (``decay_steps=10_000``, so nothing finishes during the measurement) and the last selection
    round is far away (rounds ``[0, 10**6]``; releases are only tested before the last round), so
    Self-Rectifying runs on every step. No selection round happens inside the timed steps.

    Each timed iteration runs (a) then (b) on the gradients (a) left, as ``fit`` does, timing the
    two separately; ``--warmup`` untimed iterations come first. On CUDA the step runs with bf16
    autocast (fit's ``precision="bf16"``) and channels_last, and the device is synchronised
    around every timing (so launch-bound hook work is counted in full).

How to read the result
    ``overhead`` = median after_step time / median plain step time. The goal is at most 5 %.
    Timings are only meaningful on an otherwise idle machine.

Usage
    python benchmarks/dpm_overhead.py [--model resnet56] [--batch 128] [--device cpu]
                                      [--steps 20] [--json out.json]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from dpm_lab.experiments.results import benchmark_record, write_record
from dpm_lab.pruning import DECAYING, ChannelGroups, MacsTarget, SelfRectifying, SmoothPruning
from dpm_lab.training.config import TrainConfig
from dpm_lab.training.engine import TrainState, _autocast, _layout, make_optimizer, place_model
from dpm_lab.training.models import MODEL_NAMES, get_model, input_size

GOAL_PERCENT = 5.0


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn, device: torch.device) -> float:
    """Milliseconds ``fn()`` takes, with the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default="resnet56", help="default resnet56")
    p.add_argument("--batch", type=positive_int, default=128, help="batch size (default 128)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and batch (default 0)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    shape = input_size(args.model)
    model = place_model(get_model(args.model), device)
    groups = ChannelGroups(model, torch.randn(*shape, device=device))
    dpm = SmoothPruning(groups, MacsTarget(0.5), decay_steps=10_000, rounds=[0, 10**6],
                        rectifier=SelfRectifying(), input_size=shape)
    model.train()
    config = TrainConfig(epochs=1)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    # steps_per_epoch only feeds TrainState.total_steps, which the hook does not read.
    state = TrainState(model, optimizer, scheduler, config, steps_per_epoch=1)
    dpm.on_fit_start(state)  # selection round 0: MacsTarget(0.5) starts decaying
    decaying = int((dpm.status == DECAYING).sum())

    criterion = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, *shape[1:], device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def plain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, "bf16" if device.type == "cuda" else "fp32"):
            loss = criterion(model(_layout(x, device)), y)
        loss.backward()
        optimizer.step()
        scheduler.step()

    print(f"device: {device}  model: {args.model}  batch: {args.batch}  "
          f"torch: {torch.__version__}  threads: {torch.get_num_threads()}  "
          f"steps: {args.steps} (+{args.warmup} warm-up)")
    print(f"structures: {groups.num_structures}, decaying: {decaying}, "
          f"Self-Rectifying active: {state.step + 1 < dpm.rounds[-1]}")
    plain, hook = [], []
    for i in range(args.warmup + args.steps):
        step_ms = timed_ms(plain_step, device)
        hook_ms = timed_ms(lambda: dpm.after_step(state), device)
        state.step += 1
        if i >= args.warmup:
            plain.append(step_ms)
            hook.append(hook_ms)
    plain_ms, hook_ms = statistics.median(plain), statistics.median(hook)
    overhead = 100 * hook_ms / plain_ms
    print(f"plain step: {plain_ms:.2f} ms")
    print(f"dpm after_step: {hook_ms:.2f} ms")
    print(f"overhead: {overhead:.2f} % (goal: <= {GOAL_PERCENT:.0f} %)")

    result = benchmark_record("dpm_overhead", device, **{
        "model": args.model, "batch": args.batch,
        "steps": args.steps, "warmup": args.warmup, "structures": groups.num_structures,
        "decaying": decaying, "plain_step_ms": plain_ms, "dpm_after_step_ms": hook_ms,
        "overhead_percent": overhead, "goal_percent": GOAL_PERCENT,
        "plain_step_ms_all": plain, "dpm_after_step_ms_all": hook,
    })
    if args.json:
        print(f"wrote {write_record(result, args.json)}")
    return result


if __name__ == "__main__":
    main()
